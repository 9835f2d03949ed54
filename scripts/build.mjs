// Bundles the app into dist/app.js with esbuild: one minified file plus a source map, and beside it the files
// the bundle loads later from its own directory: the Application Insights SDK client (dist/telemetrySdk.js)
// and jsonwebtoken (dist/jsonwebtoken.js). dist/index.js, what `package.json` `main` names and the Functions
// worker loads, runs app.js with V8's code cache dist/app.js.cache, which this script produces last under the
// deployed node arguments (scripts/codeCache.cjs says why and when V8 uses it). Prints the sizes.
// `--outdir=<dir>` builds somewhere else than dist/ (the deployed-bundle test builds its own copy).
// `--if-available` (used by `prepare`) skips quietly when esbuild or the sources are absent: a production-only
// install, or an `npm install` run on the deployed package (which holds dist/ but not src/).
//
// The entry is src/index.ts (app setup + every function file). The bundle also exports the composition root
// (`buildDependencies`, `getDependencies`, `setDependencies`): the Functions host ignores a v4 app's exports,
// and this lets the benchmarks (`npm run bench`) and the sandbox drive the deployed file itself with a scaled
// clock or a different rate budget instead of a rebuilt copy.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import path from 'node:path';

const optional = process.argv.includes('--if-available');
const outdir = process.argv.find((arg) => arg.startsWith('--outdir='))?.slice('--outdir='.length) ?? 'dist';
if (optional && !existsSync(path.join('src', 'index.ts'))) process.exit(0);
let esbuild;
try {
  esbuild = await import('esbuild');
} catch (error) {
  if (optional) process.exit(0);
  throw error;
}
// Imported here, after the checks above: the deployed package keeps only this file of scripts/ (.funcignore).
const { default: sdkBuild } = await import('./telemetrySdkBuild.cjs');
const { deployedNodeArguments } = (await import('./nodeArguments.cjs')).default;
const { lazyBuiltins, noBrowser } = (await import('./lazyModules.cjs')).default;

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: true,
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning',
};

const app = esbuild.build({
  ...common,
  stdin: {
    contents: [
      "import './src/index';",
      "export { buildDependencies, getDependencies, setDependencies } from './src/composition';",
    ].join('\n'),
    resolveDir: process.cwd(),
    sourcefile: 'deploy-entry.ts',
    loader: 'ts',
  },
  outfile: path.join(outdir, 'app.js'),
  // Telemetry finds the exporter next to applicationinsights in node_modules at run time
  // (src/adapters/telemetrySdk.ts), so require.resolve staying is intended.
  logOverride: { 'require-resolve-not-external': 'silent' },
  // The Functions worker provides @azure/functions-core; applicationinsights is bundled into
  // dist/telemetrySdk.js (below), and the app loads the installed package only if that file is missing;
  // node-forge is required only to read a PKCS#12 certificate (MDE_CREDENTIAL=certificate), so it stays out
  // of the bundle every cold start parses and is loaded from node_modules on first use.
  external: ['@azure/functions-core', 'applicationinsights', 'node-forge'],
  plugins: [
    lazyBuiltins,
    noBrowser,
    {
      // mime-db (a 130 KiB table of media types) reaches the bundle only through axios → form-data →
      // mime-types, to name the type of uploaded files; the app never sends form data. Parsing it cost
      // every cold start ~10 ms (npm run bench), so it is replaced by an empty table (lookups then answer
      // false and form-data would fall back to application/octet-stream).
      name: 'empty-mime-db',
      setup(build) {
        build.onResolve({ filter: /^mime-db$/ }, () => ({ path: 'mime-db', namespace: 'empty-mime-db' }));
        build.onLoad({ filter: /.*/, namespace: 'empty-mime-db' }, () => ({
          contents: 'module.exports = {};',
        }));
      },
    },
    {
      // @azure/msal-node loads jsonwebtoken (with semver, jws, lodash.*) at startup, but calls it only to sign
      // a client assertion (certificate credentials). It is bundled on its own, into dist/jsonwebtoken.js
      // (below; it needs nothing but Node.js), and loaded from there on first use: every other cold start
      // neither evaluates it (~15-20 ms, npm run bench figure 2) nor compiles its ~70 KiB (~3 ms).
      name: 'lazy-jsonwebtoken',
      setup(build) {
        build.onResolve({ filter: /^jsonwebtoken$/ }, (args) =>
          args.importer.includes(`${path.sep}@azure${path.sep}msal-node${path.sep}`)
            ? { path: 'jsonwebtoken', namespace: 'lazy-jsonwebtoken', pluginData: args.resolveDir }
            : undefined,
        );
        build.onLoad({ filter: /.*/, namespace: 'lazy-jsonwebtoken' }, (args) => ({
          contents: [
            'let real;',
            "const load = () => (real ??= require(require('node:path').join(__dirname, 'jsonwebtoken.js')));",
            'module.exports = {',
            '  sign: (...args) => load().sign(...args),',
            '  verify: (...args) => load().verify(...args),',
            '  decode: (...args) => load().decode(...args),',
            '};',
          ].join('\n'),
          resolveDir: args.pluginData,
        }));
      },
    },
  ],
});

// The Application Insights SDK client (src/adapters/telemetrySdk.ts), with the part of applicationinsights it
// uses bundled in (scripts/telemetrySdkBuild.cjs, shared with the tests' and the sandbox's copies).
const telemetrySdk = esbuild.build({
  ...common,
  ...sdkBuild.telemetrySdkOptions(process.cwd()),
  entryPoints: { telemetrySdk: 'src/adapters/telemetrySdk.ts' },
  outdir,
  logOverride: { 'require-resolve-not-external': 'silent' },
});

// jsonwebtoken as msal-node resolves it, for certificate credentials only (see lazy-jsonwebtoken above).
const fromMsal = createRequire(createRequire(import.meta.url).resolve('@azure/msal-node'));
const jsonwebtoken = esbuild.build({
  ...common,
  entryPoints: { jsonwebtoken: fromMsal.resolve('jsonwebtoken') },
  outdir,
});

await Promise.all([app, telemetrySdk, jsonwebtoken]);

// The entry the worker loads, and the code cache of app.js (scripts/codeCache.cjs).
copyFileSync(path.join('scripts', 'codeCache.cjs'), path.join(outdir, 'codeCache.js'));
writeFileSync(
  path.join(outdir, 'index.js'),
  [
    '// The Function app (package.json `main`): runs app.js, the esbuild bundle, with its V8 code cache.',
    "require('./codeCache.js').run(module, require, require('node:path').join(__dirname, 'app.js'));",
    '',
  ].join('\n'),
);
const cacheReport = produceCodeCache();

/**
 * Produces app.js.cache in a child process under the deployed node arguments (V8 takes a cache only under the
 * flags it was made with), trained on a cold instance's first requests (dev/codeCacheTraining.ts, bundled here
 * into a temporary directory; it needs the simulators' test CA) when dev/ is there. A training that fails,
 * or does not finish within a minute, leaves a cache of the module initialisers only, with a warning.
 */
function produceCodeCache() {
  const produce = (extra, env) =>
    spawnSync(
      process.execPath,
      [
        ...deployedNodeArguments(process.cwd()),
        path.join(outdir, 'codeCache.js'),
        'produce',
        path.join(outdir, 'app.js'),
        ...extra,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env, timeout: 60_000 },
    );
  if (existsSync(path.join('dev', 'codeCacheTraining.ts'))) {
    const training = mkdtempSync(path.join(tmpdir(), 'mde-unisolate-training-'));
    try {
      esbuild.buildSync({
        entryPoints: [path.join('dev', 'codeCacheTraining.ts')],
        bundle: true,
        platform: 'node',
        target: 'node20',
        format: 'cjs',
        outfile: path.join(training, 'training.js'),
        logLevel: 'warning',
      });
      // The simulators listen on 127.0.0.1 with the test CA's certificate; no proxy stands in between.
      const env = { ...process.env, NODE_EXTRA_CA_CERTS: path.resolve('dev', 'certs', 'ca.pem') };
      env.SIMULATOR_CERTS_DIR = path.resolve('dev', 'certs');
      for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY']) {
        delete env[name];
        delete env[name.toLowerCase()];
      }
      const trained = produce([path.join(training, 'training.js')], env);
      if (trained.status === 0) return 'trained on the first requests';
      // Exit 3: the child produced the untrained cache itself and said why.
      if (trained.status === 3) return 'module initialisers only';
      console.warn(
        `code cache: the training did not finish (${trained.error?.message ?? `exit ${trained.status ?? trained.signal}`}); producing the cache without it`,
      );
    } finally {
      rmSync(training, { recursive: true, force: true });
    }
  }
  const plain = produce([], process.env);
  if (plain.status !== 0) {
    throw new Error(`producing the code cache failed (exit ${plain.status ?? plain.signal})`);
  }
  return 'module initialisers only';
}

const kib = (name) => (statSync(name).size / 1024).toFixed(0);
for (const file of ['app.js', 'telemetrySdk.js', 'jsonwebtoken.js'].map((f) => path.join(outdir, f))) {
  console.log(`${file}: ${kib(file)} KiB (source map ${kib(`${file}.map`)} KiB)`);
}
console.log(
  `${path.join(outdir, 'app.js.cache')}: ${kib(path.join(outdir, 'app.js.cache'))} KiB (V8 code cache, ${cacheReport})`,
);
