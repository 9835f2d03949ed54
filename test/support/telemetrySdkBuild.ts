/**
 * The SDK client module as `scripts/build.mjs` builds `dist/telemetrySdk.js` (with the shared options of
 * `scripts/telemetrySdkBuild.cjs`: the part of applicationinsights the app uses, bundled in), for tests: ts-jest
 * runs `src/` as TypeScript and would otherwise load the installed package. The file goes under `build/`
 * (git-ignored).
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(__dirname, '..', '..');

// eslint-disable-next-line @typescript-eslint/no-require-imports
const sdkBuild = require('../../scripts/telemetrySdkBuild.cjs') as {
  telemetrySdkOptions(root: string): Pick<esbuild.BuildOptions, 'plugins'>;
};

/** A built SDK client module; `remove()` deletes it. */
export interface BuiltSdk {
  file: string;
  remove(): void;
}

/** Builds the SDK client module into a directory of its own (one per call: parallel test files never share). */
export async function buildTelemetrySdk(): Promise<BuiltSdk> {
  const dir = path.join(ROOT, 'build', `test-telemetry-sdk-${process.pid}-${Date.now()}`);
  const file = path.join(dir, 'telemetrySdk.js');
  await esbuild.build({
    entryPoints: [path.join(ROOT, 'src', 'adapters', 'telemetrySdk.ts')],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    ...sdkBuild.telemetrySdkOptions(ROOT),
    outfile: file,
    logLevel: 'warning',
    logOverride: { 'require-resolve-not-external': 'silent' },
  });
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
