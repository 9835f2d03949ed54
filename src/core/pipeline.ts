/**
 * The release pipeline, read top to bottom. Each trigger reads its input and hands it over:
 * {@link handleHttp} and {@link handleMessage} are the steps every request goes through,
 *
 *   decode → caller checks (HTTP) → idempotency key → {@link handleRequest}:
 *     parse (once) → claim the key → record each device's release → release each device → answer
 *
 * and a parked release handed back through the request queue goes to {@link resumeRelease}. The triggers then
 * write the answer: the HTTP response, the response-queue messages, the request-queue hand-backs.
 *
 * With durable state every device is its own release (`records.ts`): recorded before anything is sent, released
 * on its own, parked (`Queued`, one `queued` message) when the Defender API budget cannot take it soon or (on
 * Service Bus) after a transient failure, and run again later by whichever instance gets it back; so a Service
 * Bus message always completes without spending delivery counts, and each device gets exactly one answer
 * (`accepted` phase) whatever is redelivered. Without durable state (or while it is unreachable) nothing is
 * parked: a request that cannot get its budget in time ends `Throttled`, and a Service Bus message with a
 * transient failure is handed back for redelivery, except on its last delivery or when some of its releases
 * are recorded (their messages would be lost): then the failure is answered, and the key left retryable.
 */
import { reserve, type MdeApi, type Slot } from './budget';
import { describeRequester, type CallerPrincipal } from './callerPrincipal';
import { checkCaller, routeBoundToSignature, type CallerChecks } from './callerChecks';
import { decodeHttpBody, decodeMessage, MAX_BODY_BYTES, tooLarge, type Decoded } from './decode';
import { toUnisolateError, UnisolateError } from './errors';
import {
  chooseIdempotencyKey,
  CLAIM_DEFAULTS,
  claimKey,
  keyHashOf,
  requestFingerprint,
  type ClaimOptions,
  type HeldClaim,
} from './idempotency';
import {
  buildOutcome,
  ERROR_TABLE,
  type Outcome,
  type OutcomeBase,
  type OutcomeResult,
  type Trigger,
} from './outcome';
import type { ReleaseStore, Versioned } from './ports';
import {
  answered,
  claimable,
  RECORD_MARGIN_MS,
  resumedRelease,
  resumeMessage,
  type ReleaseRecord,
  type ReleaseRef,
  type ResumeMessage,
} from './records';
import { HAND_OFF_MS } from './resume';
import { apisFor, callContexts, releaseTarget, type DeviceResult, type ReleaseDeps } from './release';
import { backoffDelay } from './retry';
import { parseReleaseRequest, type BulkEntry, type DeviceTarget, type ReleaseRequest } from './request';
import { randomUUID } from 'node:crypto';

/** Durable state, when configured. */
export interface StateDeps extends Pick<ClaimOptions, 'duplicateWaitMs' | 'duplicatePollMs'> {
  store: ReleaseStore;
  /** IDEMPOTENCY_WINDOW_HOURS in ms. */
  idempotencyWindowMs: number;
  /** TRACK_MAX_HOURS in ms. */
  trackMaxMs: number;
  /** QUEUE_MAX_HOURS in ms: a release parked longer ends `Throttled`. */
  queueMaxMs: number;
  /** Transient failures of one release before it ends `Failed` (MAX_DELIVERY_COUNT). */
  maxFailures: number;
  /** Lease of an idempotency claim, renewed as each device starts (default: twice the longest device run). */
  claimLeaseMs?: number;
}

/** What the pipeline needs: the release dependencies, and durable state when configured. */
export interface PipelineDeps extends ReleaseDeps {
  state?: StateDeps;
  /** HTTP caller checks beyond the function key; absent: none. */
  callers?: CallerChecks;
  /** The request queue's max delivery count (`MAX_DELIVERY_COUNT`): its last delivery reports, never throws. */
  maxDeliveryCount?: number;
}

/** An HTTP release request, as the trigger read it. */
export interface HttpInput {
  /** The raw body, or too large to read (`Content-Length` or the bytes over {@link MAX_BODY_BYTES}). */
  body: Buffer | 'tooLarge';
  contentType: string | null;
  /** `X-MS-CLIENT-PRINCIPAL`, `X-Unisolate-Timestamp`, `X-Unisolate-Signature`, `Idempotency-Key`. */
  principal: string | null;
  timestamp: string | null;
  signature: string | null;
  idempotencyKey: string | null;
  /** `{machineId}` of `POST /api/machines/{machineId}/unisolate`. */
  routeMachineId?: string;
}

/** A request-queue message, as the trigger read it. */
export interface MessageInput {
  /** The body, in whatever form the Functions library passed it. */
  message: unknown;
  /** The ids as the sender set them. */
  messageId: string | undefined;
  correlationId: string | undefined;
  deliveryCount: number;
}

/**
 * An HTTP request: decode the body, check the caller (before anything in the body is looked at), choose the
 * idempotency key (header or body field), then {@link handleRequest}. A bug still ends in one outcome
 * (`Failed`/`InternalError`, 502), never a bare 500 from the host.
 */
export async function handleHttp(input: HttpInput, deps: PipelineDeps): Promise<RequestAnswer> {
  const trigger: Trigger = 'http';
  let caller: CallerPrincipal | null = null;
  try {
    const raw: Decoded =
      input.body === 'tooLarge' ? { error: tooLarge(MAX_BODY_BYTES, 'body') } : { body: input.body };
    // The signing key's Key Vault read may take at most the HTTP retry budget.
    const checked =
      input.body === 'tooLarge'
        ? { principal: null }
        : await checkCaller(
            {
              principal: input.principal,
              timestamp: input.timestamp,
              signature: input.signature,
              rawBody: input.body,
            },
            deps.callers,
            deps.log,
            deps.retryBudgetMs.http,
          );
    caller = checked.principal;
    const decoded: Decoded =
      'error' in raw
        ? raw
        : checked.error
          ? { error: checked.error }
          : routeBoundToSignature(
              decodeHttpBody(input.contentType, input.body as Buffer),
              input.routeMachineId,
              deps.callers,
            );
    return await handleRequest(
      requestInput(decoded, trigger, caller, chooseKey(decoded, input.idempotencyKey, undefined), {
        routeMachineId: input.routeMachineId,
        canRedeliver: false,
      }),
      deps,
    );
  } catch (error) {
    return lastResort(error, { trigger, caller, routeMachineId: input.routeMachineId }, deps);
  }
}

/**
 * A request-queue message: a parked release handed back ({@link resumeRelease}), or a release request: decode
 * it, take its idempotency key (body field, else the message id: a redelivered or re-sent copy is a repeat),
 * then {@link handleRequest}. Throws only to hand the message back for redelivery (see
 * {@link RedeliveryRequested}); on the last delivery a bug still ends in one outcome.
 */
export async function handleMessage(
  input: MessageInput,
  deps: PipelineDeps,
): Promise<{ messages: Outcome[]; resume: ResumeMessage[] }> {
  const decoded = decodeMessage(input.message);
  const resumed = 'body' in decoded ? resumedRelease(decoded.body) : undefined;
  // A store failure throws: Service Bus redelivers, and the timer hands the release back again anyway.
  if (resumed) return resumeRelease(resumed, deps);
  const canRedeliver = input.deliveryCount < (deps.maxDeliveryCount ?? 10);
  const fallbackCorrelationId = input.correlationId ?? input.messageId;
  try {
    const answer = await handleRequest(
      requestInput(decoded, 'serviceBus', null, chooseKey(decoded, null, input.messageId), {
        ...(fallbackCorrelationId !== undefined ? { fallbackCorrelationId } : {}),
        canRedeliver,
        deliveryCount: input.deliveryCount,
      }),
      deps,
    );
    return { messages: answer.messages, resume: answer.resume };
  } catch (error) {
    if (error instanceof RedeliveryRequested || canRedeliver) throw error;
    // The last delivery: a bug must still end in one outcome, not a silent dead letter.
    const answer = lastResort(error, { trigger: 'serviceBus', caller: null, fallbackCorrelationId }, deps);
    return { messages: answer.messages, resume: [] };
  }
}

/** The idempotency key of a decoded request (header, body field, fallback), or its error. */
function chooseKey(
  decoded: Decoded,
  header: string | null,
  fallback: string | undefined,
): ReturnType<typeof chooseIdempotencyKey> | null {
  return 'body' in decoded ? chooseIdempotencyKey(decoded.body, header, fallback) : null;
}

function requestInput(
  decoded: Decoded,
  trigger: Trigger,
  caller: CallerPrincipal | null,
  chosen: ReturnType<typeof chooseIdempotencyKey> | null,
  rest: Pick<RequestInput, 'routeMachineId' | 'fallbackCorrelationId' | 'canRedeliver' | 'deliveryCount'>,
): RequestInput {
  const input: RequestInput = {
    body: 'body' in decoded ? decoded.body : undefined,
    trigger,
    caller,
    canRedeliver: rest.canRedeliver,
  };
  // An unusable idempotency key makes the request invalid, like a body that cannot be decoded.
  const error = 'error' in decoded ? decoded.error : chosen && 'error' in chosen ? chosen.error : undefined;
  if (error) input.bodyError = error;
  if (chosen && 'key' in chosen && chosen.key !== undefined) input.key = chosen.key;
  if (rest.routeMachineId !== undefined) input.routeMachineId = rest.routeMachineId;
  if (rest.fallbackCorrelationId !== undefined) input.fallbackCorrelationId = rest.fallbackCorrelationId;
  if (rest.deliveryCount !== undefined) input.deliveryCount = rest.deliveryCount;
  return input;
}

/** The one outcome of a request that hit a bug: logged by name only (its text may quote the request). */
function lastResort(
  error: unknown,
  context: Pick<RequestInput, 'trigger' | 'caller' | 'routeMachineId' | 'fallbackCorrelationId'>,
  deps: PipelineDeps,
): RequestAnswer {
  deps.log.error(`Unexpected error in the ${context.trigger === 'http' ? 'HTTP' : 'Service Bus'} trigger`, {
    error: error instanceof Error ? error.name : 'unknown',
  });
  const failure = toUnisolateError(error);
  // Refused like a body that cannot be read: the outcome carries what the trigger knows of the request.
  const request: RequestInput = { ...context, body: undefined, bodyError: failure, canRedeliver: false };
  const readable = parse(request);
  const device = readable.usable ? {} : { machineId: readable.machineId, deviceName: readable.deviceName };
  const answer = refuse(request, deps, readable.shared, deps.clock.now(), failure, device);
  return { ...answer, retryAfterSeconds: 30 };
}

/** A request, as a trigger hands it over after decoding it and checking the caller. */
export interface RequestInput {
  trigger: Trigger;
  body: unknown;
  /** Set when the body was rejected while decoding (too large, not JSON, too deep...): the outcome's error. */
  bodyError?: UnisolateError;
  /** The `{machineId}` route value of `POST /api/machines/{machineId}/unisolate`. */
  routeMachineId?: string;
  /** Correlation id when the body has none (Service Bus correlation id or message id). */
  fallbackCorrelationId?: string;
  /** The caller authenticated by App Service Authentication, if any: recorded in every `requestedBy`. */
  caller: CallerPrincipal | null;
  /** The idempotency key the trigger chose (header / body field / message id), if any. */
  key?: string;
  /** Service Bus delivery count (1 on the first delivery). */
  deliveryCount?: number;
  /** Whether a transient failure may be handed back for redelivery (Service Bus, not the last delivery). */
  canRedeliver: boolean;
}

/** The pipeline's answer to a request. */
export interface RequestAnswer {
  kind: 'single' | 'bulk';
  /** The answer: one outcome, or one per bulk entry in index order (the HTTP body). */
  outcomes: Outcome[];
  /** What goes to the response queue (one per release that got an answer or was parked just now). */
  messages: Outcome[];
  /** The answers are stored ones, repeated for a duplicate (MDE was not called). */
  replayed: boolean;
  /** For transient failures and duplicates in flight: seconds the caller should wait (HTTP `Retry-After`). */
  retryAfterSeconds?: number;
  /** For the request queue: parked releases due again soon, handed back at once (see {@link park}). */
  resume: ResumeMessage[];
}

/**
 * Thrown (when none of the request's releases is recorded: without durable state, or it failed) when a
 * Service Bus delivery should be handed back for redelivery instead of answered. The trigger lets it
 * propagate; no outcome is sent for that delivery.
 */
export class RedeliveryRequested extends Error {
  override readonly name = 'RedeliveryRequested';
  constructor(
    readonly outcome: Outcome,
    readonly error: UnisolateError,
  ) {
    super(`Transient failure, handing the message back for redelivery: ${error.message}`, { cause: error });
  }
}

/** Devices of one request released at the same time: enough to hide call latency, gentle with MDE. */
export const DEVICE_CONCURRENCY = 4;

/**
 * Longest a request may wait for its Defender API budget before its release is parked: HTTP callers are
 * waiting (a webhook times out), a Service Bus message may wait longer. Without durable state the whole
 * retry budget may be spent waiting, as nothing can be parked.
 */
export const BUDGET_WAIT_MS: Readonly<Record<Trigger, number>> = { http: 10_000, serviceBus: 60_000 };

/** A release parked until this soon is handed straight back to the request queue (see {@link park}). */
export const HAND_BACK_SOON_MS = 30_000;

/**
 * Longest a bulk request may run: under the 230 s front-end timeout of HTTP triggers
 * (https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout); Service Bus: under the 5-minute
 * message-lock auto-renewal. Devices that do not start in time are parked (or, without durable state, answer
 * `Throttled`).
 */
export const BULK_CAP_MS: Readonly<Record<Trigger, number>> = { http: 200_000, serviceBus: 240_000 };

/** Longest a release holds its record while it runs: the budget wait, the retry budget and a request timeout. */
function runLeaseMs(deps: ReleaseDeps, trigger: Trigger): number {
  return BUDGET_WAIT_MS[trigger] + deps.retryBudgetMs[trigger] + deps.requestTimeoutMs + 30_000;
}

const iso = (ms: number): string => new Date(ms).toISOString();

function transient(outcome: Outcome | null | undefined): boolean {
  return Boolean(outcome?.error && ERROR_TABLE[outcome.error.code].transient);
}

/** A wait as whole seconds, for `Retry-After` and messages: rounded up, at least 1. */
function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

function retryAfterOf(error: UnisolateError): number {
  return seconds(error.retryAfterMs ?? 30_000);
}

// ---------------------------------------------------------------------------------------------------------
// handleRequest
// ---------------------------------------------------------------------------------------------------------

/** One device of a request, as parsed: its index (null for a single-device request) and target or problems. */
interface Entry {
  index: number | null;
  target: DeviceTarget | null;
  problems: string[];
  /** What could be read of an invalid entry (for its outcome). */
  machineId?: string | null;
  deviceName?: string;
}

/** The request, parsed once: the shared fields, and its devices (or why it cannot be used at all). */
type Parsed =
  | { usable: true; bulk: boolean; shared: Shared; entries: Entry[] }
  | { usable: false; shared: Shared; error: UnisolateError; machineId: string | null; deviceName?: string };

interface Shared {
  correlationId: string;
  requestedBy: string | null;
  comment: string;
  force: boolean;
}

/**
 * Parses the body once into the request's shared fields and its device entries. A body that could not be
 * decoded (`bodyError`) is read as empty, which never parses: its outcome has what the trigger knows (the
 * fallback correlation id, the route's machine id) and that error.
 */
function parse(input: RequestInput): Parsed {
  const parsed = parseReleaseRequest(input.bodyError ? {} : input.body, input);
  const declared = parsed.ok ? parsed.request.requestedBy : parsed.requestedBy;
  const shared: Shared = {
    correlationId: parsed.ok ? parsed.request.correlationId : parsed.correlationId,
    requestedBy: describeRequester(input.caller, declared),
    comment: parsed.ok ? parsed.request.comment : '',
    force: parsed.ok ? parsed.request.force === true : false,
  };
  const devices = parsed.ok ? parsed.request.devices : parsed.devices;
  if (devices) {
    // A bulk request: every entry gets its own outcome; problems of the whole request are every entry's.
    const shared_problems = parsed.ok ? [] : parsed.problems;
    return {
      usable: true,
      bulk: true,
      shared,
      entries: devices.map((d, i) => entryOf(d, i, shared_problems)),
    };
  }
  if (!parsed.ok) {
    return {
      usable: false,
      shared,
      error:
        input.bodyError ??
        new UnisolateError('InvalidRequest', `Invalid request: ${parsed.problems.join('; ')}.`),
      machineId: parsed.machineId,
      ...(parsed.deviceName !== undefined ? { deviceName: parsed.deviceName } : {}),
    };
  }
  return {
    usable: true,
    bulk: false,
    shared,
    entries: [{ index: null, target: singleTarget(parsed.request), problems: [] }],
  };
}

function singleTarget(request: ReleaseRequest): DeviceTarget {
  return request.machineId !== null ? { machineId: request.machineId } : { deviceName: request.deviceName! };
}

function entryOf(entry: BulkEntry, index: number, shared: string[]): Entry {
  if (entry.ok && shared.length === 0) return { index, target: entry.target, problems: [] };
  const own = entry.ok ? [] : entry.problems;
  return {
    index,
    target: null,
    problems: [...shared, ...own],
    machineId: entry.ok ? (entry.target.machineId ?? null) : (entry.machineId ?? null),
    deviceName: entry.ok ? entry.target.deviceName : entry.deviceName,
  };
}

/** The outcome fields every outcome of this request shares, for one entry. */
function baseOf(
  shared: Shared,
  trigger: Trigger,
  receivedAt: number,
  entry?: Entry | ReleaseRecord,
): OutcomeBase {
  const base: OutcomeBase = {
    correlationId: shared.correlationId,
    machineId: null,
    trigger,
    requestedBy: shared.requestedBy,
    receivedAt: iso(receivedAt),
  };
  if (shared.force) base.forced = true;
  if (!entry) return base;
  if ('ref' in entry) {
    base.machineId = entry.machineId;
    if (entry.ask.target.deviceName !== undefined) base.deviceName = entry.ask.target.deviceName;
    if (entry.ref.index !== null) base.index = entry.ref.index;
  } else {
    base.machineId = entry.target?.machineId ?? entry.machineId ?? null;
    const name = entry.target?.deviceName ?? entry.deviceName;
    if (name !== undefined) base.deviceName = name;
    if (entry.index !== null) base.index = entry.index;
  }
  return base;
}

/**
 * Runs one request through the pipeline. Throws only {@link RedeliveryRequested} (Service Bus, none of its
 * releases recorded).
 */
export async function handleRequest(input: RequestInput, deps: PipelineDeps): Promise<RequestAnswer> {
  const receivedAt = deps.clock.now();
  const parsed = parse(input);
  if (!parsed.usable) {
    return refuse(input, deps, parsed.shared, receivedAt, parsed.error, {
      machineId: parsed.machineId,
      deviceName: parsed.deviceName,
    });
  }
  const { shared, entries, bulk } = parsed;
  const state = deps.state;

  // Idempotency: of concurrent duplicates exactly one runs; repeats replay the answers.
  let claim: HeldClaim | undefined;
  let store = state?.store;
  if (state && store && input.key !== undefined) {
    const keyHash = keyHashOf(input.trigger, input.key);
    try {
      const result = await claimKey(
        store,
        deps.clock,
        deps.log,
        {
          keyHash,
          fingerprint: requestFingerprint(input),
          correlationId: shared.correlationId,
          redelivered: (input.deliveryCount ?? 1) > 1,
        },
        {
          windowMs: state.idempotencyWindowMs,
          duplicateWaitMs: state.duplicateWaitMs,
          duplicatePollMs: state.duplicatePollMs,
          // Twice the longest device run: renewed as each device starts, it never runs out while work runs.
          leaseMs: state.claimLeaseMs ?? 2 * runLeaseMs(deps, input.trigger),
        },
      );
      if (result.kind === 'replay') {
        const replay = await replayAnswers(
          deps,
          store,
          result.record.correlationId,
          result.record.requestId,
          bulk,
        );
        if (replay) return replay;
        // The answers are gone (they outlived their window): run the request again.
      } else if (result.kind === 'reused') {
        return refuse(input, deps, shared, receivedAt, keyReused(), {});
      } else if (result.kind === 'busy') {
        return duplicateInFlight(input, deps, shared, receivedAt, state);
      } else {
        claim = result.claim;
      }
    } catch (error) {
      storeUnavailable(deps, 'claiming the idempotency key', error);
      store = undefined;
    }
  }

  // Record every device's release before anything is sent, each with its lease in the due index.
  const requestId = claim?.requestId ?? randomUUID().replace(/-/g, '');
  const records = entries.map((entry) => newRecord(entry, shared, input, deps, requestId, receivedAt));
  let versions: (Versioned<ReleaseRecord> | undefined)[] = records.map(() => undefined);
  const created = new Set<number>();
  if (state && store) {
    try {
      const expiresAt =
        receivedAt +
        Math.max(state.idempotencyWindowMs, state.trackMaxMs, state.queueMaxMs) +
        RECORD_MARGIN_MS;
      // Records found already: this request is taken over from an earlier invocation (redelivery, stopped
      // instance, retry). One not written (the store failed partway, or failed and its records cannot be read
      // back) runs unrecorded, as without durable state.
      const recorded = await store.createReleases(records, {
        expiresAt,
        ...(input.key !== undefined ? { keyHash: keyHashOf(input.trigger, input.key) } : {}),
      });
      versions = recorded;
      recorded.forEach((r, i) => {
        if (r?.created) created.add(i);
      });
      if (recorded.includes(undefined)) {
        const correlationId = shared.correlationId;
        deps.log.warn('The store failed while recording the releases; those not recorded run without it', {
          correlationId,
        });
      }
    } catch (error) {
      storeUnavailable(deps, 'recording the releases', error);
      // The write may have landed (a timeout): what is recorded runs recorded, or the timer would run it again.
      const found = await readBack(store, records);
      if (found) {
        versions = found.map((v) => v?.version);
        found.forEach((v, i) => {
          if (v?.created) created.add(i);
        });
      } else {
        store = undefined;
      }
    }
  }

  // Release each device (a few at a time), each on its own.
  const ctx: RunContext = {
    deps,
    state: store && state ? { ...state, store } : undefined,
    trigger: input.trigger,
    redelivered: (input.deliveryCount ?? 1) > 1,
    canRedeliver: input.canRedeliver,
    cap: receivedAt + BULK_CAP_MS[input.trigger],
    answeredBefore: claim?.answeredBefore ?? false,
    idOwners: ownersById(records),
    nameOwners: new Map(),
    handBack: [],
  };
  const runs: DeviceRun[] = new Array<DeviceRun>(records.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < records.length; i = next++) {
      await claim?.renew();
      runs[i] = await runEntry(ctx, records[i]!, versions[i], created.has(i), Boolean(claim));
    }
  };
  await Promise.all(Array.from({ length: Math.min(DEVICE_CONCURRENCY, records.length) }, worker));

  // Without durable state a Service Bus message with a transient failure is handed back for redelivery. Not
  // when any release of it is recorded: a redelivery would drop this delivery's messages, and a recorded
  // release does not send its answer or its one `queued` message again. The failure is answered instead (the
  // key stays retryable), as on the last delivery.
  const recorded = versions.some((v) => v !== undefined);
  const handBack = recorded ? undefined : runs.find((r) => r.redeliver);
  if (handBack?.redeliver && input.canRedeliver) {
    deps.telemetry.trackRedelivery(handBack.answer, input.deliveryCount ?? 0);
    deps.log.warn('Transient failure; the message will be redelivered', {
      correlationId: shared.correlationId,
      errorCode: handBack.redeliver.code,
      deliveryCount: input.deliveryCount,
    });
    await claim?.finish('abandoned');
    throw new RedeliveryRequested(handBack.answer, handBack.redeliver);
  }

  const outcomes = runs.map((r) => r.answer);
  // Kept retryable while a device failed transiently (a retry with the same key runs it again, replays the
  // rest) or is still running elsewhere (its own invocation, or the resume timer once its lease ends, answers).
  const unfinished = outcomes.some((o) => transient(o)) || runs.some((r) => r.elsewhere);
  await claim?.finish(unfinished ? 'retry' : 'done');
  const messages = runs.flatMap((r) => (r.message ? [r.message] : []));
  for (const message of messages) {
    if (!message.replayed) deps.telemetry.trackOutcome(message, deps.clock.now() - receivedAt);
  }
  logAnswers(deps, shared.correlationId, outcomes);
  const waits = runs.flatMap((r) => (r.retryAfterSeconds !== undefined ? [r.retryAfterSeconds] : []));
  return {
    kind: bulk ? 'bulk' : 'single',
    outcomes,
    messages,
    replayed: false,
    ...(waits.length > 0 ? { retryAfterSeconds: Math.max(...waits) } : {}),
    resume: ctx.handBack,
  };
}

/**
 * The request's records as stored, after recording them failed: each entry's version (undefined when it is not
 * recorded), and whether it is the one this invocation wrote (the same lease: recorded now, not taken over).
 * Undefined when the store cannot be read either.
 */
async function readBack(
  store: ReleaseStore,
  records: readonly ReleaseRecord[],
): Promise<({ version: Versioned<ReleaseRecord>; created: boolean } | undefined)[] | undefined> {
  const [first] = records;
  if (!first) return [];
  let stored: Versioned<ReleaseRecord>[];
  try {
    stored = await store.readReleases(first.ref.correlationId, first.ref.requestId);
  } catch {
    return undefined;
  }
  const byIndex = new Map(stored.map((v) => [v.value.ref.index, v]));
  return records.map((record) => {
    const version = byIndex.get(record.ref.index);
    if (!version) return undefined;
    const mine =
      version.value.state === record.state &&
      version.value.dueAt === record.dueAt &&
      version.value.ask.receivedAt === record.ask.receivedAt;
    return { version, created: mine };
  });
}

/**
 * A new record for an entry: running (leased to this invocation), or done (an invalid entry). The lease
 * covers the run, and in a bulk the time until the last device starts (the bulk cap): this invocation does
 * not take its own records again.
 */
function newRecord(
  entry: Entry,
  shared: Shared,
  input: RequestInput,
  deps: PipelineDeps,
  requestId: string,
  receivedAt: number,
): ReleaseRecord {
  const state = deps.state;
  const record: ReleaseRecord = {
    ref: { correlationId: shared.correlationId, requestId, index: entry.index },
    ask: {
      target: entry.target ?? { deviceName: entry.deviceName ?? '' },
      comment: shared.comment,
      requestedBy: shared.requestedBy,
      force: shared.force,
      trigger: input.trigger,
      receivedAt,
    },
    machineId: entry.target?.machineId ?? entry.machineId ?? null,
    state: 'running',
    dueAt:
      receivedAt + (entry.index === null ? 0 : BULK_CAP_MS[input.trigger]) + runLeaseMs(deps, input.trigger),
    runs: 0,
    failures: 0,
    queuedAt: null,
    queuedSent: false,
    answer: null,
    completion: null,
    machineActionId: null,
    trackUntil: receivedAt + (state?.trackMaxMs ?? 0),
  };
  if (entry.target) return record;
  const error = new UnisolateError('InvalidRequest', `Invalid request: ${entry.problems.join('; ')}.`);
  const answer = buildOutcome(baseOf(shared, input.trigger, receivedAt, entry), {
    status: 'Invalid',
    phase: 'accepted',
    completedAt: iso(receivedAt),
    error,
  });
  return { ...record, state: 'done', answer };
}

// ---------------------------------------------------------------------------------------------------------
// One device
// ---------------------------------------------------------------------------------------------------------

/** What a device run gave: its answer, the message to send (if any), and what the trigger should do. */
interface DeviceRun {
  answer: Outcome;
  /** Sent to the response queue: the answer or the one `queued` message; absent when already sent. */
  message?: Outcome;
  retryAfterSeconds?: number;
  /**
   * Unrecorded: hand the Service Bus message back for this transient failure, unless a release of the request
   * is recorded (then `message` answers it).
   */
  redeliver?: UnisolateError;
  /** Another invocation holds the release (it answers for it). */
  elsewhere?: boolean;
}

interface RunContext {
  deps: PipelineDeps;
  /** Durable state; absent: nothing is recorded or parked. A failed store call degrades only its release. */
  state: StateDeps | undefined;
  /** The trigger this run is on (a resumed release runs on Service Bus whatever its request came by). */
  trigger: Trigger;
  /** A Service Bus redelivery (without durable state, the isolation state is then always checked). */
  redelivered: boolean;
  canRedeliver: boolean;
  /** Devices not started by this time are parked (bulk cap). */
  cap: number;
  /** A retry of a request answered before: the answers found recorded were sent then, and are replays now. */
  answeredBefore: boolean;
  /**
   * Devices named by id: the entry naming each (the parser refuses an id listed twice, so it owns it). For a
   * resumed release, read from its request's records when first needed.
   */
  idOwners?: Map<string, number>;
  /** Devices reached by name in this invocation: the entry that took each first. */
  nameOwners: Map<string, number>;
  /** Resume messages of releases parked until soon: the trigger sends them to the request queue. */
  handBack: ResumeMessage[];
}

/** One entry of a request: invalid (answered), answered earlier, run elsewhere, or run now. */
async function runEntry(
  ctx: RunContext,
  record: ReleaseRecord,
  version: Versioned<ReleaseRecord> | undefined,
  createdNow: boolean,
  claimed: boolean,
): Promise<DeviceRun> {
  const now = ctx.deps.clock.now();
  if (createdNow || !version) {
    // Recorded just now (or not recorded): an invalid entry has its answer, the others run.
    const current = version?.value ?? record;
    if (current.state === 'done' && current.answer)
      return { answer: current.answer, message: current.answer };
    return runDevice(ctx, current, version);
  }
  const stored = version.value;
  // Taken over from an earlier invocation of this request (a redelivery, a stopped instance, or a retry of a
  // request answered with a transient failure: that device runs again).
  const rerun = claimed && stored.state === 'done' && transient(stored.answer);
  if (answered(stored) && !rerun) {
    // Answered before. A retry replays it; after a stopped invocation, whose messages may not have gone out,
    // it is sent again as it was.
    const answer = stored.answer!;
    return { answer, message: ctx.answeredBefore ? { ...answer, replayed: true } : answer };
  }
  if (claimable(stored, now) || rerun) {
    const mine = await claimRecord(ctx, version);
    if (mine) return runDevice(ctx, mine.value, mine);
  }
  // Another invocation is running it (or just took it: it answers for it), or taking it failed (the timer
  // hands it back once its lease ends).
  return { answer: stored.answer ?? queuedAnswer(stored, ctx.trigger, stored.dueAt, now), elsewhere: true };
}

/**
 * Takes a record for this invocation (running, with a fresh lease): the new version, or undefined when another
 * invocation took it first or the store failed (then it is not known to be ours; the timer hands it back).
 */
async function claimRecord(
  ctx: RunContext,
  version: Versioned<ReleaseRecord>,
): Promise<Versioned<ReleaseRecord> | undefined> {
  const state = ctx.state;
  if (!state) return version;
  const now = ctx.deps.clock.now();
  const mine: ReleaseRecord = {
    ...version.value,
    state: 'running',
    dueAt: now + runLeaseMs(ctx.deps, ctx.trigger),
  };
  // Taken back from `running` (its lease ran out): the run that held it may have sent it.
  if (version.value.state === 'running') mine.interrupted = true;
  try {
    const etag = await state.store.updateRelease(mine, version);
    return etag ? { value: mine, etag } : undefined;
  } catch (error) {
    // Not known to be ours: the write may have landed (a timeout) and another run may take it anyway. Left as
    // held elsewhere: its due entry (the lease written, or the stored one) has the timer hand it back later.
    storeUnavailable(ctx.deps, 'taking a release', error);
    return undefined;
  }
}

/**
 * Releases one device: reserves its Defender calls (waiting as long as its trigger allows, else parking
 * it), releases it, and records the result (accepted, done, or parked again after a failure that passes).
 */
async function runDevice(
  ctx: RunContext,
  record: ReleaseRecord,
  version: Versioned<ReleaseRecord> | undefined,
): Promise<DeviceRun> {
  const { deps } = ctx;
  // Only a recorded release can be parked; one the store could not record runs as without durable state.
  const state = version ? ctx.state : undefined;
  const started = deps.clock.now();
  const current: ReleaseRecord = { ...record, runs: record.runs + 1 };
  // Cleared as this run records its end; until then a run taken back again checks again.
  delete current.interrupted;
  const parking = state !== undefined;
  // A bulk that ran out of time: the devices not started yet wait for their turn, parked.
  if (parking && started >= ctx.cap) return park(ctx, state, current, version, started);

  // Reserve every call the release needs before it starts, so it never stops halfway for want of budget.
  const reserved = new Map<MdeApi, Slot>();
  const apis = apisFor(
    { machineId: current.machineId, deviceName: current.ask.target.deviceName },
    deps.safety,
    current.ask.force,
  );
  const waitUntil = Math.min(
    ctx.cap,
    started + (parking ? BUDGET_WAIT_MS[ctx.trigger] : deps.retryBudgetMs[ctx.trigger]),
  );
  for (;;) {
    const answer = await reserve(deps.budget, apis, 'release');
    if (answer.granted) {
      for (const [api, slot] of answer.slots) reserved.set(api, slot);
      break;
    }
    const now = deps.clock.now();
    if (now + answer.waitMs <= waitUntil) {
      await deps.clock.sleep(answer.waitMs);
      continue;
    }
    if (parking) return park(ctx, state, current, version, now + answer.waitMs);
    break; // Nothing can be parked: the calls wait within the deadline, or end Throttled.
  }

  let result: DeviceResult;
  try {
    const deadline = deps.clock.now() + deps.retryBudgetMs[ctx.trigger];
    const calls = callContexts(deps, deadline, current.ref.correlationId, reserved);
    result = await releaseTarget(
      current.ask.target,
      {
        comment: current.ask.comment,
        force: current.ask.force,
        // A release taken back from a run that may have sent it checks first: MDE may have it already.
        forceIsolationCheck:
          record.interrupted === true || (!parking && ctx.redelivered && current.ref.index !== null),
        resolvedMachineId: current.machineId,
        // An entry naming its device by id owns it; one naming it by name checks who else releases it.
        claimDevice:
          current.ref.index === null || current.ask.target.machineId !== undefined
            ? undefined
            : (machineId) => claimDevice(ctx, current.ref, machineId),
        onResolved: (machineId) => {
          current.machineId = machineId;
        },
      },
      calls,
      deps,
    );
  } finally {
    for (const slot of reserved.values()) slot.release(false);
  }
  current.machineId = result.machineId ?? current.machineId;
  const error = result.error;
  const now = deps.clock.now();

  if (error && parking) {
    if (error.code === 'MdeThrottled')
      return park(ctx, state, current, version, now + (error.retryAfterMs ?? 60_000), result);
    // On Service Bus a transient failure waits (parked, with backoff) instead of being redelivered at once.
    if (error.transient && ctx.trigger === 'serviceBus' && current.failures + 1 < state.maxFailures) {
      const failed = { ...current, failures: current.failures + 1 };
      return park(ctx, state, failed, version, now + retryDelayMs(failed.failures, deps.random()), result);
    }
  }
  if (error?.transient && !parking && ctx.canRedeliver && ctx.trigger === 'serviceBus') {
    // Answered unless the request hands the message back (only when none of its releases is recorded).
    return { ...(await finish(ctx, current, version, result, now)), redeliver: error };
  }
  return finish(ctx, current, version, result, now);
}

/** Backoff of a release parked after a transient failure: 30 s, 60 s ... capped at 15 minutes, jittered. */
function retryDelayMs(failures: number, random: number): number {
  return (
    30_000 +
    backoffDelay(failures, random, { baseDelayMs: 30_000, maxDelayMs: 15 * 60_000, maxAttempts: 100 })
  );
}

/** The answer-phase outcome of a run. */
function answerOf(record: ReleaseRecord, result: DeviceResult, now: number): Outcome {
  const extra: Partial<OutcomeResult> = {};
  if (result.candidates) extra.candidates = result.candidates;
  return buildOutcome(baseOf(sharedOf(record), record.ask.trigger, record.ask.receivedAt, record), {
    status: result.status,
    phase: 'accepted',
    completedAt: iso(now),
    machineAction: result.machineAction,
    error: result.error,
    attempts: result.attempts,
    warnings: result.warnings,
    ...extra,
  });
}

function sharedOf(record: ReleaseRecord): Shared {
  return {
    correlationId: record.ref.correlationId,
    requestedBy: record.ask.requestedBy,
    comment: record.ask.comment,
    force: record.ask.force,
  };
}

/** A run's end: accepted (tracked to completion) or done; recorded, answered once. */
async function finish(
  ctx: RunContext,
  record: ReleaseRecord,
  version: Versioned<ReleaseRecord> | undefined,
  result: DeviceResult,
  now: number,
): Promise<DeviceRun> {
  const answer = answerOf(record, result, now);
  const accepted = result.error === null;
  const retryAfterSeconds = result.error?.transient ? retryAfterOf(result.error) : undefined;
  const next: ReleaseRecord = {
    ...record,
    state: accepted && record.machineId ? 'accepted' : 'done',
    dueAt: now,
    answer,
    machineActionId: result.machineAction?.id ?? null,
  };
  const written = await write(ctx, next, version);
  return {
    answer,
    ...(written !== 'lost' ? { message: answer } : {}),
    ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}),
  };
}

/**
 * Parks a release until `retryAt`: recorded `queued` (the resume timer hands it back then) with one `queued`
 * message, the first time. A release parked longer than `QUEUE_MAX_HOURS` ends `Throttled` instead, and one
 * that cannot be recorded `queued` (the store failed) ends as it would without durable state: `unparked` (the
 * failure that made it wait), else `Throttled`.
 */
async function park(
  ctx: RunContext,
  state: StateDeps,
  record: ReleaseRecord,
  version: Versioned<ReleaseRecord> | undefined,
  retryAt: number,
  unparked?: DeviceResult,
): Promise<DeviceRun> {
  const now = ctx.deps.clock.now();
  const queuedAt = record.queuedAt ?? now;
  if (retryAt - queuedAt > state.queueMaxMs) {
    const hours = Math.round(state.queueMaxMs / 3_600_000);
    const error = new UnisolateError(
      'MdeThrottled',
      `The release waited ${hours} h (QUEUE_MAX_HOURS) for the Defender API budget without getting it; it was not sent. Check what else uses the MDE app's budget, then send it again.`,
      { retryAfterMs: Math.max(1000, retryAt - now) },
    );
    return finish(ctx, { ...record, queuedAt }, version, resultOf(record, error), now);
  }
  const answer = queuedAnswer(record, record.ask.trigger, retryAt, now);
  // Due again soon (contention, not a spent hour): handed back to the request queue at once, where it waits
  // for its turn like any message, instead of for the resume timer's next run. Leased like a timer hand-off.
  const soon = retryAt - now <= HAND_BACK_SOON_MS;
  const next: ReleaseRecord = {
    ...record,
    state: 'queued',
    dueAt: soon ? now + HAND_OFF_MS : retryAt,
    queuedAt,
    queuedSent: true,
    answer,
  };
  const written = await write(ctx, next, version);
  if (written === 'unrecorded') {
    const fallback =
      unparked ??
      resultOf(
        record,
        new UnisolateError(
          'MdeThrottled',
          `The Defender API budget cannot take the release before ${iso(retryAt)} and it could not be parked (durable state unavailable); it was not sent. Retry after ${seconds(retryAt - now)} s.`,
          { retryAfterMs: Math.max(1000, retryAt - now) },
        ),
      );
    return finish(ctx, record, version, fallback, now);
  }
  if (written === 'written' && soon) ctx.handBack.push(resumeMessage(record.ref));
  const first = written === 'written' && !record.queuedSent;
  ctx.deps.log.info('Release parked until its budget frees', {
    correlationId: record.ref.correlationId,
    index: record.ref.index,
    retryAt: iso(retryAt),
  });
  return {
    answer,
    ...(first ? { message: answer } : {}),
    retryAfterSeconds: seconds(retryAt - now),
  };
}

function resultOf(record: ReleaseRecord, error: UnisolateError): DeviceResult {
  return {
    machineId: record.machineId,
    status: ERROR_TABLE[error.code].status,
    machineAction: null,
    attempts: 0,
    error,
    warnings: [],
  };
}

/** The `queued` outcome of a parked release. */
function queuedAnswer(record: ReleaseRecord, trigger: Trigger, retryAt: number, now: number): Outcome {
  return buildOutcome(baseOf(sharedOf(record), trigger, record.ask.receivedAt, record), {
    status: 'Queued',
    phase: 'queued',
    completedAt: iso(now),
    retryAt: iso(retryAt),
  });
}

/**
 * What became of a record's new state: `written`; `lost` when another invocation took the record first (it
 * answers for it); `unrecorded` without durable state or when the store failed twice (an answer is then sent anyway:
 * at least once beats never).
 */
type Written = 'written' | 'lost' | 'unrecorded';

/**
 * Writes a record's new state if this invocation still holds it. A store failure concerns this release only:
 * the others of the request keep their durable state.
 */
async function write(
  ctx: RunContext,
  next: ReleaseRecord,
  version: Versioned<ReleaseRecord> | undefined,
): Promise<Written> {
  const state = ctx.state;
  if (!state || !version) return 'unrecorded';
  try {
    const etag = await state.store.updateRelease(next, version);
    if (etag) return 'written';
    return lost(ctx, next);
  } catch (error) {
    storeUnavailable(ctx.deps, 'recording a release', error);
  }
  // Once more: left `running`, the release would be taken back after its lease and run again. The first
  // write may have landed (a timeout), so read it back before writing again.
  try {
    const stored = await state.store.readRelease(next.ref);
    if (!stored) return 'unrecorded';
    if (stored.etag === version.etag) {
      const etag = await state.store.updateRelease(next, version);
      return etag ? 'written' : lost(ctx, next);
    }
    const landed =
      stored.value.state === next.state &&
      stored.value.dueAt === next.dueAt &&
      stored.value.answer?.completedAt === next.answer?.completedAt &&
      stored.value.answer?.status === next.answer?.status;
    return landed ? 'written' : lost(ctx, next);
  } catch (error) {
    storeUnavailable(ctx.deps, 'recording a release again', error);
    return 'unrecorded';
  }
}

function lost(ctx: RunContext, next: ReleaseRecord): Written {
  ctx.deps.log.warn('Another invocation took this release over while it ran; it answers for it', {
    correlationId: next.ref.correlationId,
    index: next.ref.index,
  });
  return 'lost';
}

/**
 * The duplicate check of a bulk entry that named its device by name: null, or the error naming the entry
 * that releases the device. A device another entry names by id is that entry's (known from the request, no
 * table I/O); else the first entry to claim it owns it: a stored claim, so that a parked entry resumed on
 * another instance agrees.
 */
async function claimDevice(
  ctx: RunContext,
  ref: ReleaseRef,
  machineId: string,
): Promise<UnisolateError | null> {
  const index = ref.index ?? 0;
  let owner = (await idOwnersOf(ctx, ref))?.get(machineId) ?? ctx.nameOwners.get(machineId);
  if (owner === undefined) {
    ctx.nameOwners.set(machineId, index);
    owner = index;
    if (ctx.state) {
      try {
        owner = await ctx.state.store.claimDevice(ref, machineId);
      } catch (error) {
        storeUnavailable(ctx.deps, 'checking for a duplicate device', error);
      }
    }
  }
  if (owner === index) return null;
  return new UnisolateError(
    'DuplicateDevice',
    `devices[${index}] is the same device (${machineId}) as devices[${owner}]; it is released once, under devices[${owner}].`,
  );
}

/** Which entry names each device by id. */
function ownersById(records: readonly ReleaseRecord[]): Map<string, number> {
  const owners = new Map<string, number>();
  for (const { ref, ask } of records) {
    if (ref.index !== null && ask.target.machineId !== undefined) owners.set(ask.target.machineId, ref.index);
  }
  return owners;
}

/** {@link RunContext.idOwners}, read from the request's records the first time a resumed release needs it. */
async function idOwnersOf(ctx: RunContext, ref: ReleaseRef): Promise<Map<string, number> | undefined> {
  if (ctx.idOwners || !ctx.state) return ctx.idOwners;
  try {
    const records = await ctx.state.store.readReleases(ref.correlationId, ref.requestId);
    ctx.idOwners = ownersById(records.map((v) => v.value));
  } catch (error) {
    storeUnavailable(ctx.deps, 'reading the devices of the request', error);
  }
  return ctx.idOwners;
}

// ---------------------------------------------------------------------------------------------------------
// Resume
// ---------------------------------------------------------------------------------------------------------

/**
 * Runs a parked release again (the resume timer handed it back through the request queue). Returns the
 * messages to send: its answer, or nothing when it is parked again (its one `queued` message was sent), was
 * answered already, or is running elsewhere.
 */
export async function resumeRelease(
  ref: ReleaseRef,
  deps: PipelineDeps,
): Promise<{ messages: Outcome[]; resume: ResumeMessage[] }> {
  const none = { messages: [], resume: [] };
  const state = deps.state;
  if (!state) return none;
  const version = await state.store.readRelease(ref);
  if (!version || !claimable(version.value, deps.clock.now())) return none;
  const ctx: RunContext = {
    deps,
    state,
    trigger: 'serviceBus',
    redelivered: false,
    canRedeliver: false,
    cap: deps.clock.now() + BULK_CAP_MS.serviceBus,
    answeredBefore: false,
    nameOwners: new Map(),
    handBack: [],
  };
  const mine = await claimRecord(ctx, version);
  if (!mine) return none;
  const run = await runDevice(ctx, mine.value, mine);
  if (!run.message) return { messages: [], resume: ctx.handBack };
  deps.telemetry.trackOutcome(run.message, deps.clock.now() - version.value.ask.receivedAt);
  logAnswers(deps, ref.correlationId, [run.message]);
  return { messages: [run.message], resume: ctx.handBack };
}

// ---------------------------------------------------------------------------------------------------------
// Refusals and replays
// ---------------------------------------------------------------------------------------------------------

/** A request refused as a whole (nothing was sent to MDE): one outcome, to telemetry and the queue. */
function refuse(
  input: RequestInput,
  deps: PipelineDeps,
  shared: Shared,
  receivedAt: number,
  error: UnisolateError,
  device: { machineId?: string | null; deviceName?: string | undefined },
  mark: Partial<OutcomeResult> = {},
): RequestAnswer {
  const base = baseOf(shared, input.trigger, receivedAt);
  base.machineId = device.machineId ?? null;
  if (device.deviceName !== undefined) base.deviceName = device.deviceName;
  delete base.forced;
  const outcome = buildOutcome(base, {
    status: ERROR_TABLE[error.code].status,
    phase: 'accepted',
    completedAt: iso(deps.clock.now()),
    error,
    ...mark,
  });
  if (!mark.duplicate) deps.telemetry.trackOutcome(outcome, deps.clock.now() - receivedAt);
  deps.log.info('Request refused', {
    correlationId: outcome.correlationId,
    status: outcome.status,
    errorCode: error.code,
  });
  return {
    kind: 'single',
    outcomes: [outcome],
    messages: [outcome],
    replayed: false,
    ...(error.transient ? { retryAfterSeconds: retryAfterOf(error) } : {}),
    resume: [],
  };
}

function keyReused(): UnisolateError {
  return new UnisolateError(
    'IdempotencyKeyReused',
    'This idempotency key was already used with a different request body. Use a new key for a different release, or resend the original body unchanged.',
  );
}

/** The answer to a duplicate that arrived while the first request with its key still runs: marked. */
function duplicateInFlight(
  input: RequestInput,
  deps: PipelineDeps,
  shared: Shared,
  receivedAt: number,
  state: StateDeps,
): RequestAnswer {
  const waitSeconds = seconds(state.duplicateWaitMs ?? CLAIM_DEFAULTS.duplicateWaitMs);
  const error = new UnisolateError(
    'IdempotencyKeyInUse',
    `A request with this idempotency key is still being processed. Retry after ${waitSeconds} s to get its outcome; the device is released only once.`,
    { retryAfterMs: waitSeconds * 1000 },
  );
  // Marked: the first request's outcome (same correlation id) is the real one.
  return refuse(input, deps, shared, receivedAt, error, {}, { duplicate: true });
}

/**
 * The answers of an answered request, marked replayed: each device's answer, or (while one still runs
 * elsewhere, e.g. a redelivery of its message) where it stands. Undefined when the records are gone.
 */
async function replayAnswers(
  deps: PipelineDeps,
  store: ReleaseStore,
  correlationId: string,
  requestId: string,
  bulk: boolean,
): Promise<RequestAnswer | undefined> {
  const records = await store.readReleases(correlationId, requestId);
  if (records.length === 0) return undefined;
  const now = deps.clock.now();
  const outcomes = records.map(
    ({ value }) => value.answer ?? queuedAnswer(value, value.ask.trigger, value.dueAt, now),
  );
  return {
    kind: bulk ? 'bulk' : 'single',
    outcomes,
    messages: outcomes.map((o) => ({ ...o, replayed: true })),
    replayed: true,
    resume: [],
  };
}

function storeUnavailable(deps: PipelineDeps, what: string, error: unknown): void {
  deps.log.warn(`Durable state unavailable (${what}); continuing without it`, {
    error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
  });
}

function logAnswers(deps: PipelineDeps, correlationId: string, outcomes: readonly Outcome[]): void {
  if (outcomes.length === 1) {
    const [o] = outcomes;
    deps.log.info('Release outcome', {
      correlationId,
      machineId: o!.machineId,
      status: o!.status,
      errorCode: o!.error?.code ?? null,
      attempts: o!.attempts,
    });
    return;
  }
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o.status] = (counts[o.status] ?? 0) + 1;
  deps.log.info('Bulk release outcomes', { correlationId, devices: outcomes.length, counts });
}
