/**
 * `GET /api/unisolate/{correlationId}` (function key): the recorded release's current phase, status and
 * MachineAction, for ticketing systems that poll instead of reading the response queue. The body is the
 * latest outcome of that release (`phase` `accepted` until its action ends, then `completed`).
 *
 * No clash with `POST /api/unisolate`: the host matches the method and the whole template, and this route
 * has one more segment and only answers GET.
 */
import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { getDependencies } from '../composition';
import { UnisolateError } from '../core/errors';
import { ERROR_TABLE } from '../core/outcome';
import { isReleaseId } from '../core/tracking';

function errorResponse(error: UnisolateError): HttpResponseInit {
  const row = ERROR_TABLE[error.code];
  return {
    status: row.http,
    jsonBody: { error: { code: error.code, message: error.message } },
    headers: {
      'Content-Type': 'application/json; charset=utf-8',
      ...(row.transient ? { 'Retry-After': '30' } : {}),
    },
  };
}

/** Handler of the status route. */
export async function releaseStatus(
  request: HttpRequest,
  context: InvocationContext,
): Promise<HttpResponseInit> {
  const deps = getDependencies();
  const id = request.params.correlationId ?? '';
  if (!isReleaseId(id)) {
    return errorResponse(
      new UnisolateError(
        'InvalidRequest',
        'Invalid request: the correlation id must be 1-128 printable ASCII characters (for one device of a bulk request: <correlationId>:<index>).',
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
  let record;
  try {
    record = await deps.state.store.readRelease(id);
  } catch (error) {
    createLogger(context).warn('Status look-up failed: durable state unavailable', {
      error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
    });
    return errorResponse(
      new UnisolateError(
        'StateUnavailable',
        'The release state store is unavailable right now; retry in a minute.',
      ),
    );
  }
  if (!record) {
    return errorResponse(
      new UnisolateError(
        'ReleaseNotFound',
        `No release with correlation id ${JSON.stringify(id.slice(0, 128))} is recorded. Only releases that MDE accepted are recorded (for a bulk request, ask for <correlationId>:<index>); check the id.`,
      ),
    );
  }
  return {
    status: 200,
    jsonBody: { ...record.outcome, phase: record.phase },
    headers: { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' },
  };
}

app.http('releaseStatus', {
  methods: ['GET'],
  authLevel: 'function',
  route: 'unisolate/{correlationId}',
  handler: releaseStatus,
});
