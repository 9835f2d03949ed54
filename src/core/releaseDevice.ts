/**
 * The release use case: one validated request in, one outcome out. Both triggers call
 * {@link processRelease}; neither holds business logic.
 */
import { callMde, type CallContext } from './callMde';
import { toUnisolateError, UnisolateError } from './errors';
import type { MachineAction, Outcome, OutcomeStatus, Trigger } from './outcome';
import { ERROR_TABLE } from './outcome';
import type { Clock, DefenderApi, Logger, Telemetry } from './ports';
import type { RateLimiter } from './rateLimiter';
import { parseReleaseRequest, type ReleaseRequest, type RequestContext } from './request';

/** Dependencies of the core, built once per cold start by the composition root. */
export interface ReleaseDeps {
  defender: DefenderApi;
  limiter: RateLimiter;
  clock: Clock;
  random: () => number;
  telemetry: Telemetry;
  log: Logger;
  requestTimeoutMs: number;
  /** Retry budget per trigger (ms). */
  retryBudgetMs: Record<Trigger, number>;
  /** Host name of the Defender API, for dependency telemetry. */
  apiHost: string;
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

function isMachineAction(body: unknown): body is MachineAction {
  return (
    typeof body === 'object' &&
    body !== null &&
    typeof (body as { id?: unknown }).id === 'string' &&
    typeof (body as { status?: unknown }).status === 'string'
  );
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
    // machineId is validated hex: safe inside an OData string literal.
    const filter = `machineId eq '${machineId}' and type eq 'Unisolate'`;
    const { response } = await callMde(ctx, 'the look-up of the pending action', (o) =>
      ctx.defender.listMachineActions(filter, o),
    );
    const value = (response.body as { value?: unknown } | null)?.value;
    if (response.status !== 200 || !Array.isArray(value)) return null;
    const pending = value
      .filter(isMachineAction)
      .filter((a) => a.status === 'Pending' || a.status === 'InProgress')
      .sort((a, b) => (b.creationDateTimeUtc ?? '').localeCompare(a.creationDateTimeUtc ?? ''));
    return pending[0] ?? null;
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
  request: ReleaseRequest,
  ctx: CallContext,
  log: Logger,
): Promise<Released> {
  const { response, attempts } = await callMde(ctx, 'the release', (o) =>
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

function outcomeOf(
  base: Pick<Outcome, 'correlationId' | 'machineId' | 'trigger' | 'requestedBy' | 'receivedAt'>,
  completedAt: string,
  result: { status: OutcomeStatus; machineAction: MachineAction | null; attempts: number },
  error: UnisolateError | null,
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
    requestedBy: parsed.ok ? parsed.request.requestedBy : parsed.requestedBy,
    trigger: input.trigger,
    receivedAt,
  };

  let outcome: Outcome;
  let failure: UnisolateError | null = null;
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
      { status: 'Invalid', machineAction: null, attempts: 0 },
      failure,
    );
  } else {
    const ctx: CallContext = {
      defender: deps.defender,
      limiter: deps.limiter,
      clock: deps.clock,
      random: deps.random,
      deadline: started + deps.retryBudgetMs[input.trigger],
      requestTimeoutMs: deps.requestTimeoutMs,
      onAttempt: (a) =>
        deps.telemetry.trackDependency({
          name: 'POST /api/machines/{id}/unisolate',
          target: deps.apiHost,
          resultCode: a.status,
          success: a.success,
          durationMs: a.durationMs,
          correlationId: base.correlationId,
        }),
    };
    try {
      const released = await releaseDevice(parsed.request, ctx, deps.log);
      outcome = outcomeOf(base, new Date(deps.clock.now()).toISOString(), released, null);
    } catch (error) {
      failure = toUnisolateError(error);
      if (failure.code === 'InternalError') {
        deps.log.error('Unexpected error during a release', {
          correlationId: base.correlationId,
          error: String(error),
        });
      }
      const status = ERROR_TABLE[failure.code].status;
      outcome = outcomeOf(
        base,
        new Date(deps.clock.now()).toISOString(),
        { status, machineAction: null, attempts: failure.options.attempts ?? 0 },
        failure,
      );
    }
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
