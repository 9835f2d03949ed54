/**
 * Who may release devices over HTTP, beyond the function key (docs/security.md): the Entra ID app role
 * (App Service Authentication's `X-MS-CLIENT-PRINCIPAL`, `callerPrincipal.ts`) and the webhook signature over
 * the raw body (`signature.ts`). Settled before anything in the body is looked at.
 */
import { authorizeCaller, type CallerPolicy, type CallerPrincipal } from './callerPrincipal';
import { misconfigured, toUnisolateError, UnisolateError } from './errors';
import type { Logger } from './ports';
import type { SignatureVerifier } from './signature';
import type { Decoded } from './decode';

/** The caller checks of this app, from the settings. */
export interface CallerChecks {
  /**
   * Present when the caller-check settings themselves are invalid: the problems (with values, for the log).
   * The checks cannot be trusted then, so every HTTP release is refused (fail closed).
   */
  misconfigured?: readonly string[];
  policy: CallerPolicy;
  /** Present when WEBHOOK_SIGNING_SECRET_NAME is set: every request must then be signed. */
  webhookSecret?: { keys(options?: { remainingMs?: number }): Promise<string[]> };
  /** Verifier with this instance's replay cache. */
  signatures: Pick<SignatureVerifier, 'verify'>;
}

/** What the caller checks read of an HTTP request. */
export interface CallerEvidence {
  /** `X-MS-CLIENT-PRINCIPAL`. */
  principal: string | null;
  /** `X-Unisolate-Timestamp`, `X-Unisolate-Signature`. */
  timestamp: string | null;
  signature: string | null;
  rawBody: Buffer;
}

/**
 * Checks the caller: returns the authenticated principal (for `requestedBy`) and, when refused, why. Never
 * throws. Fails closed: when the checks' own settings are invalid, or the signing key cannot be used, the
 * request is refused; the caller is not authenticated at that point, so it learns only that the service is
 * misconfigured (or the key unavailable), and the details go to the log.
 * @param remainingMs - how long the signing key's Key Vault read may take (the request's budget)
 */
export async function checkCaller(
  evidence: CallerEvidence,
  checks: CallerChecks | undefined,
  log: Logger,
  remainingMs?: number,
): Promise<{ principal: CallerPrincipal | null; error?: UnisolateError }> {
  if (!checks) return { principal: null };
  if (checks.misconfigured) {
    log.error('Caller-check settings are invalid; every HTTP release is refused until they are fixed', {
      problems: checks.misconfigured,
    });
    return { principal: null, error: misconfigured() };
  }
  const decision = authorizeCaller(evidence.principal, checks.policy);
  if (!decision.ok) {
    if (decision.error.code !== 'ConfigurationError') return decision;
    log.error('Caller checks misconfigured; every HTTP release is refused', {
      problem: decision.error.message,
    });
    return { principal: decision.principal, error: misconfigured() };
  }
  if (checks.webhookSecret) {
    let keys: string[];
    try {
      keys = await checks.webhookSecret.keys({ remainingMs });
    } catch (error) {
      // The reader's messages name the Key Vault secret (a setting's value): logged, not answered.
      const failure = toUnisolateError(error);
      log.error('The webhook signing key could not be read; the request is refused', {
        errorCode: failure.code,
        error: failure.message,
      });
      return {
        principal: decision.principal,
        error:
          failure.code === 'ConfigurationError'
            ? misconfigured()
            : new UnisolateError(
                failure.code,
                'The request signature cannot be checked right now (the signing key is unavailable). Retry later.',
                { retryAfterMs: failure.retryAfterMs },
              ),
      };
    }
    const check = checks.signatures.verify(
      { timestamp: evidence.timestamp, signature: evidence.signature, rawBody: evidence.rawBody },
      keys,
    );
    if (!check.ok) {
      return {
        principal: decision.principal,
        error: new UnisolateError('SignatureInvalid', `The request signature was rejected: ${check.reason}.`),
      };
    }
  }
  return { principal: decision.principal };
}

/**
 * The signature covers the body, not the URL: with signed webhooks, `POST /api/machines/{machineId}/unisolate`
 * must also name the device in the (signed) body, so a captured request cannot be pointed at another device.
 * (A body value that differs from the route is rejected by the request parser.)
 */
export function routeBoundToSignature(
  decoded: Decoded,
  routeMachineId: string | undefined,
  checks: CallerChecks | undefined,
): Decoded {
  if (!('body' in decoded) || routeMachineId === undefined || !checks?.webhookSecret) return decoded;
  const body = decoded.body;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return decoded;
  const named = Object.entries(body).some(
    ([key, value]) => key.toLowerCase() === 'machineid' && value != null,
  );
  if (named) return decoded;
  return {
    error: new UnisolateError(
      'SignatureInvalid',
      'The request signature was rejected: the signature covers the body, not the URL, so with signed webhooks send "machineId" in the body too (equal to the machine id in the URL).',
    ),
  };
}
