/**
 * `GET /api/selftest` (function key): proves the deployment (settings, Key Vault, the MDE app's token and
 * permissions, the Defender API, state table, queues, telemetry). 200 when every check passes, 503
 * otherwise; the body lists each check with what it found and what to do. Never a secret or a token.
 */
import { app, type HttpResponseInit } from '@azure/functions';
import { getDependencies, selfTestOf } from '../composition';

/** Handler of the self-test route. */
export async function selfTestHttp(): Promise<HttpResponseInit> {
  const report = await selfTestOf(getDependencies(), { readDefender: true });
  return {
    status: report.ok ? 200 : 503,
    jsonBody: report,
    headers: { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' },
  };
}

app.http('selfTest', {
  methods: ['GET'],
  authLevel: 'function',
  route: 'selftest',
  handler: selfTestHttp,
});
