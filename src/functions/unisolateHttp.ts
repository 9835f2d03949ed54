/**
 * HTTP triggers: `POST /api/machines/{machineId}/unisolate` (MDE's own shape, so an integration only changes
 * its base URL) and `POST /api/unisolate` (device in the body). Reads the request, hands it to the pipeline
 * (`handleHttp`), and writes the answer: the response, the response-queue messages (one per device, replays
 * marked `replayed`) and any release handed back to the request queue.
 */
import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { getDependencies, pipelineDeps } from '../composition';
import { CLIENT_PRINCIPAL_HEADER } from '../core/callerPrincipal';
import { MAX_BODY_BYTES } from '../core/decode';
import { httpStatusOf } from '../core/outcome';
import { handleHttp, type RequestAnswer } from '../core/pipeline';
import { SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../core/signature';
import { requestQueue, responseQueue } from './queues';

/** The raw body, or 'tooLarge' without reading more than the cap allows. */
async function readBody(request: HttpRequest): Promise<Buffer | 'tooLarge'> {
  if (Number(request.headers.get('content-length') ?? '0') > MAX_BODY_BYTES) return 'tooLarge';
  const bytes = Buffer.from(await request.arrayBuffer());
  return bytes.length > MAX_BODY_BYTES ? 'tooLarge' : bytes;
}

/** Handler of both HTTP routes. */
export async function unisolateHttp(
  request: HttpRequest,
  context: InvocationContext,
): Promise<HttpResponseInit> {
  const deps = getDependencies();
  const answer = await handleHttp(
    {
      body: await readBody(request),
      contentType: request.headers.get('content-type'),
      principal: request.headers.get(CLIENT_PRINCIPAL_HEADER),
      timestamp: request.headers.get(TIMESTAMP_HEADER),
      signature: request.headers.get(SIGNATURE_HEADER),
      idempotencyKey: request.headers.get('idempotency-key'),
      ...(request.params.machineId !== undefined ? { routeMachineId: request.params.machineId } : {}),
    },
    pipelineDeps(deps, createLogger(context)),
  );
  context.extraOutputs.set(responseQueue, answer.messages);
  if (answer.resume.length > 0) context.extraOutputs.set(requestQueue, answer.resume);
  return httpResponse(answer, request.url);
}

/** The HTTP response for the pipeline's answer. */
function httpResponse(answer: RequestAnswer, url: string): HttpResponseInit {
  const headers: Record<string, string> = { 'Content-Type': 'application/json; charset=utf-8' };
  if (answer.retryAfterSeconds !== undefined) headers['Retry-After'] = String(answer.retryAfterSeconds);
  if (answer.replayed) headers['Idempotent-Replayed'] = 'true';
  // 207 Multi-Status: each element carries its own status (and error).
  if (answer.kind === 'bulk') return { status: 207, jsonBody: answer.outcomes, headers };
  const outcome = answer.outcomes[0]!;
  if (outcome.status === 'Queued') {
    // Accepted for later: where to follow it.
    headers.Location = new URL(`/api/unisolate/${encodeURIComponent(outcome.correlationId)}`, url).toString();
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
