/**
 * Many devices per request (`"devices": [...]`, 1-100): one outcome per device, each with the request's
 * `correlationId` and its `index`. Devices are released by a few workers sharing the instance's rate limiter,
 * so the whole bulk is paced by MDE's budget (100 calls/minute); one device's failure never stops the others.
 *
 * Service Bus: when a device fails transiently and the message can still be redelivered, the whole message is
 * handed back (no outcome is sent for this delivery, so each device still gets exactly one outcome message).
 * A redelivery always checks each device's isolation state first, whatever `CHECK_ISOLATION_STATE` says: a
 * device the earlier delivery already released shows a Pending/InProgress Unisolate (→ `AlreadyInProgress`,
 * with that action, no second release) or a Succeeded one (→ `NotIsolated`), so no device is released twice.
 */
import type { UnisolateError } from './errors';
import type { Outcome, Trigger } from './outcome';
import {
  callContexts,
  outcomeOf,
  processRelease,
  RedeliveryRequested,
  releaseTarget,
  requesterOf,
  type ReleaseDeps,
  type ReleaseInput,
} from './releaseDevice';
import { parseReleaseRequest, type DeviceTarget, type ReleaseRequest } from './request';

/** What a trigger gets back: one outcome, or (bulk) one per device in request order. */
export type RequestResult =
  | { kind: 'single'; outcome: Outcome; retryAfterSeconds: number | undefined }
  | { kind: 'bulk'; outcomes: Outcome[]; retryAfterSeconds: number | undefined };

/** Devices released at the same time: enough to hide call latency, few enough to stay gentle with MDE. */
export const BULK_CONCURRENCY = 4;

/**
 * Longest a bulk may run. HTTP: under the 230 s front-end timeout of Azure Functions HTTP triggers
 * (https://learn.microsoft.com/en-us/azure/azure-functions/functions-scale#timeout); Service Bus: under the
 * default 5-minute message-lock auto-renewal. Devices whose calls do not fit answer `Throttled`.
 */
/** MDE's shortest rate window (100 calls per minute). */
const RATE_WINDOW_MS = 60_000;

export const BULK_CAP_MS: Readonly<Record<Trigger, number>> = { http: 200_000, serviceBus: 240_000 };

/**
 * Entry point of both triggers: a bulk request goes to {@link processBulk}, anything else (including an
 * invalid request) to `processRelease`. Throws only `RedeliveryRequested`.
 */
export async function processRequest(input: ReleaseInput, deps: ReleaseDeps): Promise<RequestResult> {
  if (!input.bodyError) {
    const parsed = parseReleaseRequest(input.body, input);
    if (parsed.ok && parsed.request.devices) {
      return processBulk(input, parsed.request, parsed.request.devices, deps);
    }
  }
  return { kind: 'single', ...(await processRelease(input, deps)) };
}

/** Releases every device of a validated bulk request; see the module comment for redelivery. */
export async function processBulk(
  input: ReleaseInput,
  request: ReleaseRequest,
  devices: readonly DeviceTarget[],
  deps: ReleaseDeps,
): Promise<RequestResult> {
  const started = deps.clock.now();
  const receivedAt = new Date(started).toISOString();
  const cap = started + BULK_CAP_MS[input.trigger];
  const requestedBy = requesterOf(input, request.requestedBy);
  const redelivered = input.trigger === 'serviceBus' && (input.deliveryCount ?? 1) > 1;
  const outcomes: Outcome[] = new Array<Outcome>(devices.length);
  const errors: (UnisolateError | null)[] = new Array<UnisolateError | null>(devices.length).fill(null);

  let next = 0;
  const worker = async (): Promise<void> => {
    for (let index = next++; index < devices.length; index = next++) {
      const target = devices[index]!;
      // Each device gets the usual retry budget from when it starts, plus one rate-limit window to wait for
      // its turn (a bulk spends more than a minute's calls), within the bulk's cap.
      const deadline = Math.min(cap, deps.clock.now() + deps.retryBudgetMs[input.trigger] + RATE_WINDOW_MS);
      const calls = callContexts(deps, deadline, request.correlationId);
      const result = await releaseTarget(target, request, calls, deps, redelivered);
      errors[index] = result.error;
      outcomes[index] = outcomeOf(
        {
          correlationId: request.correlationId,
          machineId: result.machineId,
          trigger: input.trigger,
          requestedBy,
          receivedAt,
        },
        new Date(deps.clock.now()).toISOString(),
        result,
        result.error,
        { ...result.extra, index },
      );
    }
  };
  await Promise.all(Array.from({ length: Math.min(BULK_CONCURRENCY, devices.length) }, worker));

  const transient = errors
    .map((error, index) => ({ error, index }))
    .filter((e): e is { error: UnisolateError; index: number } => e.error !== null && e.error.transient);
  const first = transient[0];
  if (first && input.canRedeliver) {
    const outcome = outcomes[first.index]!;
    deps.telemetry.trackRedelivery(outcome, input.deliveryCount ?? 0);
    deps.log.warn('Transient failure in a bulk request; the message will be redelivered', {
      correlationId: request.correlationId,
      devices: devices.length,
      transientFailures: transient.length,
      errorCode: first.error.code,
      deliveryCount: input.deliveryCount,
    });
    throw new RedeliveryRequested(outcome, first.error);
  }
  for (const outcome of outcomes) deps.telemetry.trackOutcome(outcome, deps.clock.now() - started);
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o.status] = (counts[o.status] ?? 0) + 1;
  deps.log.info('Bulk release outcomes', {
    correlationId: request.correlationId,
    devices: devices.length,
    counts,
  });
  const retryAfterSeconds =
    transient.length > 0
      ? Math.max(...transient.map((t) => Math.max(1, Math.ceil((t.error.retryAfterMs ?? 30_000) / 1000))))
      : undefined;
  return { kind: 'bulk', outcomes, retryAfterSeconds };
}
