/**
 * Idempotent releases: a request carrying an idempotency key (HTTP `Idempotency-Key` header or
 * `idempotencyKey` body field; a Service Bus message's `messageId` by default) is released at most once
 * per key within `IDEMPOTENCY_WINDOW_HOURS`; repeats get the stored outcome and never call MDE again.
 *
 * The key is claimed with an insert that fails on conflict (Table Storage `Insert Entity` answers 409,
 * https://learn.microsoft.com/en-us/rest/api/storageservices/insert-entity), so of concurrent duplicates on
 * any number of instances exactly one runs the release. Expired and abandoned claims are taken over with an
 * ETag-checked replace (https://learn.microsoft.com/en-us/rest/api/storageservices/update-entity2).
 *
 * When durable state is not configured, or unreachable, releases run exactly as without this module (no
 * idempotency): the release path never depends on Table Storage.
 */
import { createHash } from 'node:crypto';
import { toUnisolateError, UnisolateError } from './errors';
import { ERROR_TABLE, type Outcome } from './outcome';
import type { IdempotencyRecord, ReleaseStore, Versioned } from './ports';
import { processRequest, type RequestResult } from './bulk';
import { RedeliveryRequested, requesterOf, type ReleaseDeps, type ReleaseInput } from './releaseDevice';
import { parseReleaseRequest } from './request';
import { recordRelease } from './tracking';

/** Durable state settings, present when a store is configured. */
export interface StateDeps {
  store: ReleaseStore;
  /** IDEMPOTENCY_WINDOW_HOURS in ms. */
  idempotencyWindowMs: number;
  /** TRACK_MAX_HOURS in ms. */
  trackMaxMs: number;
  /** How long a duplicate waits for the first request's outcome before answering 409 (default 5 s). */
  duplicateWaitMs?: number;
  /** Poll interval while waiting (default 250 ms). */
  duplicatePollMs?: number;
  /**
   * A pending claim older than this is considered abandoned (its instance stopped) and may be taken over.
   * Default 3 minutes: longer than any release's retry budget plus one request timeout.
   */
  claimLeaseMs?: number;
}

/** An idempotency key: 1-255 printable ASCII characters (as Stripe's and the IETF draft's examples). */
export const IDEMPOTENCY_KEY_PATTERN = /^[\x20-\x7E]{1,255}$/;

/** Result of {@link processReleaseOnce}: the request's result (single or bulk) and how it was obtained. */
export type OnceResult = RequestResult & OnceFlags;

/** How a {@link OnceResult} was obtained. */
export interface OnceFlags {
  /** True when the outcome is a stored one, repeated for a duplicate (MDE was not called). */
  replayed: boolean;
  /**
   * False when this request produced no outcome of its own: a replay, or a duplicate still running
   * elsewhere (409). (Both triggers still send the answer to the response queue, a replay marked `replayed`.)
   */
  fresh: boolean;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

/** The `idempotencyKey` body field (any casing), if present. */
export function bodyIdempotencyKey(body: unknown): unknown {
  if (!isPlainObject(body)) return undefined;
  const key = Object.keys(body).find((k) => k.toLowerCase() === 'idempotencykey');
  return key === undefined ? undefined : Object.getOwnPropertyDescriptor(body, key)?.value;
}

/**
 * Picks the request's idempotency key: the explicit one (HTTP header) and/or the body field, which must
 * agree; else the fallback (Service Bus `messageId`). Returns an error for an unusable key.
 */
export function chooseIdempotencyKey(
  body: unknown,
  explicit: string | null | undefined,
  fallback?: string,
): { key: string | undefined } | { error: UnisolateError } {
  const fromBody = bodyIdempotencyKey(body);
  const invalid = (what: string) =>
    new UnisolateError(
      'InvalidRequest',
      `Invalid request: ${what} must be 1-255 printable ASCII characters (a UUID is a good key).`,
    );
  if (fromBody !== undefined && fromBody !== null) {
    if (typeof fromBody !== 'string' || !IDEMPOTENCY_KEY_PATTERN.test(fromBody))
      return { error: invalid('idempotencyKey') };
  }
  if (explicit !== undefined && explicit !== null) {
    if (!IDEMPOTENCY_KEY_PATTERN.test(explicit)) return { error: invalid('the Idempotency-Key header') };
    if (typeof fromBody === 'string' && fromBody !== explicit) {
      return {
        error: new UnisolateError(
          'InvalidRequest',
          'Invalid request: the Idempotency-Key header and the idempotencyKey body field differ; send one of them.',
        ),
      };
    }
    return { key: explicit };
  }
  if (typeof fromBody === 'string') return { key: fromBody };
  return { key: fallback && IDEMPOTENCY_KEY_PATTERN.test(fallback) ? fallback : undefined };
}

/** Whether a property name is an array index: objects list those first, in numeric order (ECMA-262 OrdinaryOwnPropertyKeys). */
function isArrayIndex(key: string): boolean {
  return /^(?:0|[1-9]\d{0,9})$/.test(key) && Number(key) < 2 ** 32 - 1;
}

function byPropertyOrder(a: string, b: string): number {
  const indexA = isArrayIndex(a);
  const indexB = isArrayIndex(b);
  if (indexA && indexB) return Number(a) - Number(b);
  if (indexA !== indexB) return indexA ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** JSON text of a leaf, or undefined for what JSON.stringify leaves out (undefined, functions, symbols). */
function leafJson(value: unknown): string | undefined {
  return JSON.stringify(value);
}

/**
 * Canonical JSON text of a body: object keys lower-cased (they are matched case-insensitively) and sorted,
 * the idempotency key field left out at every level. Iterative (an explicit stack), so no nesting depth can
 * overflow the call stack. The text is exactly `JSON.stringify` of that canonical form (keys that are array
 * indexes first, as JavaScript orders them), so stored fingerprints stay comparable.
 */
export function canonicalJson(value: unknown): string {
  const out: string[] = [];
  // Work items: a value to write, or literal text. Pushed in reverse so they pop in writing order.
  const work: ({ value: unknown } | string)[] = [{ value }];
  for (let item = work.pop(); item !== undefined; item = work.pop()) {
    if (typeof item === 'string') {
      out.push(item);
      continue;
    }
    const current = item.value;
    if (Array.isArray(current)) {
      const elements = current as unknown[];
      out.push('[');
      work.push(']');
      for (let i = elements.length - 1; i >= 0; i -= 1) {
        work.push({ value: elements[i] });
        if (i > 0) work.push(',');
      }
    } else if (isPlainObject(current)) {
      // Lower-cased names; for names that collide, the last value wins (as Object.fromEntries would).
      const members = new Map<string, unknown>();
      for (const key of Object.keys(current)) {
        const lower = key.toLowerCase();
        if (lower === 'idempotencykey') continue;
        members.set(lower, Object.getOwnPropertyDescriptor(current, key)?.value);
      }
      const names = [...members.keys()]
        .filter((name) => {
          const member = members.get(name);
          return isPlainObject(member) || Array.isArray(member) || leafJson(member) !== undefined;
        })
        .sort(byPropertyOrder);
      out.push('{');
      work.push('}');
      for (let i = names.length - 1; i >= 0; i -= 1) {
        const name = names[i]!;
        work.push({ value: members.get(name) });
        work.push(`${i > 0 ? ',' : ''}${JSON.stringify(name)}:`);
      }
    } else {
      // Leaves, and objects with their own JSON form (a Buffer): no nesting of ours to walk.
      out.push(leafJson(current) ?? 'null');
    }
  }
  return out.join('');
}

/** Fingerprint of what a request asks for: its body (canonical) and route machine id. */
export function requestFingerprint(input: Pick<ReleaseInput, 'body' | 'routeMachineId'>): string {
  const route = JSON.stringify(input.routeMachineId?.toLowerCase() ?? null);
  const text = `{"route":${route},"body":${canonicalJson(input.body)}}`;
  return createHash('sha256').update(text).digest('hex');
}

/** Hash of a key, scoped by trigger (an HTTP key and a Service Bus message id never collide). */
export function keyHashOf(trigger: string, key: string): string {
  return createHash('sha256').update(`${trigger}\n${key}`).digest('hex');
}

type Acquired =
  | { kind: 'claimed'; etag: string }
  | { kind: 'replay'; stored: Outcome | Outcome[] }
  | { kind: 'reused' }
  | { kind: 'busy' };

/** Claims the key, or says why not. Throws when the store fails (the caller then runs without it). */
async function acquire(
  state: StateDeps,
  deps: ReleaseDeps,
  keyHash: string,
  fingerprint: string,
): Promise<Acquired> {
  const waitMs = state.duplicateWaitMs ?? 5_000;
  const pollMs = state.duplicatePollMs ?? 250;
  const started = deps.clock.now();
  // Bounded: each pass either returns or sleeps pollMs, until waitMs; plus a few passes for lost races.
  const maxPasses = Math.ceil(waitMs / pollMs) + 5;
  for (let pass = 0; pass < maxPasses; pass += 1) {
    const now = deps.clock.now();
    const claim: IdempotencyRecord = {
      keyHash,
      fingerprint,
      state: 'pending',
      claimedAt: now,
      leaseUntil: now + (state.claimLeaseMs ?? 180_000),
      outcome: null,
    };
    const inserted = await state.store.insertKey(claim);
    if (inserted) return { kind: 'claimed', etag: inserted };

    const existing: Versioned<IdempotencyRecord> | undefined = await state.store.readKey(keyHash);
    if (!existing) continue; // deleted meanwhile (a transient failure released it): claim again
    const record = existing.value;
    const expired = record.claimedAt + state.idempotencyWindowMs <= now;
    const abandoned = record.state === 'pending' && record.leaseUntil <= now;
    if (expired || abandoned) {
      const replaced = await state.store.replaceKey(claim, existing.etag);
      if (replaced) return { kind: 'claimed', etag: replaced };
      continue; // another request took it over first: look again
    }
    if (record.fingerprint !== fingerprint) return { kind: 'reused' };
    if (record.state === 'done' && record.outcome) return { kind: 'replay', stored: record.outcome };
    if (now - started >= waitMs) return { kind: 'busy' };
    await deps.clock.sleep(pollMs);
  }
  return { kind: 'busy' };
}

/**
 * The outcome of a request refused before (or instead of) a release: status and error from the error table,
 * what could be read from the request, reported to telemetry. Used for idempotency refusals and by the
 * triggers' last-resort guard.
 */
export function refusal(input: ReleaseInput, deps: ReleaseDeps, error: UnisolateError): Outcome {
  const parsed = parseReleaseRequest(input.bodyError ? {} : input.body, input);
  const now = new Date(deps.clock.now()).toISOString();
  const outcome: Outcome = {
    schemaVersion: 1,
    correlationId: parsed.ok ? parsed.request.correlationId : parsed.correlationId,
    machineId: parsed.ok ? parsed.request.machineId : parsed.machineId,
    status: ERROR_TABLE[error.code].status,
    machineAction: null,
    error: { code: error.code, message: error.message },
    trigger: input.trigger,
    requestedBy: requesterOf(input, parsed.ok ? parsed.request.requestedBy : parsed.requestedBy),
    receivedAt: now,
    completedAt: now,
    attempts: 0,
    phase: 'accepted',
  };
  deps.telemetry.trackOutcome(outcome, 0);
  return outcome;
}

function storeFailure(deps: ReleaseDeps, what: string, error: unknown): void {
  deps.log.warn(`Durable state unavailable (${what}); continuing without idempotency`, {
    error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
  });
}

/** The outcomes of a result (one, or one per device of a bulk request). */
function outcomesOf(result: RequestResult): Outcome[] {
  return result.kind === 'bulk' ? result.outcomes : [result.outcome];
}

/** Runs the request, marks its outcomes `phase: "accepted"` and records them for tracking (best effort). */
async function run(
  input: ReleaseInput,
  deps: ReleaseDeps,
  state: StateDeps | undefined,
): Promise<RequestResult> {
  const result = await processRequest(input, deps);
  const accepted = (o: Outcome): Outcome => ({ ...o, phase: 'accepted' });
  const marked: RequestResult =
    result.kind === 'bulk'
      ? { ...result, outcomes: result.outcomes.map(accepted) }
      : { ...result, outcome: accepted(result.outcome) };
  if (state) {
    for (const outcome of outcomesOf(marked))
      await recordRelease(state.store, outcome, state.trackMaxMs, deps.log);
  }
  return marked;
}

/**
 * `processRequest` (single or bulk) with idempotency and tracking. Without `state` (no store configured) or without
 * a key it is `processRequest` plus the `phase` field (and, with `state`, the tracking record).
 * Throws only `RedeliveryRequested` (Service Bus), as `processRequest` does.
 */
export async function processReleaseOnce(
  input: ReleaseInput,
  key: string | undefined,
  deps: ReleaseDeps,
  state: StateDeps | undefined,
): Promise<OnceResult> {
  if (!state || key === undefined || input.bodyError) {
    return { ...(await run(input, deps, state)), replayed: false, fresh: true };
  }
  const keyHash = keyHashOf(input.trigger, key);
  const fingerprint = requestFingerprint(input);

  let acquired: Acquired;
  try {
    acquired = await acquire(state, deps, keyHash, fingerprint);
  } catch (error) {
    storeFailure(deps, 'claiming the idempotency key', error);
    return { ...(await run(input, deps, state)), replayed: false, fresh: true };
  }

  if (acquired.kind === 'replay') {
    const stored = acquired.stored;
    deps.log.info('Duplicate request: replaying the stored outcome', {
      correlationId: Array.isArray(stored) ? stored[0]?.correlationId : stored.correlationId,
    });
    const flags = { retryAfterSeconds: undefined, replayed: true, fresh: false };
    return Array.isArray(stored)
      ? { kind: 'bulk', outcomes: stored, ...flags }
      : { kind: 'single', outcome: stored, ...flags };
  }
  if (acquired.kind === 'reused') {
    const error = new UnisolateError(
      'IdempotencyKeyReused',
      'This idempotency key was already used with a different request body. Use a new key for a different release, or resend the original body unchanged.',
    );
    const outcome = refusal(input, deps, error);
    return { kind: 'single', outcome, retryAfterSeconds: undefined, replayed: false, fresh: true };
  }
  if (acquired.kind === 'busy') {
    const waitSeconds = Math.max(1, Math.ceil((state.duplicateWaitMs ?? 5_000) / 1000));
    const error = new UnisolateError(
      'IdempotencyKeyInUse',
      `A request with this idempotency key is still being processed. Retry after ${waitSeconds} s to get its outcome; the device is released only once.`,
      { retryAfterMs: waitSeconds * 1000 },
    );
    // Marked: the first request's outcome (same correlation id) is the real one.
    const outcome: Outcome = { ...refusal(input, deps, error), duplicate: true };
    if (input.canRedeliver) throw new RedeliveryRequested(outcome, error);
    return { kind: 'single', outcome, retryAfterSeconds: waitSeconds, replayed: false, fresh: false };
  }

  let result: RequestResult;
  try {
    result = await run(input, deps, state);
  } catch (error) {
    // Handed back for redelivery: free the key so the redelivered message runs again.
    await state.store
      .deleteKey(keyHash, acquired.etag)
      .catch((e: unknown) => storeFailure(deps, 'freeing the key', e));
    throw error;
  }
  // A transient failure of any device: the caller will retry, and the retry must be able to run.
  const transient = outcomesOf(result).some((o) => o.error && ERROR_TABLE[o.error.code].transient);
  try {
    if (transient) {
      // A retry with the same key must be able to succeed: transient failures are not stored.
      await state.store.deleteKey(keyHash, acquired.etag);
    } else {
      const now = deps.clock.now();
      const done: IdempotencyRecord = {
        keyHash,
        fingerprint,
        state: 'done',
        claimedAt: now,
        leaseUntil: now,
        outcome: result.kind === 'bulk' ? result.outcomes : result.outcome,
      };
      const saved = await state.store.replaceKey(done, acquired.etag);
      if (!saved) deps.log.warn('The idempotency claim was taken over before the outcome was stored');
    }
  } catch (error) {
    storeFailure(deps, 'storing the outcome', toUnisolateError(error));
  }
  return { ...result, replayed: false, fresh: true };
}
