// How the Application Insights SDK client (src/adapters/telemetrySdk.ts) is bundled into dist/telemetrySdk.js,
// which the app loads on the main thread a moment after its first telemetry item (src/adapters/telemetry.ts).
// Shared by scripts/build.mjs, scripts/start.mjs and test/support/telemetrySdkBuild.ts, so tests and the
// sandbox run the SDK exactly as it ships.
//
// The file holds only the part of applicationinsights the app uses. Loaded from node_modules,
// `require('applicationinsights')` evaluates the whole distro: every auto-instrumentation, the OpenTelemetry
// Node SDK, OTLP exporters over gRPC and protobuf, YAML configuration (984 modules: ~330 ms of CPU and ~34 MB
// of RSS, against ~120 ms and ~22 MB for this file; npm run bench, figure 5). The app only ever builds a
// `TelemetryClient` with `useGlobalProviders: false`, whose providers are the SDK's `TelemetryClientProvider`:
// Azure Monitor exporters, batch processors and resources. So:
// - `applicationinsights` resolves to `slimSdk()` below: the SDK's own TelemetryClient file, plus the exporter's
//   configuration manager (the very instance the bundled exporters use, which telemetrySdk.ts stops);
// - two modules that path never calls are replaced by stubs that throw if they ever are: the SDK's global
//   distro entry (`../main`, `useAzureMonitor`, used only with global providers) and the OTLP exporters (built
//   only when OTLP export is configured, which this app never does; the SDK catches and logs the error).
// @azure/identity (AAD-authenticated ingestion only) stays external: the main bundle already holds it, and
// the app passes the credential in.
'use strict';
const path = require('node:path');
const { createRequire } = require('node:module');

/** The SDK entry bundled instead of applicationinsights' index (see above). */
function slimSdk(root) {
  const fromSdk = createRequire(require.resolve('applicationinsights', { paths: [root] }));
  const exporterEntry = fromSdk.resolve('@azure/monitor-opentelemetry-exporter');
  const configurationManager = path.join(
    path.dirname(exporterEntry),
    '_configuration',
    'configurationManager.js',
  );
  return [
    "export { TelemetryClient } from 'applicationinsights/out/src/shim/telemetryClient';",
    `export { ConfigurationManager as exporterConfigurationManager } from ${JSON.stringify(configurationManager)};`,
  ].join('\n');
}

/** A module that throws as soon as anything of it is used. */
function stubOf(what) {
  return [
    `const fail = () => { throw new Error(${JSON.stringify(`${what} is not in the bundled telemetry SDK`)}); };`,
    "module.exports = new Proxy({}, { get: (_, key) => (key === '__esModule' ? false : fail()) });",
  ].join('\n');
}

/** esbuild options (merged over the common ones by the caller) for the SDK client's file. */
function telemetrySdkOptions(root) {
  return {
    plugins: [
      {
        name: 'slim-applicationinsights',
        setup(build) {
          build.onResolve({ filter: /^applicationinsights$/ }, () => ({
            path: 'sdk',
            namespace: 'slim-sdk',
          }));
          build.onLoad({ filter: /.*/, namespace: 'slim-sdk' }, () => ({
            contents: slimSdk(root),
            resolveDir: root,
            loader: 'js',
          }));
          const stubs = [
            { filter: /^\.\.\/main$/, importer: /shim[/\\]telemetryClient\.js$/, what: 'useAzureMonitor' },
            {
              filter: /^@opentelemetry\/exporter-(logs|metrics|trace)-otlp-http$/,
              importer: /shim[/\\]telemetryClientProvider\.js$/,
              what: 'OTLP export',
            },
          ];
          for (const stub of stubs) {
            build.onResolve({ filter: stub.filter }, (args) =>
              stub.importer.test(args.importer) ? { path: stub.what, namespace: 'stub' } : undefined,
            );
          }
          build.onLoad({ filter: /.*/, namespace: 'stub' }, (args) => ({ contents: stubOf(args.path) }));
        },
      },
    ],
  };
}

module.exports = { telemetrySdkOptions };
