// `npm start`: bundles the sandbox (scripts/sandbox.ts, the app's TypeScript sources and the local simulators)
// with esbuild, with the Application Insights SDK client beside it (the app loads it from the bundle's own
// directory, as in dist/; scripts/telemetrySdkBuild.cjs), then runs it with the test certificate authority trusted (NODE_EXTRA_CA_CERTS must
// be set when a process starts, hence the child process). See scripts/sandbox.ts.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import esbuild from 'esbuild';
import sdkBuild from './telemetrySdkBuild.cjs';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const outfile = path.join(root, 'build', 'sandbox.js');
const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outdir: path.dirname(outfile),
  sourcemap: true,
  logLevel: 'warning',
};
await Promise.all([
  esbuild.build({
    ...common,
    entryPoints: { sandbox: path.join(root, 'scripts', 'sandbox.ts') },
    packages: 'external',
  }),
  esbuild.build({
    ...common,
    ...sdkBuild.telemetrySdkOptions(root),
    entryPoints: { telemetrySdk: path.join(root, 'src', 'adapters', 'telemetrySdk.ts') },
    logOverride: { 'require-resolve-not-external': 'silent' },
  }),
]);
const child = spawn(process.execPath, ['--enable-source-maps', outfile], {
  cwd: root,
  stdio: 'inherit',
  env: {
    ...process.env,
    NODE_EXTRA_CA_CERTS: path.join(root, 'dev', 'certs', 'ca.pem'),
    SIMULATOR_CERTS_DIR: path.join(root, 'dev', 'certs'),
    // Keep the telemetry SDK from phoning home (statsbeat, SDK stats, metadata probe).
    APPLICATIONINSIGHTS_STATSBEAT_DISABLED: 'true',
    APPLICATIONINSIGHTS_SDKSTATS_DISABLED: 'true',
    WEBSITE_SITE_NAME: process.env.WEBSITE_SITE_NAME ?? 'mde-unisolate-sandbox',
  },
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
child.on('exit', (code) => process.exit(code ?? 0));
