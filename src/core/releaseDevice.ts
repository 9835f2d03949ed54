/**
 * The release use case: one validated request in, one outcome out. Both triggers call
 * {@link processRelease}; neither holds business logic.
 */
import { callMde, type CallContext } from './callMde';
import { describeRequester, type CallerPrincipal } from './callerPrincipal';
import { AmbiguousDeviceError, resolveDeviceName, type MachineRecord } from './deviceLookup';
import { toUnisolateError, UnisolateError } from './errors';
import { applyHealthGate, gateEnabled, type ReleasePolicy } from './healthGate';
import { checkIsolation, isolationError } from './isolationState';
import { unisolateActionsOf, isMachineAction } from './machineActions';
import type { MachineAction, Outcome, OutcomeStatus, Trigger } from './outcome';
import { ERROR_TABLE } from './outcome';
import type { Clock, DefenderApi, Logger, Telemetry } from './ports';
import type { Budget } from './budget';
import { parseReleaseRequest, type ReleaseRequest, type RequestContext } from './request';

/** Dependencies of the core, built once per cold start by the composition root. */
export interface ReleaseDeps {
  defender: DefenderApi;
  /** The Defender API call budget (per API; shared by every instance when durable state is configured). */
  budget: Budget;
  clock: Clock;
  random: () => number;
  telemetry: Telemetry;
  log: Logger;
  requestTimeoutMs: number;
  /** Retry budget per trigger (ms). */
  retryBudgetMs: Record<Trigger, number>;
  /** Host name of the Defender API, for dependency telemetry. */
  apiHost: string;
  /** Safety checks before a release; absent: none (the handlers pass them from the settings). */
  safety?: SafetyOptions;
}

/** The checks made before a release (settings `CHECK_ISOLATION_STATE`, `RELEASE_POLICY`). */
export interface SafetyOptions {
  /** Derive the isolation state from the action history; refuse NotIsolated / IsolationPending. */
  checkIsolationState: boolean;
  /** The health gate, or null when off. */
  releasePolicy: ReleasePolicy | null;
}

/** What a trigger hands to the core. */
export interface ReleaseInput extends RequestContext {
  body: unknown;
  trigger: Trigger;
  /** Whether a transient failure may be handed back for redelivery (Service Bus, not the last delivery). */
  canRedeliver: boolean;
  /** Delivery count, for telemetry of redeliveries. */
  deliveryCount?: number;
  /** Set when the body was rejected before parsing (malformed JSON, too large, not JSON): the outcome's error. */
  bodyError?: UnisolateError;
  /** The caller authenticated by App Service Authentication, if any: recorded in the outcome's `requestedBy`. */
  caller?: CallerPrincipal | null;
}

/**
 * The `requestedBy` of every outcome of a request (release, bulk device, refusal, last-resort failure): the
 * authenticated caller when there is one, with what the request itself declared.
 */
export function requesterOf(input: Pick<ReleaseInput, 'caller'>, declared: string | null): string | null {
  return describeRequester(input.caller ?? null, declared);
}

/**
 * Thrown by {@link processRelease} when a transient failure should be retried by redelivery instead of
 * reported. The Service Bus adapter lets it propagate; no outcome is sent for that delivery.
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

/** What {@link processRelease} returns: the outcome, and for retriable failures how long to wait. */
export interface ReleaseResult {
  outcome: Outcome;
  /** For `Throttled` and transient `Failed` outcomes: seconds the caller should wait (HTTP `Retry-After`). */
  retryAfterSeconds: number | undefined;
}

/** Result of the release itself. */
interface Released {
  status: Extract<OutcomeStatus, 'Accepted' | 'AlreadyInProgress'>;
  machineAction: MachineAction | null;
  attempts: number;
}

function mdeError(body: unknown): { code?: string; message?: string } {
  if (typeof body !== 'object' || body === null) return {};
  const error = (body as { error?: unknown }).error;
  if (typeof error !== 'object' || error === null) return {};
  const { code, message } = error as { code?: unknown; message?: unknown };
  return {
    code: typeof code === 'string' ? code.slice(0, 100) : undefined,
    message: typeof message === 'string' ? message.slice(0, 300) : undefined,
  };
}

/**
 * Finds the Unisolate action that is already running for a machine (newest Pending/InProgress one), for an
 * `ActiveRequestAlreadyExists` answer. Best effort: any failure gives null, never a failed release.
 */
async function findPendingUnisolate(
  ctx: CallContext,
  machineId: string,
  log: Logger,
): Promise<MachineAction | null> {
  try {
    const actions = await unisolateActionsOf(ctx, machineId, 'the look-up of the pending action');
    return actions?.find((a) => a.status === 'Pending' || a.status === 'InProgress') ?? null;
  } catch (error) {
    log.warn('Could not look up the pending unisolate action; answering AlreadyInProgress without it', {
      machineId,
      errorCode: toUnisolateError(error).code,
    });
    return null;
  }
}

/**
 * Releases one device: `POST {api}/api/machines/{id}/unisolate`, with retries, and interprets MDE's answer.
 * See https://learn.microsoft.com/en-us/defender-endpoint/api/unisolate-machine
 */
export async function releaseDevice(
  request: Pick<ReleaseRequest, 'comment'> & { machineId: string },
  ctx: CallContext,
  log: Logger,
): Promise<Released> {
  const { response, attempts } = await callMde(ctx, 'unisolate', 'the release', (o) =>
    ctx.defender.unisolate(request.machineId, request.comment, o),
  );
  const { status, body } = response;
  if (status === 201 || status === 200) {
    return { status: 'Accepted', machineAction: isMachineAction(body) ? body : null, attempts };
  }
  const { code, message } = mdeError(body);
  const detail = code ? ` (${code}${message ? `: ${message}` : ''})` : '';
  if (status === 400 && code === 'ActiveRequestAlreadyExists') {
    const machineAction = await findPendingUnisolate(ctx, request.machineId, log);
    return { status: 'AlreadyInProgress', machineAction, attempts };
  }
  if (status === 404) {
    throw new UnisolateError(
      'MachineNotFound',
      `Device ${request.machineId} was not found in Defender for Endpoint. Check the device id (the 40-character id in the device page URL) and the tenant.`,
      { attempts },
    );
  }
  if (status === 401) {
    throw new UnisolateError(
      'MdeUnauthorized',
      `Defender for Endpoint rejected the app's token (HTTP 401) even with freshly read credentials${detail}. Check that the secrets in Key Vault belong to the MDE app registration and that MDE_CLOUD matches the tenant's cloud.`,
      { attempts },
    );
  }
  if (status === 403) {
    throw new UnisolateError(
      'MdeForbidden',
      `Defender for Endpoint refused the release (HTTP 403)${detail}. Grant the MDE app the WindowsDefenderATP application permission Machine.Isolate with admin consent, and make sure the device's device group is in the app's scope.`,
      { attempts },
    );
  }
  throw new UnisolateError(
    'MdeUnexpectedResponse',
    `Defender for Endpoint answered HTTP ${status}${detail} to the release; the device was not released. Check the request and retry.`,
    { attempts },
  );
}

/** The optional outcome fields of issue 7 (look-up by name, health gate, bulk, skipped checks). */
export type OutcomeExtras = Partial<
  Pick<Outcome, 'deviceName' | 'candidates' | 'forced' | 'index' | 'warnings'>
>;

/** Builds the call context of one MDE call, named for dependency telemetry. */
export type CallsFor = (dependencyName: string) => CallContext;

/** Call contexts sharing one deadline, each recording its attempts as a named dependency. */
export function callContexts(
  deps: Omit<ReleaseDeps, 'log'>,
  deadline: number,
  correlationId: string,
): CallsFor {
  return (name) => ({
    defender: deps.defender,
    budget: deps.budget,
    spender: 'release',
    clock: deps.clock,
    random: deps.random,
    deadline,
    requestTimeoutMs: deps.requestTimeoutMs,
    onAttempt: (a) =>
      deps.telemetry.trackDependency({
        name,
        target: deps.apiHost,
        resultCode: a.status,
        success: a.success,
        durationMs: a.durationMs,
        correlationId,
      }),
  });
}

/** What happened to one device: the outcome's status fields, and the error (null on success). */
export interface DeviceResult {
  /** The device id (resolved from the name when one was given; null when it could not be). */
  machineId: string | null;
  status: OutcomeStatus;
  machineAction: MachineAction | null;
  attempts: number;
  error: UnisolateError | null;
  extra: OutcomeExtras;
}

/**
 * Releases one device safely: name look-up (when a `deviceName` is given) → isolation-state check →
 * health gate (unless forced) → unisolate. Never throws: every failure is in the result.
 * @param forceIsolationCheck - check the state even when the setting is off (redelivered bulk messages, so
 *   a device the previous delivery already released is not released again)
 */
export async function releaseTarget(
  target: { machineId?: string | undefined; deviceName?: string | undefined },
  options: { comment: string; force?: boolean | undefined },
  calls: CallsFor,
  deps: Pick<ReleaseDeps, 'log' | 'safety'>,
  forceIsolationCheck = false,
): Promise<DeviceResult> {
  let machineId = target.machineId ?? null;
  const extra: OutcomeExtras = {};
  if (target.deviceName !== undefined) extra.deviceName = target.deviceName;
  if (options.force) extra.forced = true;
  const warnings: string[] = [];
  const withWarnings = (): OutcomeExtras => (warnings.length > 0 ? { ...extra, warnings } : extra);
  try {
    let known: MachineRecord | undefined;
    if (machineId === null) {
      if (target.deviceName === undefined)
        throw new UnisolateError('InvalidRequest', 'Invalid request: no device given.');
      known = (await resolveDeviceName(calls('GET /api/machines'), target.deviceName)).machine;
      machineId = known.id.toLowerCase();
    }
    if (deps.safety?.checkIsolationState || forceIsolationCheck) {
      const check = await checkIsolation(calls('GET /api/machineactions'), machineId, known !== undefined);
      if (check.warning) {
        warnings.push(check.warning);
        deps.log.warn('Isolation state not checked', { machineId, warning: check.warning });
      }
      const refusal = isolationError(check.state, machineId, check.attempts);
      if (refusal) throw refusal;
      if (check.state.kind === 'ReleasePending') {
        // Already being released: report it, and spend no call on a POST that MDE would refuse.
        return {
          machineId,
          status: 'AlreadyInProgress',
          machineAction: check.state.action,
          attempts: check.attempts,
          error: null,
          extra: withWarnings(),
        };
      }
    }
    const policy = deps.safety?.releasePolicy;
    if (gateEnabled(policy) && !options.force) {
      await applyHealthGate(calls('GET /api/machines/{id}[/alerts]'), machineId, policy, known);
    }
    const released = await releaseDevice(
      { machineId, comment: options.comment },
      calls('POST /api/machines/{id}/unisolate'),
      deps.log,
    );
    return { machineId, ...released, error: null, extra: withWarnings() };
  } catch (error) {
    const failure = toUnisolateError(error);
    if (failure.code === 'InternalError') {
      deps.log.error('Unexpected error during a release', { machineId, error: String(error) });
    }
    if (error instanceof AmbiguousDeviceError) extra.candidates = error.candidates;
    return {
      machineId,
      status: ERROR_TABLE[failure.code].status,
      machineAction: null,
      attempts: failure.options.attempts ?? 0,
      error: failure,
      extra: withWarnings(),
    };
  }
}

/** Builds an outcome (exported for the bulk path). */
export function outcomeOf(
  base: Pick<Outcome, 'correlationId' | 'machineId' | 'trigger' | 'requestedBy' | 'receivedAt'>,
  completedAt: string,
  result: { status: OutcomeStatus; machineAction: MachineAction | null; attempts: number },
  error: UnisolateError | null,
  extra: OutcomeExtras = {},
): Outcome {
  return {
    schemaVersion: 1,
    correlationId: base.correlationId,
    machineId: base.machineId,
    status: result.status,
    machineAction: result.machineAction,
    error: error ? { code: error.code, message: error.message } : null,
    trigger: base.trigger,
    requestedBy: base.requestedBy,
    receivedAt: base.receivedAt,
    completedAt,
    attempts: result.attempts,
    ...extra,
  };
}

/**
 * Validates the input, releases the device, and reports exactly one outcome to telemetry. Returns the outcome
 * for the trigger to send (response queue, HTTP response). Throws only {@link RedeliveryRequested}.
 */
export async function processRelease(input: ReleaseInput, deps: ReleaseDeps): Promise<ReleaseResult> {
  const started = deps.clock.now();
  const receivedAt = new Date(started).toISOString();
  const parsed = parseReleaseRequest(input.bodyError ? {} : input.body, input);
  const base = {
    correlationId: parsed.ok ? parsed.request.correlationId : parsed.correlationId,
    machineId: parsed.ok ? parsed.request.machineId : parsed.machineId,
    requestedBy: requesterOf(input, parsed.ok ? parsed.request.requestedBy : parsed.requestedBy),
    trigger: input.trigger,
    receivedAt,
  };

  let outcome: Outcome;
  let failure: UnisolateError | null;
  if (input.bodyError || !parsed.ok) {
    failure =
      input.bodyError ??
      new UnisolateError(
        'InvalidRequest',
        `Invalid request: ${parsed.ok ? '' : parsed.problems.join('; ')}.`,
      );
    outcome = outcomeOf(
      base,
      new Date(deps.clock.now()).toISOString(),
      // Invalid, or Unauthorized for a refused caller: the table decides.
      { status: ERROR_TABLE[failure.code].status, machineAction: null, attempts: 0 },
      failure,
    );
  } else if (parsed.request.devices) {
    // Bulk requests go through processRequest (bulk.ts); reaching here is a wiring mistake.
    failure = new UnisolateError('InvalidRequest', 'Invalid request: this entry point takes one device.');
    outcome = outcomeOf(
      base,
      new Date(deps.clock.now()).toISOString(),
      { status: 'Invalid', machineAction: null, attempts: 0 },
      failure,
    );
  } else {
    const { request } = parsed;
    const calls = callContexts(deps, started + deps.retryBudgetMs[input.trigger], base.correlationId);
    const target =
      request.machineId !== null ? { machineId: request.machineId } : { deviceName: request.deviceName };
    const result = await releaseTarget(target, request, calls, deps);
    failure = result.error;
    outcome = outcomeOf(
      { ...base, machineId: result.machineId },
      new Date(deps.clock.now()).toISOString(),
      result,
      result.error,
      result.extra,
    );
  }

  if (failure && failure.transient && input.canRedeliver) {
    deps.telemetry.trackRedelivery(outcome, input.deliveryCount ?? 0);
    deps.log.warn('Transient failure; the message will be redelivered', {
      correlationId: outcome.correlationId,
      errorCode: failure.code,
      deliveryCount: input.deliveryCount,
    });
    throw new RedeliveryRequested(outcome, failure);
  }
  deps.telemetry.trackOutcome(outcome, deps.clock.now() - started);
  deps.log.info('Release outcome', {
    correlationId: outcome.correlationId,
    machineId: outcome.machineId,
    status: outcome.status,
    errorCode: outcome.error?.code ?? null,
    attempts: outcome.attempts,
  });
  const retryAfterSeconds =
    failure && failure.transient
      ? Math.max(1, Math.ceil((failure.retryAfterMs ?? 30_000) / 1000))
      : undefined;
  return { outcome, retryAfterSeconds };
}
