/**
 * Application Insights telemetry that never blocks or fails a release.
 *
 * `applicationinsights` takes most of a second to import, so it is loaded off the request path (after the
 * first event, on a timer) and, by default, in a worker thread, so that neither the import nor the SDK's
 * per-event work blocks this thread (`npm run bench`: drain and warm p99); events tracked before it is ready
 * wait in a bounded in-memory queue and are replayed in order, so none is lost. Every SDK call is guarded:
 * telemetry errors are logged, never thrown.
 */
import path from 'node:path';
import type { TokenCredential } from '@azure/identity';
import type { Outcome } from '../core/outcome';
import type { SelfTestReport } from '../core/selfTest';
import type { DependencyRecord, Logger, Telemetry } from '../core/ports';

/** The subset of the SDK's TelemetryClient we use. */
interface AppInsightsClient {
  trackEvent(t: {
    name: string;
    properties?: Record<string, unknown>;
    measurements?: Record<string, number>;
  }): void;
  trackDependency(t: {
    name: string;
    data: string;
    target: string;
    duration: number;
    resultCode: string;
    success: boolean;
    dependencyTypeName: string;
    properties?: Record<string, unknown>;
  }): void;
  flush(): Promise<void>;
}

type Item = (client: AppInsightsClient) => void;

/** Options of {@link createTelemetry}. */
export interface TelemetryOptions {
  connectionString: string | undefined;
  /** Credential for AAD-authenticated ingestion (resources with local auth disabled). */
  credential?: () => TokenCredential;
  log: Logger;
  /** Delay before the SDK is loaded, so the first request is not slowed by the import. */
  loadDelayMs?: number;
  /** Upper bound of `flush()`. */
  flushTimeoutMs?: number;
  /** Loader, injectable for tests. */
  load?: () => Promise<AppInsightsClient>;
  /**
   * Run the SDK in a worker thread (default true), so neither its import (~0.7 s of synchronous module
   * loading) nor its per-event work ever stalls requests on this thread. With AAD ingestion the worker
   * builds the credential itself (functions cannot cross threads): pass {@link TelemetryOptions.aadIdentity};
   * a `credential` without it keeps the SDK on this thread.
   */
  offThread?: boolean;
  /**
   * AAD ingestion off-thread: a managed identity (`managed`: IDENTITY_ENDPOINT/MSI_ENDPOINT set) with this
   * client id (undefined: system-assigned), else the developer's Azure CLI / azd login.
   */
  aadIdentity?: { managed: boolean; clientId: string | undefined };
}

const MAX_QUEUED = 10_000;

/** A telemetry sink that does nothing (no connection string). */
export const noTelemetry: Telemetry = {
  trackOutcome: () => undefined,
  trackDependency: () => undefined,
  trackRedelivery: () => undefined,
  trackCompletion: () => undefined,
  trackSelfTest: () => undefined,
  flush: async () => undefined,
};

async function loadSdk(
  connectionString: string,
  credential?: () => TokenCredential,
): Promise<AppInsightsClient> {
  const sdk = await import('applicationinsights');
  // An isolated client: only our manual track calls, no auto-instrumentation, live metrics or disk cache.
  const client = new sdk.TelemetryClient(connectionString, { useGlobalProviders: false });
  client.config.enableSendLiveMetrics = false;
  client.config.enableAutoCollectPerformance = false;
  client.config.enableAutoCollectHeartbeat = false;
  client.config.enableUseDiskRetryCaching = false;
  client.config.enableAutoCollectConsole = false;
  client.config.enableAutoCollectExceptions = false;
  // Every dependency recorded (the distro's default rate-limited sampler drops spans after start-up).
  client.config.azureMonitorOpenTelemetryOptions = { tracesPerSecond: 0, samplingRatio: 1 };
  if (credential) client.config.aadTokenCredential = credential();
  client.initialize();
  stopConfigurationPolling(require.resolve('applicationinsights'));
  return client;
}

/**
 * The exporter reports on itself ("statsbeat", SDK stats) to Microsoft-owned Application Insights resources
 * outside the customer's tenant unless told not to. This app's telemetry goes to its own resource only. The
 * variables are read when the exporter starts (on this thread or in the worker, which copies the environment).
 */
function disableSdkSelfReporting(): void {
  process.env.APPLICATION_INSIGHTS_NO_STATSBEAT ??= 'true';
  process.env.APPLICATIONINSIGHTS_STATSBEAT_DISABLED ??= 'true';
  process.env.APPLICATIONINSIGHTS_SDKSTATS_DISABLED ??= 'true';
}

/**
 * The exporter polls `settings.sdk.monitor.azure.com` for remote SDK configuration, whatever the statsbeat
 * settings say. This app sends telemetry to its ingestion endpoint and nowhere else, so the poller is stopped
 * (an internal of `@azure/monitor-opentelemetry-exporter`: if it moves, this does nothing).
 */
function stopConfigurationPolling(sdkPath: string): void {
  try {
    const entry = require.resolve('@azure/monitor-opentelemetry-exporter', {
      paths: [path.dirname(sdkPath)],
    });
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const manager = require(path.join(path.dirname(entry), '_configuration', 'configurationManager.js')) as {
      ConfigurationManager?: { getInstance(): { shutdown(): void } };
    };
    manager.ConfigurationManager?.getInstance().shutdown();
  } catch {
    /* internals moved: the poller keeps running, nothing else changes */
  }
}

/**
 * The worker thread's script (plain JavaScript: it runs outside the bundle, loading `applicationinsights`
 * and `@azure/identity` from node_modules by the paths resolved here). Same client settings as
 * {@link loadSdk}; the AAD credential is built as `appIdentity` in composition.ts builds it.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
function start() {
  const sdk = require(workerData.sdkPath);
  const client = new sdk.TelemetryClient(workerData.connectionString, { useGlobalProviders: false });
  const c = client.config;
  c.enableSendLiveMetrics = false;
  c.enableAutoCollectPerformance = false;
  c.enableAutoCollectHeartbeat = false;
  c.enableUseDiskRetryCaching = false;
  c.enableAutoCollectConsole = false;
  c.enableAutoCollectExceptions = false;
  c.azureMonitorOpenTelemetryOptions = { tracesPerSecond: 0, samplingRatio: 1 };
  const aad = workerData.aad;
  if (aad) {
    const id = require(workerData.identityPath);
    c.aadTokenCredential = aad.managed
      ? aad.clientId ? new id.ManagedIdentityCredential({ clientId: aad.clientId }) : new id.ManagedIdentityCredential()
      : new id.ChainedTokenCredential(new id.AzureCliCredential(), new id.AzureDeveloperCliCredential());
  }
  client.initialize();
  // Same as stopConfigurationPolling() on the main thread.
  try {
    const path = require('node:path');
    const entry = require.resolve('@azure/monitor-opentelemetry-exporter', { paths: [path.dirname(workerData.sdkPath)] });
    require(path.join(path.dirname(entry), '_configuration', 'configurationManager.js')).ConfigurationManager.getInstance().shutdown();
  } catch {}
  return client;
}
let client;
try {
  client = start();
  parentPort.postMessage({ kind: 'ready' });
} catch (error) {
  parentPort.postMessage({ kind: 'failed', message: String((error && error.message) || error).slice(0, 200) });
}
parentPort.on('message', (m) => {
  if (!client) return;
  try {
    if (m.kind === 'batch') {
      for (const [kind, item] of m.items) {
        if (kind === 'event') client.trackEvent(item);
        else client.trackDependency(item);
      }
    } else if (m.kind === 'flush') {
      const done = () => parentPort.postMessage({ kind: 'flushed', id: m.id });
      client.flush().then(done, done);
    }
  } catch (error) {
    parentPort.postMessage({ kind: 'warn', message: (error && error.name) || 'unknown' });
  }
});
`;

/** How long telemetry items wait on this thread before going to the worker together. */
const BATCH_MS = 50;

type WorkerMessage =
  | { kind: 'ready' }
  | { kind: 'failed'; message: string }
  | { kind: 'flushed'; id: number }
  | { kind: 'warn'; message: string };

/**
 * Loads the SDK in a worker thread and returns a client whose calls are messages to it (structured clones
 * of small objects, in order). Resolves once the worker's client is initialised.
 */
async function loadSdkOffThread(
  connectionString: string,
  aad: { managed: boolean; clientId: string | undefined } | undefined,
  log: Logger,
): Promise<AppInsightsClient> {
  const { Worker } = await import('node:worker_threads');
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: {
      connectionString,
      aad,
      sdkPath: require.resolve('applicationinsights'),
      identityPath: aad ? require.resolve('@azure/identity') : undefined,
    },
    // A small heap for the SDK (~25 MB live once loaded): V8's defaults let an idle worker's heap grow
    // lazily; these cut ~20 MB of the process's RSS (npm run bench, figure 5). If the SDK ever outgrew
    // them, the worker would stop and telemetry turn off with a warning; releases are not affected.
    resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 96 },
  });
  // Telemetry never keeps the process alive by itself; a pending flush does (see flush below).
  worker.unref();
  const flushes = new Map<number, () => void>();
  let nextFlush = 0;
  const settleFlushes = (): void => {
    for (const done of [...flushes.values()]) done();
  };
  await new Promise<void>((resolve, reject) => {
    worker.on('message', (message: WorkerMessage) => {
      if (message.kind === 'ready') resolve();
      else if (message.kind === 'failed') reject(new Error(message.message));
      else if (message.kind === 'flushed') flushes.get(message.id)?.();
      else log.warn('Telemetry call failed', { error: message.message });
    });
    worker.on('error', (error) => {
      log.warn('The telemetry worker failed; telemetry is off', { error: error.message.slice(0, 200) });
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
  let batch: ['event' | 'dependency', unknown][] = [];
  let timer: NodeJS.Timeout | undefined;
  const post = (): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (batch.length === 0) return;
    worker.postMessage({ kind: 'batch', items: batch });
    batch = [];
  };
  const enqueue = (kind: 'event' | 'dependency', item: unknown): void => {
    batch.push([kind, item]);
    if (batch.length >= 200) post();
    else timer ??= setTimeout(post, BATCH_MS).unref();
  };
  return {
    trackEvent: (item) => enqueue('event', item),
    trackDependency: (item) => enqueue('dependency', item),
    flush: () =>
      new Promise<void>((resolve) => {
        post();
        const id = nextFlush++;
        worker.ref();
        flushes.set(id, () => {
          flushes.delete(id);
          if (flushes.size === 0) worker.unref();
          resolve();
        });
        worker.postMessage({ kind: 'flush', id });
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
  disableSdkSelfReporting();
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

  const inThread = (): Promise<AppInsightsClient> => loadSdk(connectionString, options.credential);
  const defaultLoad = (): Promise<AppInsightsClient> =>
    options.offThread === false || (options.credential && !options.aadIdentity)
      ? inThread()
      : loadSdkOffThread(connectionString, options.credential ? options.aadIdentity : undefined, log).catch(
          (error: unknown) => {
            log.warn('Telemetry worker unavailable; loading Application Insights on the main thread', {
              error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
            });
            return inThread();
          },
        );

  const start = (): Promise<boolean> => {
    loading ??= new Promise<void>((resolve) => setTimeout(resolve, options.loadDelayMs ?? 0).unref())
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
      const work = start().then(async (ok) => {
        if (ok && client) await client.flush();
      });
      await Promise.race([work.catch(() => undefined), bound]);
    },
    ready: () => start(),
  };
}
