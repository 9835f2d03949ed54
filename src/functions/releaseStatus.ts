/**
 * `GET /api/unisolate/{correlationId}` (function key, and the caller checks of the release routes: the
 * records name devices and who released them): every release recorded under a correlation id (each
 * device of each request with that id), for ticketing systems that poll instead of reading the response
 * queue: `{"correlationId", "releases": [...]}`, each the release's latest outcome (`phase` `queued` while
 * parked, `accepted` until its action ends, then `completed`).
 *
 * No clash with `POST /api/unisolate`: the host matches the method and the whole template, and this route
 * has one more segment and only answers GET.
 */
import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { getDependencies } from '../composition';
import { UnisolateError } from '../core/errors';
import { latestOutcome } from '../core/records';
import { isCorrelationId, REQUEST_FIELDS } from '../core/request';
import { errorResponse } from './errorResponse';
import { refuseGetCaller } from './getCaller';

/** Handler of the status route. */
export async function releaseStatus(
  request: HttpRequest,
  context: InvocationContext,
): Promise<HttpResponseInit> {
  const deps = getDependencies();
  const log = createLogger(context);
  const refusal = await refuseGetCaller(request, deps, log, 'Status look-up');
  if (refusal) return refusal;
  const id = request.params.correlationId ?? '';
  if (!isCorrelationId(id)) {
    return errorResponse(
      new UnisolateError(
        'InvalidRequest',
        `Invalid request: the correlation id must be ${REQUEST_FIELDS.correlationId.rule}.`,
      ),
    );
  }
  if (!deps.state) {
    return errorResponse(
      new UnisolateError(
        'StateUnavailable',
        'Release tracking is not configured on this app (set STATE_TABLE_URL); the status of a release is only in the response queue.',
      ),
    );
  }
  let records;
  try {
    records = await deps.state.store.readReleases(id);
  } catch (error) {
    log.warn('Status look-up failed: durable state unavailable', {
      error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
    });
    return errorResponse(
      new UnisolateError(
        'StateUnavailable',
        'The release state store is unavailable right now; retry in a minute.',
      ),
    );
  }
  // In the order they arrived, each request's devices in index order.
  const releases = records
    .map((r) => ({ receivedAt: r.value.ask.receivedAt, outcome: latestOutcome(r.value) }))
    .filter((r) => r.outcome !== null)
    .sort((a, b) => a.receivedAt - b.receivedAt)
    .map((r) => r.outcome);
  if (releases.length === 0) {
    return errorResponse(
      new UnisolateError(
        'ReleaseNotFound',
        `No release with correlation id ${JSON.stringify(id)} is recorded (records are kept for the longest of IDEMPOTENCY_WINDOW_HOURS, TRACK_MAX_HOURS and QUEUE_MAX_HOURS); check the id.`,
      ),
    );
  }
  return {
    status: 200,
    jsonBody: { correlationId: id, releases },
    headers: { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' },
  };
}

app.http('releaseStatus', {
  methods: ['GET'],
  authLevel: 'function',
  route: 'unisolate/{correlationId}',
  handler: releaseStatus,
});
