/**
 * The HTTP answer of a request refused before any release: `{"error": {"code", "message"}}` with the status
 * `ERROR_TABLE` gives the code, and `Retry-After` when it is transient. For the routes that answer something
 * other than release outcomes (`GET /api/unisolate/{correlationId}`, `GET /api/selftest`).
 */
import type { HttpResponseInit } from '@azure/functions';
import type { UnisolateError } from '../core/errors';
import { ERROR_TABLE } from '../core/outcome';

/** The response for `error`. */
export function errorResponse(error: UnisolateError): HttpResponseInit {
  const row = ERROR_TABLE[error.code];
  return {
    status: row.http,
    jsonBody: { error: { code: error.code, message: error.message } },
    headers: {
      'Content-Type': 'application/json; charset=utf-8',
      ...(row.transient ? { 'Retry-After': String(Math.ceil((error.retryAfterMs ?? 30_000) / 1000)) } : {}),
    },
  };
}
