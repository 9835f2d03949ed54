/**
 * HTTP triggers: `POST /api/machines/{machineId}/unisolate` (MDE's own shape, so an integration only changes
 * its base URL) and `POST /api/unisolate` (device in the body). Read the request, call the core, map the
 * outcome to a response and a response-queue message.
 */
import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { getDependencies, type CallerChecks } from '../composition';
import { authorizeCaller, CLIENT_PRINCIPAL_HEADER, type CallerPrincipal } from '../core/callerPrincipal';
import { misconfigured, toUnisolateError, UnisolateError } from '../core/errors';
import { parseJson } from '../core/json';
import { httpStatusOf } from '../core/outcome';
import type { Logger } from '../core/ports';
import { chooseIdempotencyKey } from '../core/idempotency';
import { handleRequest, refusal, type RequestAnswer } from '../core/pipeline';
import { safetyOptions } from '../config';
import { SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../core/signature';
import { requestQueue, responseQueue } from './queues';

/** Largest accepted body: a release request is a few hundred bytes. */
export const MAX_BODY_BYTES = 64 * 1024;

const JSON_TYPE = /^(application\/(?:[\w.+-]+\+)?json|text\/json)\s*(;|$)/i;
/**
 * What a fetch `Request` (which `HttpRequest` wraps) reports for a string body sent without a Content-Type.
 * It says nothing about the caller, so like a missing header it means "undeclared": the body must then
 * parse as JSON. Any other declared non-JSON type is refused with 415.
 */
const UNDECLARED_TYPE = 'text/plain;charset=UTF-8';

/** Reads the raw body bytes, or says they are too large. */
export async function readRawBody(
  request: HttpRequest,
): Promise<{ bytes: Buffer } | { error: UnisolateError }> {
  const tooLarge = (): { error: UnisolateError } => ({
    error: new UnisolateError(
      'RequestTooLarge',
      `The body is larger than ${MAX_BODY_BYTES} bytes; a release request is a small JSON object.`,
    ),
  });
  const declared = Number(request.headers.get('content-length') ?? '0');
  if (declared > MAX_BODY_BYTES) return tooLarge();
  const bytes = Buffer.from(await request.arrayBuffer());
  if (bytes.length > MAX_BODY_BYTES) return tooLarge();
  return { bytes };
}

/** Checks the content type and decodes the JSON body, or says why it cannot be used. */
export function decodeBody(
  request: HttpRequest,
  bytes: Buffer,
): { body: unknown } | { error: UnisolateError } {
  const text = bytes.toString('utf8');
  const contentType = request.headers.get('content-type') ?? '';
  if (contentType !== UNDECLARED_TYPE && contentType !== '' && !JSON_TYPE.test(contentType.trim())) {
    return {
      error: new UnisolateError(
        'UnsupportedMediaType',
        `The body must be JSON: send the header Content-Type: application/json${contentType ? ` (got ${JSON.stringify(contentType.slice(0, 80))})` : ''}.`,
      ),
    };
  }
  if (text.trim() === '') {
    return {
      error: new UnisolateError(
        'InvalidRequest',
        'Invalid request: the body is empty; send {"comment": "..."} (and "machineId" for /api/unisolate).',
      ),
    };
  }
  const parsed = parseJson(text);
  if (!parsed.ok)
    return { error: new UnisolateError('InvalidRequest', `Invalid request: ${parsed.message}.`) };
  return { body: parsed.value };
}

/**
 * The caller checks beyond the function key (docs/security.md), before the body is parsed: the Entra ID
 * app role (App Service Authentication's `X-MS-CLIENT-PRINCIPAL`), then the webhook signature over the raw
 * bytes. Returns the authenticated principal (for `requestedBy`) and, when refused, why. Never throws.
 *
 * Fails closed: when the checks' own settings are invalid, or the signing key cannot be used, the request is
 * refused. The caller is not authenticated at that point, so it learns only that the service is
 * misconfigured (or the key unavailable); the details go to the log.
 */
export async function checkCaller(
  request: HttpRequest,
  rawBody: Buffer,
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
  const decision = authorizeCaller(request.headers.get(CLIENT_PRINCIPAL_HEADER), checks.policy);
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
      {
        timestamp: request.headers.get(TIMESTAMP_HEADER),
        signature: request.headers.get(SIGNATURE_HEADER),
        rawBody,
      },
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
  read: { body: unknown } | { error: UnisolateError },
  routeMachineId: string | undefined,
  checks: CallerChecks | undefined,
): { body: unknown } | { error: UnisolateError } {
  if (!('body' in read) || routeMachineId === undefined || !checks?.webhookSecret) return read;
  const body = read.body;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return read;
  const named = Object.entries(body).some(
    ([key, value]) => key.toLowerCase() === 'machineid' && value != null,
  );
  if (named) return read;
  return {
    error: new UnisolateError(
      'SignatureInvalid',
      'The request signature was rejected: the signature covers the body, not the URL, so with signed webhooks send "machineId" in the body too (equal to the machine id in the URL).',
    ),
  };
}

/** Handler of both HTTP routes. */
export async function unisolateHttp(
  request: HttpRequest,
  context: InvocationContext,
): Promise<HttpResponseInit> {
  // Who called, once known: the last-resort outcome records it like every other outcome.
  const seen: { caller: CallerPrincipal | null } = { caller: null };
  try {
    return await handle(request, context, seen);
  } catch (error) {
    // Last resort: a bug must still end in one outcome (502 InternalError), never a bare 500 from the host.
    const failure = toUnisolateError(error);
    const log = createLogger(context);
    log.error('Unexpected error in the HTTP trigger', {
      error: error instanceof Error ? error.name : 'unknown',
    });
    const deps = getDependencies();
    const outcome = refusal(
      {
        body: undefined,
        bodyError: failure,
        routeMachineId: request.params.machineId,
        trigger: 'http',
        canRedeliver: false,
        caller: seen.caller,
      },
      { ...deps.release, log },
      failure,
    );
    context.extraOutputs.set(responseQueue, outcome);
    return { status: httpStatusOf(outcome), jsonBody: outcome, headers: { 'Retry-After': '30' } };
  }
}

async function handle(
  request: HttpRequest,
  context: InvocationContext,
  seen: { caller: CallerPrincipal | null },
): Promise<HttpResponseInit> {
  const deps = getDependencies();
  const log = createLogger(context);
  const raw = await readRawBody(request);
  // Who is calling is settled before anything in the body is looked at.
  // The signing key's Key Vault read may take at most the HTTP retry budget (a vault that never answers
  // still ends the request, as SecretUnavailable).
  const caller =
    'bytes' in raw
      ? await checkCaller(request, raw.bytes, deps.callers, log, deps.release.retryBudgetMs.http)
      : { principal: null };
  seen.caller = caller.principal;
  const decoded =
    'error' in raw ? raw : caller.error ? { error: caller.error } : decodeBody(request, raw.bytes);
  const read = routeBoundToSignature(decoded, request.params.machineId, deps.callers);
  // Idempotency: `Idempotency-Key` header or `idempotencyKey` body field; an unusable key is invalid.
  const chosen =
    'body' in read ? chooseIdempotencyKey(read.body, request.headers.get('idempotency-key')) : null;
  const bodyError = 'error' in read ? read.error : chosen && 'error' in chosen ? chosen.error : undefined;
  const answer = await handleRequest(
    {
      body: 'body' in read ? read.body : undefined,
      bodyError,
      caller: caller.principal,
      routeMachineId: request.params.machineId,
      trigger: 'http',
      canRedeliver: false,
      ...(chosen && 'key' in chosen && chosen.key !== undefined ? { key: chosen.key } : {}),
    },
    { ...deps.release, safety: safetyOptions(deps.config), log, state: deps.state },
  );
  // Every request sends its outcomes to the response queue (an array: one message per device), a replay
  // included (marked `replayed`), so queue consumers see every answer and can tell repeats apart.
  context.extraOutputs.set(responseQueue, answer.messages);
  if (answer.resume.length > 0) context.extraOutputs.set(requestQueue, answer.resume);
  return httpAnswer(answer, request);
}

/** The HTTP response for the pipeline's answer. */
function httpAnswer(answer: RequestAnswer, request: HttpRequest): HttpResponseInit {
  const headers: Record<string, string> = { 'Content-Type': 'application/json; charset=utf-8' };
  if (answer.retryAfterSeconds !== undefined) headers['Retry-After'] = String(answer.retryAfterSeconds);
  if (answer.replayed) headers['Idempotent-Replayed'] = 'true';
  if (answer.kind === 'bulk') {
    // 207 Multi-Status: each element carries its own status (and error).
    return { status: 207, jsonBody: answer.outcomes, headers };
  }
  const outcome = answer.outcomes[0]!;
  if (outcome.status === 'Queued') {
    // Accepted for later: where to follow it.
    headers.Location = new URL(
      `/api/unisolate/${encodeURIComponent(outcome.correlationId)}`,
      request.url,
    ).toString();
  }
  return { status: httpStatusOf(outcome), jsonBody: outcome, headers };
}

app.http('unisolateMachine', {
  methods: ['POST'],
  authLevel: 'function',
  route: 'machines/{machineId}/unisolate',
  extraOutputs: [responseQueue, requestQueue],
  handler: unisolateHttp,
});

app.http('unisolate', {
  methods: ['POST'],
  authLevel: 'function',
  route: 'unisolate',
  extraOutputs: [responseQueue, requestQueue],
  handler: unisolateHttp,
});
