// Bundles the app (src/index.ts) into dist/index.js with esbuild: one minified file plus a source map,
// which is what `package.json` `main` loads and what gets deployed. Prints the bundle size.
// `--if-available` (used by `prepare`) skips quietly when esbuild is absent (production-only installs).
import { statSync } from 'node:fs';

const optional = process.argv.includes('--if-available');
let esbuild;
try {
  esbuild = await import('esbuild');
} catch (error) {
  if (optional) process.exit(0);
  throw error;
}

await esbuild.build({
  entryPoints: ['src/index.ts'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: 'dist/index.js',
  minify: true,
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning',
  // The Functions worker provides @azure/functions-core; applicationinsights is loaded lazily at run time
  // (its OpenTelemetry internals resolve modules dynamically, so it stays in node_modules).
  external: ['@azure/functions-core', 'applicationinsights'],
});
const kib = (statSync('dist/index.js').size / 1024).toFixed(0);
console.log(`dist/index.js: ${kib} KiB`);
