/**
 * The telemetry worker entry, built for tests. ts-jest runs `src/` as TypeScript, which a worker thread cannot
 * run, so `src/adapters/telemetry.ts` finds no built worker beside it and keeps the SDK on the test's thread;
 * tests of the worker itself build it here, with esbuild, as `scripts/build.mjs` builds `dist/telemetryWorker.js`
 * (packages left to node_modules), with the loopback-only guard first so the worker thread, too, can only reach
 * 127.0.0.1. The file goes under `build/` (git-ignored), inside the repository so that the worker finds
 * `applicationinsights` in its node_modules.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(__dirname, '..', '..');

/** A built worker entry; `remove()` deletes it. */
export interface BuiltWorker {
  file: string;
  remove(): void;
}

/** Builds the worker entry into a directory of its own (one per call, so parallel test files never share one). */
export async function buildTelemetryWorker(): Promise<BuiltWorker> {
  const dir = path.join(ROOT, 'build', `test-telemetry-worker-${process.pid}-${Date.now()}`);
  const file = path.join(dir, 'telemetryWorker.js');
  await esbuild.build({
    stdin: {
      contents: "import './dev/loopbackOnly';\nimport './src/adapters/telemetryWorker';\n",
      resolveDir: ROOT,
      sourcefile: 'test-telemetry-worker.ts',
      loader: 'ts',
    },
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    packages: 'external',
    outfile: file,
    logLevel: 'warning',
  });
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
