/**
 * Application Insights telemetry that never blocks or fails a release.
 *
 * The SDK is loaded off the request path: half a second after the first item, from `dist/telemetrySdk.js`
 * (the part of `applicationinsights` the app uses, bundled beside `dist/app.js`; ~120 ms and ~22 MB, against
 * ~330 ms and ~34 MB for the whole package). Items tracked before it is ready wait in a bounded in-memory
 * queue and are replayed in order, so none is lost; afterwards they reach the SDK in batches, a timer tick
 * after the request that tracked them. Every SDK call is guarded: telemetry errors are logged, never thrown.
 * The SDK client is created and configured in one place, `telemetrySdk.ts`.
 *
 * It runs on the main thread. A worker thread kept the SDK's import and per-item work off this thread, but
 * cost each instance ~35 MB of memory (a second V8 isolate with its own heap and allocator arena); with the
 * smaller SDK file and batched items the main thread spends ~0.05-0.1 ms per item, once per batch, and the
 * warm overhead with telemetry on stays within the run-to-run noise of it off (npm run bench, figures 1, 5).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Outcome } from '../core/outcome';
import type { SelfTestReport } from '../core/selfTest';
import type { DependencyRecord, Logger, Telemetry } from '../core/ports';
import { credentialFor, type IdentitySpec } from './identity';
import type { AppInsightsClient, DependencyItem, EventItem, SdkClientSettings } from './telemetrySdk';

type Item = (client: AppInsightsClient) => void;

/** Options of {@link createTelemetry}. */
export interface TelemetryOptions {
  connectionString: string | undefined;
  /** AAD-authenticated ingestion (resources with local auth disabled) as this identity. */
  aad?: IdentitySpec;
  log: Logger;
  /**
   * Delay between the first tracked item and loading the SDK (default {@link SDK_LOAD_DELAY_MS}); `flush()`
   * does not wait for it.
   */
  loadDelayMs?: number;
  /** Upper bound of `flush()`. */
  flushTimeoutMs?: number;
  /** Loader, injectable for tests. */
  load?: () => Promise<AppInsightsClient>;
  /** The built SDK client module; default {@link BUILT_SDK_FILE}. */
  sdkFile?: string;
}

/**
 * The SDK client module, built next to the bundle that contains this module: `dist/telemetrySdk.js` beside
 * `dist/app.js` (deployed together), `build/telemetrySdk.js` beside the sandbox's bundle (`npm start`).
 */
const BUILT_SDK_FILE = path.join(__dirname, 'telemetrySdk.js');

/** True when this module runs from its TypeScript source (ts-jest), where no SDK file is built beside it. */
const RUNNING_FROM_SOURCE = __filename.endsWith('.ts');

const MAX_QUEUED = 10_000;

/**
 * How long after the first tracked item the SDK starts loading. The first item is tracked while the
 * invocation that started the instance is still running (its Defender call's dependency); loading the SDK
 * then (~120 ms of CPU) would hold up the rest of that first request (`npm run bench`, figure 2). Half a
 * second later the first answer has gone out; the items wait in the queue meanwhile, and none is lost.
 */
const SDK_LOAD_DELAY_MS = 500;

/** A telemetry sink that does nothing (no connection string). */
export const noTelemetry: Telemetry = {
  trackOutcome: () => undefined,
  trackDependency: () => undefined,
  trackRedelivery: () => undefined,
  trackCompletion: () => undefined,
  trackSelfTest: () => undefined,
  flush: async () => undefined,
};

/** How long tracked items wait before they reach the SDK together. */
const BATCH_MS = 50;

/** One tracked item, as the client was asked to track it. */
type TrackedItem = ['event', EventItem] | ['dependency', DependencyItem];

/**
 * The SDK client module: the built `dist/telemetrySdk.js` beside this bundle, or this source's own module
 * (ts-jest, or a bundle deployed without its SDK file: a packaging fault, said in a warning; the installed
 * package then loads instead).
 */
async function loadSdkModule(
  sdkFile: string | undefined,
  log: Logger,
): Promise<Pick<typeof import('./telemetrySdk'), 'createSdkClient'>> {
  const file = sdkFile ?? BUILT_SDK_FILE;
  if (existsSync(file)) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(file) as typeof import('./telemetrySdk');
  }
  if (!RUNNING_FROM_SOURCE || sdkFile) {
    log.warn('No telemetry SDK file was built; loading the installed Application Insights package', {
      sdkFile: path.basename(file),
    });
  }
  return import('./telemetrySdk');
}

/**
 * `client` with its calls applied in batches, a timer tick after they were made, so that the SDK's per-item
 * work stays off the request that tracked the item.
 */
function deferred(client: AppInsightsClient): AppInsightsClient {
  let batch: TrackedItem[] = [];
  let timer: NodeJS.Timeout | undefined;
  const apply = (): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    const items = batch;
    batch = [];
    for (const [kind, item] of items) {
      if (kind === 'event') client.trackEvent(item);
      else client.trackDependency(item);
    }
  };
  const enqueue = (item: TrackedItem): void => {
    batch.push(item);
    timer ??= setTimeout(apply, BATCH_MS).unref();
  };
  return {
    trackEvent: (item) => enqueue(['event', item]),
    trackDependency: (item) => enqueue(['dependency', item]),
    flush: () => {
      apply();
      return client.flush();
    },
  };
}

function outcomeEvent(outcome: Outcome, durationMs: number) {
  return {
    name: 'UnisolateOutcome',
    properties: {
      correlationId: outcome.correlationId,
      machineId: outcome.machineId ?? '',
      status: outcome.status,
      trigger: outcome.trigger,
      machineActionId: outcome.machineAction?.id ?? '',
      errorCode: outcome.error?.code ?? '',
    },
    measurements: { durationMs, attempts: outcome.attempts },
  };
}

/** Creates the telemetry sink (or {@link noTelemetry} without a connection string). */
export function createTelemetry(options: TelemetryOptions): Telemetry & { ready(): Promise<boolean> } {
  const { connectionString, log } = options;
  if (!connectionString) return { ...noTelemetry, ready: async () => false };
  const queue: Item[] = [];
  let client: AppInsightsClient | undefined;
  let failed = false;
  let loading: Promise<boolean> | undefined;
  let dropped = 0;

  const run = (item: Item, target: AppInsightsClient): void => {
    try {
      item(target);
    } catch (error) {
      log.warn('Telemetry call failed', { error: error instanceof Error ? error.name : 'unknown' });
    }
  };

  const defaultLoad = async (): Promise<AppInsightsClient> => {
    const settings: SdkClientSettings = {
      connectionString,
      ...(options.aad ? { aadCredential: credentialFor(options.aad) } : {}),
    };
    return (await loadSdkModule(options.sdkFile, log)).createSdkClient(settings);
  };
  /** Ends the wait before loading (a flush does not wait). */
  let wake: (() => void) | undefined;
  /** Starts loading the SDK (after the delay, or `now`); resolves true once it is ready. */
  const start = (now = false): Promise<boolean> => {
    loading ??= new Promise<void>((resolve) => {
      wake = resolve;
      setTimeout(resolve, options.loadDelayMs ?? SDK_LOAD_DELAY_MS).unref();
    })
      .then(() => (options.load ?? defaultLoad)())
      .then((loaded) => {
        client = deferred(loaded);
        for (const item of queue.splice(0)) run(item, client);
        return true;
      })
      .catch((error: unknown) => {
        failed = true;
        queue.length = 0;
        log.warn('Application Insights could not be started; telemetry is off', {
          error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
        });
        return false;
      });
    if (now) wake?.();
    return loading;
  };

  const track = (item: Item): void => {
    if (client) return run(item, client);
    if (failed) return;
    if (queue.length >= MAX_QUEUED) {
      dropped += 1;
      if (dropped === 1) log.warn('Telemetry queue full while the SDK loads; dropping events');
      return;
    }
    queue.push(item);
    void start();
  };

  return {
    trackOutcome(outcome, durationMs) {
      const event = outcomeEvent(outcome, durationMs);
      track((c) => c.trackEvent(event));
    },
    trackSelfTest(report: SelfTestReport, durationMs: number) {
      // Names and pass/fail only: the details stay in the function's log and the endpoint's answer.
      const failed = report.checks.filter((c) => !c.ok).map((c) => c.name);
      track((c) =>
        c.trackEvent({
          name: 'UnisolateSelfTest',
          properties: {
            ok: String(report.ok),
            cloud: report.cloud,
            credential: report.credential,
            failedChecks: failed.join(','),
            checks: report.checks.map((check) => `${check.name}:${check.ok ? 'ok' : 'failed'}`).join(','),
          },
          measurements: { durationMs, failed: failed.length },
        }),
      );
    },
    trackRedelivery(outcome, deliveryCount) {
      const event = outcomeEvent(outcome, 0);
      track((c) =>
        c.trackEvent({
          name: 'UnisolateRedelivery',
          properties: { ...event.properties, deliveryCount: String(deliveryCount) },
          measurements: { attempts: outcome.attempts },
        }),
      );
    },
    trackCompletion(outcome, timeToCompletionMs) {
      // One event per tracked release that ended: the second phase of `UnisolateOutcome`.
      const event = outcomeEvent(outcome, 0);
      track((c) =>
        c.trackEvent({
          name: 'UnisolateCompleted',
          properties: { ...event.properties, machineActionStatus: outcome.machineAction?.status ?? '' },
          measurements: { timeToCompletionMs, polls: outcome.attempts },
        }),
      );
    },
    trackDependency(record: DependencyRecord) {
      track((c) =>
        c.trackDependency({
          name: record.name,
          data: record.name,
          target: record.target,
          duration: record.durationMs,
          resultCode: record.resultCode,
          success: record.success,
          dependencyTypeName: 'HTTP',
          // The OpenTelemetry-based exporter classifies a dependency as HTTP (and reads its result code) from
          // these semantic-convention attributes.
          properties: {
            correlationId: record.correlationId,
            'http.method': record.name.split(' ')[0] ?? 'GET',
            ...(/^\d{3}$/.test(record.resultCode) ? { 'http.status_code': Number(record.resultCode) } : {}),
          },
        }),
      );
    },
    async flush() {
      if (!loading && queue.length === 0) return;
      const bound = new Promise<void>((resolve) =>
        setTimeout(resolve, options.flushTimeoutMs ?? 5000).unref(),
      );
      const work = start(true).then(async (ok) => {
        if (ok && client) await client.flush();
      });
      await Promise.race([work.catch(() => undefined), bound]);
    },
    ready: () => start(true),
  };
}
