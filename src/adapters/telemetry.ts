/**
 * Application Insights telemetry that never blocks or fails a release.
 *
 * `applicationinsights` takes most of a second to import, so it is loaded off the request path (after the
 * first event, on a timer); events tracked before it is ready wait in a bounded in-memory queue and are
 * replayed in order, so none is lost. Every SDK call is guarded: telemetry errors are logged, never thrown.
 */
import type { TokenCredential } from '@azure/identity';
import type { Outcome } from '../core/outcome';
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
}

const MAX_QUEUED = 10_000;

/** A telemetry sink that does nothing (no connection string). */
export const noTelemetry: Telemetry = {
  trackOutcome: () => undefined,
  trackDependency: () => undefined,
  trackRedelivery: () => undefined,
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
  if (credential) client.config.aadTokenCredential = credential();
  client.initialize();
  return client;
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

  const start = (): Promise<boolean> => {
    loading ??= new Promise<void>((resolve) => setTimeout(resolve, options.loadDelayMs ?? 0).unref())
      .then(() => (options.load ?? (() => loadSdk(connectionString, options.credential)))())
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
          properties: { correlationId: record.correlationId },
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
