/**
 * The caller checks of the release routes (app roles with App Service Authentication, signed webhooks), for the
 * GET routes that read what releases recorded or what the deployment is: the status route and the self-test.
 * A GET has no body, so with signed webhooks the signature covers "<timestamp>." alone; the fresh timestamp and
 * the replay cache keep it from being reused, and there is nothing else in the request to bind.
 */
import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import type { AppDependencies } from '../composition';
import { checkCaller } from '../core/callerChecks';
import { CLIENT_PRINCIPAL_HEADER } from '../core/callerPrincipal';
import type { Logger } from '../core/ports';
import { SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../core/signature';
import { errorResponse } from './errorResponse';

/**
 * Runs the caller checks for a GET of `what` (for the log).
 * @returns the refusal to answer with, or undefined when the caller may proceed
 */
export async function refuseGetCaller(
  request: HttpRequest,
  deps: AppDependencies,
  log: Logger,
  what: string,
): Promise<HttpResponseInit | undefined> {
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
  if (!caller.error) return undefined;
  log.warn(`${what} refused: the caller checks failed`, { errorCode: caller.error.code });
  return errorResponse(caller.error);
}
