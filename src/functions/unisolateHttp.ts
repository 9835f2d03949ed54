/**
 * HTTP triggers: `POST /api/machines/{machineId}/unisolate` (MDE's own shape, so an integration only changes
 * its base URL) and `POST /api/unisolate` (device in the body). Read the request, call the core, map the
 * outcome to a response and a response-queue message.
 */
import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { getDependencies, type CallerChecks } from '../composition';
import { authorizeCaller, CLIENT_PRINCIPAL_HEADER, type CallerPrincipal } from '../core/callerPrincipal';
import { toUnisolateError, UnisolateError } from '../core/errors';
import { parseJson } from '../core/json';
import { httpStatusOf, type Outcome } from '../core/outcome';
import { chooseIdempotencyKey, processReleaseOnce, refusal } from '../core/idempotency';
import { safetyOptions } from '../config';
import { SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../core/signature';
import { responseQueue } from './responseQueue';

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
 */
export async function checkCaller(
  request: HttpRequest,
  rawBody: Buffer,
  checks: CallerChecks | undefined,
  remainingMs?: number,
): Promise<{ principal: CallerPrincipal | null; error?: UnisolateError }> {
  if (!checks) return { principal: null };
  const decision = authorizeCaller(request.headers.get(CLIENT_PRINCIPAL_HEADER), checks.policy);
  if (!decision.ok) return { principal: decision.principal, error: decision.error };
  if (checks.webhookSecret) {
    let keys: string[];
    try {
      keys = await checks.webhookSecret.keys({ remainingMs });
    } catch (error) {
      return { principal: decision.principal, error: toUnisolateError(error) };
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
  try {
    return await handle(request, context);
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
      },
      { ...deps.release, log },
      failure,
    );
    context.extraOutputs.set(responseQueue, outcome);
    return { status: httpStatusOf(outcome), jsonBody: outcome, headers: { 'Retry-After': '30' } };
  }
}

async function handle(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const deps = getDependencies();
  const raw = await readRawBody(request);
  // Who is calling is settled before anything in the body is looked at.
  // The signing key's Key Vault read may take at most the HTTP retry budget (a vault that never answers
  // still ends the request, as SecretUnavailable).
  const caller =
    'bytes' in raw
      ? await checkCaller(request, raw.bytes, deps.callers, deps.release.retryBudgetMs.http)
      : { principal: null };
  const decoded =
    'error' in raw ? raw : caller.error ? { error: caller.error } : decodeBody(request, raw.bytes);
  const read = routeBoundToSignature(decoded, request.params.machineId, deps.callers);
  // Idempotency (issue 6): `Idempotency-Key` header or `idempotencyKey` body field; an unusable key is invalid.
  const chosen =
    'body' in read ? chooseIdempotencyKey(read.body, request.headers.get('idempotency-key')) : null;
  const bodyError = 'error' in read ? read.error : chosen && 'error' in chosen ? chosen.error : undefined;
  const result = await processReleaseOnce(
    {
      body: 'body' in read ? read.body : undefined,
      bodyError,
      caller: caller.principal,
      routeMachineId: request.params.machineId,
      trigger: 'http',
      canRedeliver: false,
    },
    chosen && 'key' in chosen ? chosen.key : undefined,
    { ...deps.release, safety: safetyOptions(deps.config), log: createLogger(context) },
    deps.state,
  );
  const headers: Record<string, string> = { 'Content-Type': 'application/json; charset=utf-8' };
  if (result.retryAfterSeconds !== undefined) headers['Retry-After'] = String(result.retryAfterSeconds);
  if (result.replayed) headers['Idempotent-Replayed'] = 'true';
  // Every request sends its outcome to the response queue, a replay included (marked `replayed`, as on the
  // Service Bus path), so queue consumers see one message per request and can tell repeats apart.
  const mark = (o: Outcome): Outcome => (result.replayed ? { ...o, replayed: true } : o);
  if (result.kind === 'bulk') {
    // An array output binding sends one response-queue message per element: one per device.
    context.extraOutputs.set(responseQueue, result.outcomes.map(mark));
    // 207 Multi-Status: each element carries its own status (and error).
    return { status: 207, jsonBody: result.outcomes, headers };
  }
  context.extraOutputs.set(responseQueue, mark(result.outcome));
  return { status: httpStatusOf(result.outcome), jsonBody: result.outcome, headers };
}

app.http('unisolateMachine', {
  methods: ['POST'],
  authLevel: 'function',
  route: 'machines/{machineId}/unisolate',
  extraOutputs: [responseQueue],
  handler: unisolateHttp,
});

app.http('unisolate', {
  methods: ['POST'],
  authLevel: 'function',
  route: 'unisolate',
  extraOutputs: [responseQueue],
  handler: unisolateHttp,
});
