/**
 * The telemetry worker thread's entry. `scripts/build.mjs` bundles it into `dist/telemetryWorker.js`, next to
 * `dist/index.js`, where `telemetry.ts` starts it (see there for why a worker). It creates the SDK client with
 * {@link createSdkClient}, as the in-thread path does, and applies the items the main thread sends, in order.
 */
import { isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import {
  createSdkClient,
  type AppInsightsClient,
  type DependencyItem,
  type EventItem,
  type SdkClientSettings,
} from './telemetrySdk';

/** One tracked item, as the main thread's client was asked to track it. */
export type TrackedItem = ['event', EventItem] | ['dependency', DependencyItem];

/** A message from the main thread. */
export type ToWorker = { kind: 'batch'; items: TrackedItem[] } | { kind: 'flush'; id: number };

/** A message to the main thread. */
export type FromWorker =
  | { kind: 'ready' }
  | { kind: 'failed'; message: string }
  | { kind: 'flushed'; id: number }
  | { kind: 'warn'; message: string };

/** The `workerData` the main thread starts the worker with. */
export type TelemetryWorkerData = SdkClientSettings;

type Port = Pick<MessagePort, 'on' | 'postMessage'>;

function send(port: Port, message: FromWorker): void {
  port.postMessage(message);
}

function apply(client: AppInsightsClient, message: ToWorker, port: Port): void {
  try {
    if (message.kind === 'batch') {
      for (const [kind, item] of message.items) {
        if (kind === 'event') client.trackEvent(item);
        else client.trackDependency(item);
      }
    } else {
      const done = (): void => send(port, { kind: 'flushed', id: message.id });
      client.flush().then(done, done);
    }
  } catch (error) {
    // Names only: an SDK error message could quote the item.
    send(port, { kind: 'warn', message: error instanceof Error ? error.name : 'unknown' });
  }
}

/** Creates the client, then serves the main thread's messages on `port`. */
export async function serveTelemetry(port: Port, settings: TelemetryWorkerData): Promise<void> {
  let client: AppInsightsClient;
  try {
    client = await createSdkClient(settings);
  } catch (error) {
    send(port, {
      kind: 'failed',
      message: (error instanceof Error ? error.message : String(error)).slice(0, 200),
    });
    return;
  }
  port.on('message', (message: ToWorker) => apply(client, message, port));
  send(port, { kind: 'ready' });
}

if (!isMainThread && parentPort) void serveTelemetry(parentPort, workerData as TelemetryWorkerData);
