// `npm run bench`: builds the deployed bundle (dist/index.js), bundles the benchmark harness and its child
// process script (which import the TypeScript simulators) into bench/tmp/, and runs the harness. See
// bench/harness.ts for what is measured. BENCH_QUICK=1 runs a smaller smoke version.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
process.chdir(root);
execFileSync(process.execPath, ['scripts/build.mjs'], { stdio: 'inherit' });
mkdirSync('bench/tmp', { recursive: true });
await esbuild.build({
  entryPoints: ['bench/harness.ts', 'bench/child.ts', 'bench/baselineApp.ts'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  packages: 'external',
  outdir: 'bench/tmp',
  logLevel: 'warning',
  plugins: [
    {
      // Bundled sources that locate files next to themselves (the simulators' TLS certificates) keep their
      // own directory instead of bench/tmp/.
      name: 'keep-dirname',
      setup(build) {
        build.onLoad({ filter: /[\\/]dev[\\/].*\.ts$/ }, (args) => ({
          contents: readFileSync(args.path, 'utf8').replaceAll(
            '__dirname',
            JSON.stringify(path.dirname(args.path)),
          ),
          loader: 'ts',
        }));
      },
    },
  ],
});
await import(pathToFileURL(path.join(root, 'bench/tmp/harness.js')).href);
