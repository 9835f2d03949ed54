/**
 * Application Insights telemetry that never blocks or fails a release.
 *
 * `applicationinsights` takes most of a second to import, so it is loaded off the request path (after the
 * first event, on a timer) and, by default, in a worker thread (`telemetryWorker.ts`), so that neither the
 * import nor the SDK's per-event work blocks this thread (`npm run bench`: drain and warm p99); events tracked
 * before it is ready wait in a bounded in-memory queue and are replayed in order, so none is lost. Every SDK
 * call is guarded: telemetry errors are logged, never thrown. The SDK client is created and configured in one
 * place, `telemetrySdk.ts`, for both threads.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Outcome } from '../core/outcome';
import type { SelfTestReport } from '../core/selfTest';
import type { DependencyRecord, Logger, Telemetry } from '../core/ports';
import type { IdentitySpec } from './identity';
import { createSdkClient, type AppInsightsClient, type SdkClientSettings } from './telemetrySdk';
import type { FromWorker, TelemetryWorkerData, ToWorker, TrackedItem } from './telemetryWorker';

type Item = (client: AppInsightsClient) => void;

/** Options of {@link createTelemetry}. */
export interface TelemetryOptions {
  connectionString: string | undefined;
  /**
   * AAD-authenticated ingestion (resources with local auth disabled) as this identity. A description, not a
   * credential: the credential is built where the SDK runs (functions cannot cross threads).
   */
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
  /**
   * Run the SDK in a worker thread (default true), so neither its import (~0.7 s of synchronous module
   * loading) nor its per-event work ever stalls requests on this thread. Without a built worker (running from
   * source, e.g. under ts-jest) or when it cannot start, the SDK runs on this thread; a bundle says so in a
   * warning.
   */
  offThread?: boolean;
  /** The built worker entry; default {@link BUILT_WORKER_FILE}. */
  workerFile?: string;
}

/**
 * The worker entry, built next to the bundle that contains this module: `dist/telemetryWorker.js` beside
 * `dist/index.js` (deployed together), `build/telemetryWorker.js` beside the sandbox's bundle (`npm start`).
 */
const BUILT_WORKER_FILE = path.join(__dirname, 'telemetryWorker.js');

/** True when this module runs from its TypeScript source (ts-jest), where no worker is built beside it. */
const RUNNING_FROM_SOURCE = __filename.endsWith('.ts');

const MAX_QUEUED = 10_000;

/**
 * How long after the first tracked item the SDK starts loading. The first item is tracked while the
 * invocation that started the instance is still running (its Defender call's dependency); starting the
 * worker then (a thread that boots Node.js and imports the SDK) competed for the CPU with the rest of that
 * first request, which answered ~5-10 ms later (`npm run bench`, figure 2). Half a second later the first
 * answer has gone out; the items wait in the queue meanwhile, and none is lost.
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

/** How long telemetry items wait on this thread before going to the worker together. */
const BATCH_MS = 50;

/**
 * Loads the SDK in a worker thread running `workerFile` and returns a client whose calls are messages to it
 * (structured clones of small objects, in order). Resolves once the worker's client is initialised.
 */
async function loadSdkOffThread(
  workerFile: string,
  settings: SdkClientSettings,
  log: Logger,
): Promise<AppInsightsClient> {
  const { Worker } = await import('node:worker_threads');
  const worker = new Worker(workerFile, {
    workerData: settings satisfies TelemetryWorkerData,
    // A small heap for the SDK (~25 MB live once loaded): V8's defaults let an idle worker's heap grow
    // lazily; these cut ~20 MB of the process's RSS (npm run bench, figure 5). If the SDK ever outgrew
    // them, the worker would stop and telemetry turn off with a warning; releases are not affected.
    resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 96 },
  });
  const post = (message: ToWorker): void => worker.postMessage(message);
  // Telemetry never keeps the process alive by itself; a pending flush does (see flush below).
  worker.unref();
  const flushes = new Map<number, () => void>();
  let nextFlush = 0;
  const settleFlushes = (): void => {
    for (const done of [...flushes.values()]) done();
  };
  let started = false;
  await new Promise<void>((resolve, reject) => {
    worker.on('message', (message: FromWorker) => {
      if (message.kind === 'ready') {
        started = true;
        resolve();
      } else if (message.kind === 'failed') reject(new Error(message.message));
      else if (message.kind === 'flushed') flushes.get(message.id)?.();
      else log.warn('Telemetry call failed', { error: message.message });
    });
    worker.on('error', (error) => {
      // Before it started, the caller falls back to this thread (and says so).
      if (started) {
        log.warn('The telemetry worker failed; telemetry is off', { error: error.message.slice(0, 200) });
      }
      settleFlushes();
      reject(error);
    });
    worker.on('exit', () => {
      settleFlushes();
      reject(new Error('the telemetry worker exited'));
    });
  });
  // Items go to the worker in batches: one structured clone per BATCH_MS instead of one per item keeps the
  // per-request cost of telemetry small (npm run bench, figure 1). The SDK batches for seconds anyway.
  let batch: TrackedItem[] = [];
  let timer: NodeJS.Timeout | undefined;
  const postBatch = (): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (batch.length === 0) return;
    post({ kind: 'batch', items: batch });
    batch = [];
  };
  const enqueue = (item: TrackedItem): void => {
    batch.push(item);
    if (batch.length >= 200) postBatch();
    else timer ??= setTimeout(postBatch, BATCH_MS).unref();
  };
  return {
    trackEvent: (item) => enqueue(['event', item]),
    trackDependency: (item) => enqueue(['dependency', item]),
    flush: () =>
      new Promise<void>((resolve) => {
        postBatch();
        const id = nextFlush++;
        worker.ref();
        flushes.set(id, () => {
          flushes.delete(id);
          if (flushes.size === 0) worker.unref();
          resolve();
        });
        post({ kind: 'flush', id });
      }),
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

  const settings: SdkClientSettings = { connectionString, aad: options.aad };
  const inThread = (): Promise<AppInsightsClient> => createSdkClient(settings);
  const defaultLoad = (): Promise<AppInsightsClient> => {
    if (options.offThread === false) return inThread();
    const workerFile = options.workerFile ?? BUILT_WORKER_FILE;
    if (!existsSync(workerFile)) {
      // Expected when running from source; a bundle deployed without its worker is a packaging fault.
      if (!RUNNING_FROM_SOURCE || options.workerFile) {
        log.warn('No telemetry worker was built; Application Insights runs on the main thread', {
          workerFile: path.basename(workerFile),
        });
      }
      return inThread();
    }
    return loadSdkOffThread(workerFile, settings, log).catch((error: unknown) => {
      log.warn('Telemetry worker unavailable; loading Application Insights on the main thread', {
        error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
      });
      return inThread();
    });
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
        client = loaded;
        for (const item of queue.splice(0)) run(item, loaded);
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
