/**
 * `GET /api/openapi.json` (anonymous): the OpenAPI description of the HTTP API. It holds no secrets and no
 * host-specific data beyond the request's own origin.
 */
import { app, type HttpRequest, type HttpResponseInit } from '@azure/functions';
import { buildOpenApi } from '../core/openapi';

let cached: { origin: string; body: string } | undefined;

/** Handler: the document, with the caller's origin as server URL. */
export async function openApiHandler(request: HttpRequest): Promise<HttpResponseInit> {
  const origin = new URL(request.url).origin;
  if (cached?.origin !== origin) cached = { origin, body: JSON.stringify(buildOpenApi(origin), null, 2) };
  return {
    status: 200,
    body: cached.body,
    headers: { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'public, max-age=300' },
  };
}

app.http('openapi', {
  methods: ['GET'],
  authLevel: 'anonymous',
  route: 'openapi.json',
  handler: openApiHandler,
});
