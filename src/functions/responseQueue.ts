import { output } from '@azure/functions';

/** The response queue: every outcome is sent here (identity-based `ServiceBusConnection`). */
export const responseQueue = output.serviceBusQueue({
  queueName: '%RESPONSE_QUEUE_NAME%',
  connection: 'ServiceBusConnection',
});
