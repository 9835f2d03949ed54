/**
 * The Service Bus output bindings (identity-based `ServiceBusConnection`): the response queue every outcome is
 * sent to, and the request queue parked releases are handed back to (a message naming the release).
 */
import { output } from '@azure/functions';

/** The response queue: every outcome is sent here. */
export const responseQueue = output.serviceBusQueue({
  queueName: '%RESPONSE_QUEUE_NAME%',
  connection: 'ServiceBusConnection',
});

/** The request queue, for handing parked releases back (the resume timer, and releases due again soon). */
export const requestQueue = output.serviceBusQueue({
  queueName: '%REQUEST_QUEUE_NAME%',
  connection: 'ServiceBusConnection',
});
