/**
 * `GET /api/selftest` (function key, and the caller checks of the release routes): proves the deployment
 * (settings, Key Vault, the MDE app's token and permissions, the Defender API, state table, queues,
 * telemetry). 200 when every check passes, 503 otherwise; the body lists each check with what it found and
 * what to do. Never a secret, a token or a setting's value. A GET within `SELF_TEST_REUSE_MS` of the last run
 * on this instance gets that run's report, with its `Age` in seconds.
 */
import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { getDependencies, requestedSelfTest } from '../composition';
import { refuseGetCaller } from './getCaller';

/** Handler of the self-test route. */
export async function selfTestHttp(
  request: HttpRequest,
  context: InvocationContext,
): Promise<HttpResponseInit> {
  const deps = getDependencies();
  const log = createLogger(context);
  // The report describes the deployment (names, roles, versions): the same callers as a release may read it.
  const refusal = await refuseGetCaller(request, deps, log, 'Self-test');
  if (refusal) return refusal;
  const { report, ageMs } = await requestedSelfTest(deps, log);
  return {
    status: report.ok ? 200 : 503,
    jsonBody: report,
    headers: {
      'Content-Type': 'application/json; charset=utf-8',
      'Cache-Control': 'no-store',
      ...(ageMs > 0 ? { Age: String(Math.floor(ageMs / 1000)) } : {}),
    },
  };
}

app.http('selfTest', {
  methods: ['GET'],
  authLevel: 'function',
  route: 'selftest',
  handler: selfTestHttp,
});
