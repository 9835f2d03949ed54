/**
 * Simulator of the Application Insights ingestion endpoint ("Breeze"), which `applicationinsights` 3.x
 * (Azure Monitor OpenTelemetry exporter) posts to: `POST <IngestionEndpoint>/v2.1/track` with a JSON array of
 * envelopes (gzip-compressed only for real `*.applicationinsights.azure.com` hosts, so plain JSON on
 * loopback; both are accepted here). The answer is
 * `200 {"itemsReceived":n,"itemsAccepted":n,"appId":null,"errors":[]}`.
 * https://learn.microsoft.com/azure/azure-monitor/app/api-custom-events-metrics
 *
 * Everything else on the host (live metrics pings, unknown paths) gets a fast 200/204 so an SDK never hangs.
 * Point the SDK here with {@link connectionString}.
 */
import { stopRemoteConfigurationPolling } from '../../src/adapters/telemetrySdk';
import {
  SimServer,
  type CommonSimOptions,
  type SimRequest,
  type SimResponse,
  type SimulatorHandle,
} from './server';

/** One telemetry envelope (the parts tests look at; everything else is kept as sent). */
export interface Envelope {
  name: string;
  time: string;
  iKey?: string;
  sampleRate?: number;
  tags?: Record<string, string>;
  data?: {
    baseType?: string;
    baseData?: {
      name?: string;
      properties?: Record<string, string>;
      measurements?: Record<string, number>;
      [key: string]: unknown;
    };
  };
  [key: string]: unknown;
}

/** Options for {@link startIngestion}. */
export type IngestionSimOptions = CommonSimOptions;

/** Handle returned by {@link startIngestion}. */
export interface IngestionSimulator extends SimulatorHandle {
  /** Every accepted envelope, in arrival order. Cleared by `reset()`. */
  readonly envelopes: Envelope[];
  /** Custom events (`data.baseType === 'EventData'`), optionally only those named `name`. */
  events(name?: string): Envelope[];
  /** Dependency telemetry (`RemoteDependencyData`). */
  dependencies(): Envelope[];
  /** Request telemetry (`RequestData`). */
  requestTelemetry(): Envelope[];
  /** Trace telemetry (`MessageData`). */
  traces(): Envelope[];
  /** Exception telemetry (`ExceptionData`). */
  exceptions(): Envelope[];
  /** Metric telemetry (`MetricData`). */
  metrics(): Envelope[];
  /** Number of `/track` batches accepted. */
  readonly batches: number;
  /** Number of `/track` batches answered with a non-2xx status (via `setStatus`). */
  readonly rejectedBatches: number;
  /**
   * Answer every `/track` call with this status (e.g. 503, 500, 429) until set back to 200 (or undefined).
   * Rejected envelopes are not stored.
   */
  setStatus(status: number | undefined): void;
  /** Delay every `/track` answer by `ms` (0 = off). */
  setSlow(ms: number): void;
  /**
   * Resolves with the matching envelopes once `predicate` has at least `count` matches (default 1); rejects
   * after `timeoutMs` (default 5000).
   */
  waitFor(
    predicate: (e: Envelope) => boolean,
    options?: { count?: number; timeoutMs?: number },
  ): Promise<Envelope[]>;
}

/** The parts of the `applicationinsights` 3.x module that {@link shutdownApplicationInsights} uses. */
export interface ApplicationInsightsModule {
  defaultClient: { shutdown(): Promise<void> } | null | undefined;
  dispose(): void;
}

/**
 * Shuts the Application Insights SDK down completely so jest can exit cleanly and no background work leaks
 * into later test files: `defaultClient.shutdown()` (flushes, then stops the OpenTelemetry providers and their
 * export timers), `dispose()` (so `setup()` can be called again) and the app's
 * {@link stopRemoteConfigurationPolling} (neither of the others stops the exporter's remote-configuration
 * poller, which would otherwise fire during a later test file and hit the loopback guard).
 */
export async function shutdownApplicationInsights(appInsights: ApplicationInsightsModule): Promise<void> {
  const client = appInsights.defaultClient;
  if (client) await client.shutdown();
  appInsights.dispose();
  stopRemoteConfigurationPolling();
}

/** Connection string pointing the Application Insights SDK (ingestion and live metrics) at the simulator. */
export function connectionString(handle: { url: string }): string {
  return `InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=${handle.url}/;LiveEndpoint=${handle.url}/`;
}

function parseEnvelopes(body: string): Envelope[] | undefined {
  const text = body.trim();
  if (text === '') return [];
  try {
    const parsed: unknown = JSON.parse(text);
    if (Array.isArray(parsed)) return parsed as Envelope[];
    if (parsed !== null && typeof parsed === 'object') return [parsed as Envelope];
    return undefined;
  } catch {
    // Older SDKs send newline-delimited JSON.
    try {
      return text
        .split(/\r?\n/)
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Envelope);
    } catch {
      return undefined;
    }
  }
}

/** Starts the ingestion simulator (HTTPS, test certificate) on 127.0.0.1. */
export async function startIngestion(options: IngestionSimOptions = {}): Promise<IngestionSimulator> {
  const envelopes: Envelope[] = [];
  let batches = 0;
  let rejectedBatches = 0;
  let forcedStatus: number | undefined;
  let slowMs = 0;
  const waiters = new Set<() => void>();
  let closed = false;

  const notify = (): void => {
    for (const w of [...waiters]) w();
  };

  const handler = async (req: SimRequest): Promise<SimResponse> => {
    if (req.method === 'POST' && /\/v2(?:\.1)?\/track\/?$/i.test(req.pathname)) {
      if (slowMs > 0 && !(await server.sleep(slowMs))) return { status: 503 };
      const items = parseEnvelopes(req.body);
      if (items === undefined) {
        return {
          status: 400,
          body: {
            itemsReceived: 0,
            itemsAccepted: 0,
            errors: [{ index: 0, statusCode: 400, message: 'Invalid JSON' }],
          },
        };
      }
      if (forcedStatus !== undefined && (forcedStatus < 200 || forcedStatus > 299)) {
        rejectedBatches++;
        return {
          status: forcedStatus,
          headers: forcedStatus === 429 || forcedStatus === 503 ? { 'Retry-After': '1' } : undefined,
          body: {
            itemsReceived: items.length,
            itemsAccepted: 0,
            errors: items.map((_, index) => ({
              index,
              statusCode: forcedStatus,
              message: 'Simulated ingestion failure',
            })),
          },
        };
      }
      batches++;
      envelopes.push(...items);
      notify();
      return {
        status: 200,
        body: { itemsReceived: items.length, itemsAccepted: items.length, appId: null, errors: [] },
      };
    }
    if (/quickpulse/i.test(req.pathname)) {
      // Live metrics: tell the SDK nobody is watching so it stays in slow ping mode.
      return { status: 200, headers: { 'x-ms-qps-subscribed': 'false' }, body: {} };
    }
    return { status: req.method === 'GET' ? 200 : 204, body: req.method === 'GET' ? {} : undefined };
  };

  const server = new SimServer({
    port: options.port,
    tls: true,
    handler,
    onReset: () => {
      envelopes.length = 0;
      batches = 0;
      rejectedBatches = 0;
      forcedStatus = undefined;
      slowMs = 0;
    },
    onClose: () => {
      closed = true;
      notify();
    },
  });
  await server.start();

  const byType = (baseType: string) => (): Envelope[] =>
    envelopes.filter((e) => e.data?.baseType === baseType);

  const waitFor = (
    predicate: (e: Envelope) => boolean,
    opts: { count?: number; timeoutMs?: number } = {},
  ): Promise<Envelope[]> => {
    const count = opts.count ?? 1;
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const found = envelopes.filter(predicate);
        if (found.length < count) return false;
        cleanup();
        resolve(found);
        return true;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `ingestion simulator: expected ${count} matching envelope(s), got ${envelopes.filter(predicate).length}`,
          ),
        );
      }, opts.timeoutMs ?? 5000);
      timer.unref();
      const cleanup = (): void => {
        clearTimeout(timer);
        waiters.delete(onChange);
      };
      const onChange = (): void => {
        if (check() || !closed) return;
        cleanup();
        reject(new Error('ingestion simulator closed while waiting for envelopes'));
      };
      if (!check()) waiters.add(onChange);
    });
  };

  return Object.defineProperties(server.handle as IngestionSimulator, {
    envelopes: { enumerable: true, value: envelopes },
    events: {
      value: (name?: string) =>
        envelopes.filter(
          (e) => e.data?.baseType === 'EventData' && (name === undefined || e.data.baseData?.name === name),
        ),
    },
    dependencies: { value: byType('RemoteDependencyData') },
    requestTelemetry: { value: byType('RequestData') },
    traces: { value: byType('MessageData') },
    exceptions: { value: byType('ExceptionData') },
    metrics: { value: byType('MetricData') },
    batches: { enumerable: true, get: () => batches },
    rejectedBatches: { enumerable: true, get: () => rejectedBatches },
    setStatus: {
      value: (status: number | undefined) => {
        forcedStatus = status;
      },
    },
    setSlow: {
      value: (ms: number) => {
        slowMs = ms;
      },
    },
    waitFor: { value: waitFor },
  });
}
