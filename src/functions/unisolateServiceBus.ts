/**
 * Service Bus trigger on the request queue: release requests (from playbooks), and parked releases the resume
 * timer hands back. With durable state a message always completes: a release that cannot run now is parked
 * (one `queued` message) and handed back later. Without it, a transient failure throws so Service Bus
 * redelivers, except on the last delivery, where the Failed/Throttled outcome is reported instead. Either way
 * every device of every message gets exactly one answer.
 */
import { app, type InvocationContext } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { triggerText } from '../adapters/rawTriggerMetadata';
import { getDependencies } from '../composition';
import { toUnisolateError, UnisolateError } from '../core/errors';
import { depthProblem, parseJson } from '../core/json';
import { chooseIdempotencyKey } from '../core/idempotency';
import {
  handleRequest,
  RedeliveryRequested,
  refusal,
  resumeRelease,
  type RequestInput,
} from '../core/pipeline';
import { resumedRelease } from '../core/records';
import { safetyOptions } from '../config';
import { requestQueue, responseQueue } from './queues';

/** Largest accepted message body: Service Bus Standard's message size limit; a release request is tiny. */
export const MAX_MESSAGE_BYTES = 256 * 1024;

const tooLarge = (): { error: UnisolateError } => ({
  error: new UnisolateError(
    'RequestTooLarge',
    `The message body is larger than ${MAX_MESSAGE_BYTES / 1024} KiB; a release request is a small JSON object.`,
  ),
});

/**
 * A message body may arrive as an object, a JSON string, or bytes (Buffer, Uint8Array, ArrayBuffer). Anything
 * else (number, boolean, null, array) is passed on and reported Invalid: never thrown, so never redelivered.
 * The size cap and the nesting limit apply to every form: the library JSON-parses a JSON message before the
 * handler sees it, so an object is checked for depth and measured by its serialized size.
 */
export function decodeMessage(message: unknown): { body: unknown } | { error: UnisolateError } {
  let text: string | undefined;
  if (Buffer.isBuffer(message) || message instanceof Uint8Array) text = Buffer.from(message).toString('utf8');
  else if (message instanceof ArrayBuffer) text = Buffer.from(message).toString('utf8');
  else if (typeof message === 'string') text = message;
  if (text === undefined) {
    // Checked first: serializing (and every later step) must never walk an unbounded nesting.
    const tooDeep = depthProblem(message);
    if (tooDeep !== undefined) {
      return { error: new UnisolateError('InvalidRequest', `Invalid request: ${tooDeep}.`) };
    }
    const serialized = JSON.stringify(message) as string | undefined;
    return serialized !== undefined && Buffer.byteLength(serialized) > MAX_MESSAGE_BYTES
      ? tooLarge()
      : { body: message };
  }
  if (Buffer.byteLength(text) > MAX_MESSAGE_BYTES) return tooLarge();
  const parsed = parseJson(text);
  return parsed.ok
    ? { body: parsed.value }
    : { error: new UnisolateError('InvalidRequest', `Invalid request: ${parsed.message}.`) };
}

/** Handler of the request queue: release requests, and parked releases handed back by the resume timer. */
export async function unisolateServiceBus(message: unknown, context: InvocationContext): Promise<void> {
  const deps = getDependencies();
  const log = createLogger(context);
  const metadata = context.triggerMetadata ?? {};
  const deliveryCount = Number(metadata.deliveryCount ?? 1) || 1;
  // The ids as the sender set them (the library turns number-like strings into numbers).
  const messageId = triggerText(context, 'messageId');
  const fallbackCorrelationId = triggerText(context, 'correlationId') ?? messageId;
  const decoded = decodeMessage(message);
  const pipelineDeps = { ...deps.release, safety: safetyOptions(deps.config), log, state: deps.state };

  const resumed = 'body' in decoded ? resumedRelease(decoded.body) : undefined;
  if (resumed) {
    // A store failure throws: Service Bus redelivers, and the timer hands the release back again anyway.
    const { messages, resume } = await resumeRelease(resumed, pipelineDeps);
    if (messages.length > 0) context.extraOutputs.set(responseQueue, messages);
    if (resume.length > 0) context.extraOutputs.set(requestQueue, resume);
    return;
  }

  // Idempotency: the body's `idempotencyKey`, else the message id (a redelivered or re-sent duplicate of the
  // same message gets the answers again, marked `replayed`).
  const chosen = 'body' in decoded ? chooseIdempotencyKey(decoded.body, undefined, messageId) : null;
  const input: RequestInput = {
    body: 'body' in decoded ? decoded.body : undefined,
    bodyError: 'error' in decoded ? decoded.error : chosen && 'error' in chosen ? chosen.error : undefined,
    fallbackCorrelationId,
    caller: null,
    trigger: 'serviceBus',
    canRedeliver: deliveryCount < deps.maxDeliveryCount,
    deliveryCount,
    ...(chosen && 'key' in chosen && chosen.key !== undefined ? { key: chosen.key } : {}),
  };
  let answer;
  try {
    answer = await handleRequest(input, pipelineDeps);
  } catch (error) {
    if (error instanceof RedeliveryRequested || deliveryCount < deps.maxDeliveryCount) throw error;
    // Last resort on the last delivery: a bug must still end in one outcome, not a silent dead letter.
    log.error('Unexpected error in the Service Bus trigger', {
      error: error instanceof Error ? error.name : 'unknown',
    });
    const failure = toUnisolateError(error);
    context.extraOutputs.set(responseQueue, refusal({ ...input, bodyError: failure }, pipelineDeps, failure));
    return;
  }
  // An array: the binding sends one response-queue message per device.
  context.extraOutputs.set(responseQueue, answer.messages);
  if (answer.resume.length > 0) context.extraOutputs.set(requestQueue, answer.resume);
}

app.serviceBusQueue('unisolateServiceBus', {
  connection: 'ServiceBusConnection',
  queueName: '%REQUEST_QUEUE_NAME%',
  extraOutputs: [responseQueue, requestQueue],
  handler: unisolateServiceBus,
});
