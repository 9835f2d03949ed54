/**
 * HTTP triggers: `POST /api/machines/{machineId}/unisolate` (MDE's own shape, so an integration only changes
 * its base URL) and `POST /api/unisolate` (device in the body). Read the request, call the core, map the
 * outcome to a response and a response-queue message.
 */
import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { getDependencies } from '../composition';
import { UnisolateError } from '../core/errors';
import { parseJson } from '../core/json';
import { httpStatusOf } from '../core/outcome';
import { processRelease } from '../core/releaseDevice';
import { responseQueue } from './responseQueue';

/** Largest accepted body: a release request is a few hundred bytes. */
export const MAX_BODY_BYTES = 64 * 1024;

const JSON_TYPE = /^(application\/(?:[\w.+-]+\+)?json|text\/json)\s*(;|$)/i;

/** Reads and decodes the body, or says why it cannot be used. */
export async function readBody(request: HttpRequest): Promise<{ body: unknown } | { error: UnisolateError }> {
  const declared = Number(request.headers.get('content-length') ?? '0');
  if (declared > MAX_BODY_BYTES) {
    return {
      error: new UnisolateError(
        'RequestTooLarge',
        `The body is larger than ${MAX_BODY_BYTES} bytes; a release request is a small JSON object.`,
      ),
    };
  }
  const text = await request.text();
  if (Buffer.byteLength(text) > MAX_BODY_BYTES) {
    return {
      error: new UnisolateError(
        'RequestTooLarge',
        `The body is larger than ${MAX_BODY_BYTES} bytes; a release request is a small JSON object.`,
      ),
    };
  }
  const contentType = request.headers.get('content-type') ?? '';
  if (!JSON_TYPE.test(contentType.trim())) {
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

/** Handler of both HTTP routes. */
export async function unisolateHttp(
  request: HttpRequest,
  context: InvocationContext,
): Promise<HttpResponseInit> {
  const deps = getDependencies();
  const read = await readBody(request);
  const { outcome, retryAfterSeconds } = await processRelease(
    {
      body: 'body' in read ? read.body : undefined,
      bodyError: 'error' in read ? read.error : undefined,
      routeMachineId: request.params.machineId,
      trigger: 'http',
      canRedeliver: false,
    },
    { ...deps.release, log: createLogger(context) },
  );
  context.extraOutputs.set(responseQueue, outcome);
  const headers: Record<string, string> = { 'Content-Type': 'application/json; charset=utf-8' };
  if (retryAfterSeconds !== undefined) headers['Retry-After'] = String(retryAfterSeconds);
  return { status: httpStatusOf(outcome), jsonBody: outcome, headers };
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
