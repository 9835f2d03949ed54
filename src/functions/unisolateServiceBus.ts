/**
 * Service Bus trigger on the request queue: release requests (from playbooks), and parked releases handed
 * back (by the resume timer, or at once when due soon). Reads the message and its ids as the sender set them,
 * hands it to the pipeline (`handleMessage`), and writes the response-queue messages and any hand-backs. With
 * durable state a message always completes; without it a transient failure throws so Service Bus redelivers,
 * except on the last delivery. Either way every device of every message gets exactly one answer.
 */
import { app, type InvocationContext } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { triggerText } from '../adapters/rawTriggerMetadata';
import { getDependencies, pipelineDeps } from '../composition';
import { handleMessage } from '../core/pipeline';
import { requestQueue, responseQueue } from './queues';

/** Handler of the request queue. */
export async function unisolateServiceBus(message: unknown, context: InvocationContext): Promise<void> {
  const deps = getDependencies();
  const { messages, resume } = await handleMessage(
    {
      message,
      // The ids as the sender set them (the library turns number-like strings into numbers).
      messageId: triggerText(context, 'messageId'),
      correlationId: triggerText(context, 'correlationId'),
      deliveryCount: Number(context.triggerMetadata?.deliveryCount ?? 1) || 1,
    },
    pipelineDeps(deps, createLogger(context)),
  );
  // Arrays: the binding sends one message per element.
  if (messages.length > 0) context.extraOutputs.set(responseQueue, messages);
  if (resume.length > 0) context.extraOutputs.set(requestQueue, resume);
}

app.serviceBusQueue('unisolateServiceBus', {
  connection: 'ServiceBusConnection',
  queueName: '%REQUEST_QUEUE_NAME%',
  extraOutputs: [responseQueue, requestQueue],
  handler: unisolateServiceBus,
});
