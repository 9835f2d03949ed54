/**
 * The caller checks of the release routes (app roles with App Service Authentication, signed webhooks), for the
 * GET routes that read what releases recorded or what the deployment is: the status route and the self-test.
 * A GET has no body: with signed webhooks the signature covers `"<timestamp>.GET <path>"` (e.g.
 * `1733390000.GET /api/unisolate/INC0012345`), so a signature serves one look-up of one route, and look-ups of
 * different ids in the same second do not collide in the replay cache.
 */
import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import type { AppDependencies } from '../composition';
import { checkCaller } from '../core/callerChecks';
import { CLIENT_PRINCIPAL_HEADER } from '../core/callerPrincipal';
import type { Logger } from '../core/ports';
import { SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../core/signature';
import { errorResponse } from './errorResponse';

/** What a signed GET signs in place of a body: its method and path. */
export function signedGetContent(request: Pick<HttpRequest, 'method' | 'url'>): string {
  return `${request.method.toUpperCase()} ${new URL(request.url).pathname}`;
}

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
      rawBody: Buffer.from(signedGetContent(request)),
    },
    deps.callers,
    log,
    deps.release.retryBudgetMs.http,
  );
  if (!caller.error) return undefined;
  log.warn(`${what} refused: the caller checks failed`, { errorCode: caller.error.code });
  return errorResponse(caller.error);
}
