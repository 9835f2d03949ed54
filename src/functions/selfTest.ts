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
import { checkCaller } from '../core/callerChecks';
import { CLIENT_PRINCIPAL_HEADER } from '../core/callerPrincipal';
import { SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../core/signature';
import { errorResponse } from './errorResponse';

/** Handler of the self-test route. */
export async function selfTestHttp(
  request: HttpRequest,
  context: InvocationContext,
): Promise<HttpResponseInit> {
  const deps = getDependencies();
  const log = createLogger(context);
  // The report describes the deployment (names, roles, versions): the same callers as a release may read it.
  // A GET has no body, so with signed webhooks the signature covers "<timestamp>." alone; the fresh timestamp
  // and the replay cache keep it from being reused, and there is nothing else in the request to bind.
  const caller = await checkCaller(
    {
      principal: request.headers.get(CLIENT_PRINCIPAL_HEADER),
      timestamp: request.headers.get(TIMESTAMP_HEADER),
      signature: request.headers.get(SIGNATURE_HEADER),
      rawBody: Buffer.alloc(0),
    },
    deps.callers,
    log,
    deps.release.retryBudgetMs.http,
  );
  if (caller.error) {
    log.warn('Self-test refused: the caller checks failed', { errorCode: caller.error.code });
    return errorResponse(caller.error);
  }
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
