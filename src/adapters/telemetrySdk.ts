/**
 * The Application Insights SDK client, created and configured here only. `scripts/build.mjs` bundles this
 * module with the part of the SDK it uses into `dist/telemetrySdk.js` (see `scripts/telemetrySdkBuild.cjs`),
 * which `telemetry.ts` loads a moment after the first telemetry item; from source (ts-jest) it uses the
 * installed package.
 *
 * Every network connection the SDK may make is decided here: telemetry goes to the connection string's
 * ingestion endpoint and nowhere else (no statsbeat, no SDK stats, no remote configuration, no live metrics).
 */
import path from 'node:path';
import type { TokenCredential } from '@azure/identity';
import type { TelemetryClient } from 'applicationinsights';

/** The SDK calls the app makes. */
export type AppInsightsClient = Pick<TelemetryClient, 'trackEvent' | 'trackDependency' | 'flush'>;

/** An event as the SDK takes it. */
export type EventItem = Parameters<TelemetryClient['trackEvent']>[0];

/** A dependency as the SDK takes it. */
export type DependencyItem = Parameters<TelemetryClient['trackDependency']>[0];

/** What the SDK client is built from. */
export interface SdkClientSettings {
  connectionString: string;
  /** AAD-authenticated ingestion (resources with local auth disabled) with this credential. */
  aadCredential?: TokenCredential;
}

/**
 * Creates the SDK client, configured for this app.
 *
 * `useGlobalProviders: false` gives the client OpenTelemetry providers of its own (the SDK's
 * `TelemetryClientProvider`): one Azure Monitor exporter per signal and a sampler at `samplingPercentage`
 * (default 100: every item is kept), and nothing else. Auto-collection (requests, dependencies, console,
 * exceptions), live metrics, performance counters and heartbeat belong to the global `useAzureMonitor` path
 * only, so the client settings that switch them off do nothing here; the one setting that does is the
 * exporter's offline storage (`enableUseDiskRetryCaching`), on by default, which would write failed batches
 * to a temporary directory (the Functions host's disk) and resend them later. See `parseConfig` and
 * `TelemetryClientProvider` in the SDK:
 * https://github.com/microsoft/ApplicationInsights-node.js/blob/main/src/shim/shim-config.ts
 * https://github.com/microsoft/ApplicationInsights-node.js/blob/main/src/shim/telemetryClientProvider.ts
 */
export async function createSdkClient(settings: SdkClientSettings): Promise<TelemetryClient> {
  disableSelfReporting();
  const sdk: SdkEntry = await import('applicationinsights');
  const client = new sdk.TelemetryClient(settings.connectionString, { useGlobalProviders: false });
  client.config.enableUseDiskRetryCaching = false;
  if (settings.aadCredential) client.config.aadTokenCredential = settings.aadCredential;
  client.initialize();
  stopRemoteConfigurationPolling(sdk.exporterConfigurationManager);
  return client;
}

/** The exporter's remote-configuration singleton, as {@link stopRemoteConfigurationPolling} uses it. */
interface ConfigurationManagerClass {
  getInstance(): { shutdown(): void };
}

/**
 * What `import('applicationinsights')` gives: the installed package, or in `dist/telemetrySdk.js` the part of
 * it the app uses, which also hands over the bundled exporter's configuration manager
 * (`scripts/telemetrySdkBuild.cjs`).
 */
type SdkEntry = Pick<typeof import('applicationinsights'), 'TelemetryClient'> & {
  exporterConfigurationManager?: ConfigurationManagerClass;
};

/**
 * The exporter reports on itself ("statsbeat": request counts, durations and failures, attach and feature
 * flags, with the instrumentation key) to Microsoft-owned Application Insights resources, and "SDK stats" to
 * this app's resource. Environment variables are its only switches, read when each exporter is constructed:
 * `APPLICATION_INSIGHTS_NO_STATSBEAT` turns both off (the exporter then starts neither);
 * `APPLICATIONINSIGHTS_STATSBEAT_DISABLED` (non-essential statsbeat, https://learn.microsoft.com/azure/azure-monitor/app/statsbeat)
 * and `APPLICATIONINSIGHTS_SDKSTATS_DISABLED` say the same to SDK versions that read those instead. A value
 * the operator set wins.
 */
function disableSelfReporting(env: NodeJS.ProcessEnv = process.env): void {
  env.APPLICATION_INSIGHTS_NO_STATSBEAT ??= 'true';
  env.APPLICATIONINSIGHTS_STATSBEAT_DISABLED ??= 'true';
  env.APPLICATIONINSIGHTS_SDKSTATS_DISABLED ??= 'true';
}

/**
 * Stops the exporter's remote-configuration ("OneSettings") poller. The first exporter starts it; 5-15 s
 * later and then hourly it GETs `https://settings.sdk.monitor.azure.com/AzMonSDKDynamicConfigurationChanges`
 * with the instrumentation key, region, OS and SDK version, and the answer may switch SDK features (offline
 * storage, SDK stats) remotely. This app's telemetry goes to its own ingestion endpoint and nowhere else.
 *
 * The exporter has no public switch for it (checked in `@azure/monitor-opentelemetry-exporter`
 * 1.0.0-beta.47, the latest): every exporter but statsbeat's calls `ConfigurationManager.getInstance()
 * .initialize()` in its constructor (`export/base.js`), with no option or environment variable in the way,
 * and the package exports only `.` and `./_configuration` (an internal feature-callback hook). The Python
 * exporter has `APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED`; the JavaScript one has no equivalent. So this is
 * the one place that reaches into the exporter's internals: its `ConfigurationManager` singleton, by the
 * file next to the package entry (the same module instance the SDK uses), and `shutdown()`, which clears
 * the poller's timer. In `dist/telemetrySdk.js` that file is bundled with the exporter, and the bundled
 * SDK entry passes its class in as `bundled`.
 *
 * @returns false when the internals moved (the poller then keeps running; the SDK client test notices).
 */
export function stopRemoteConfigurationPolling(
  bundled: ConfigurationManagerClass | undefined = undefined,
): boolean {
  if (bundled) {
    bundled.getInstance().shutdown();
    return true;
  }
  try {
    const exporterEntry = require.resolve('@azure/monitor-opentelemetry-exporter', {
      paths: [path.dirname(require.resolve('applicationinsights'))],
    });
    const file = path.join(path.dirname(exporterEntry), '_configuration', 'configurationManager.js');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const internal = require(file) as { ConfigurationManager?: { getInstance(): { shutdown(): void } } };
    if (!internal.ConfigurationManager) return false;
    internal.ConfigurationManager.getInstance().shutdown();
    return true;
  } catch {
    return false;
  }
}
