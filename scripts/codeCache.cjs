// Runs the app bundle (dist/app.js) with V8's code cache (dist/app.js.cache). Copied to dist/codeCache.js by
// scripts/build.mjs; dist/index.js (package.json `main`, what the Functions worker loads) calls `run`, and the
// build calls `produce` once, in a child process started with the deployed node arguments.
//
// Why: a cold instance otherwise parses and compiles the 870 KiB bundle before it can answer (~26 ms of CPU on
// the benchmark machine), compiles lazily every function its module initialisers run (~10 ms more), and then
// every function its first release runs: the Key Vault and Entra ID clients, MSAL, axios, the pipeline
// (~15 ms more). The cache holds the bytecode of the bundle's top level and of every function that ran while
// the app loaded and answered its first requests at build time (dev/codeCacheTraining.ts), so V8
// deserialises it instead (npm run bench, figure 2).
//
// V8 accepts a cache only from the same V8 version and the same V8 flags (the node arguments in
// infra/app/api.bicep, which the build reads); otherwise it rejects it, quietly, and compiles the source as
// if there were no cache: correct either way, only not faster. The cache helps when the package is built with
// the Node.js release the Function app runs (the same major version is not enough: V8's patch level counts).
'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const Module = require('node:module');
const vm = require('node:vm');

/** The CommonJS wrapper, on a line of its own so that the bundle's lines and columns stay as they are. */
const PARAMETERS = '(function (exports, require, module, __filename, __dirname) {\n';

/** Compiles `file` as a CommonJS module body, with `cachedData` when given. */
function compile(file, cachedData) {
  return new vm.Script(`${PARAMETERS}${readFileSync(file, 'utf8')}\n})`, {
    filename: file,
    lineOffset: -1,
    cachedData,
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
}

/** Evaluates the compiled module body as `module` (its exports become `module.exports`), from `file`. */
function evaluate(script, module, file) {
  const body = script.runInThisContext();
  const dirname = require('node:path').dirname(file);
  body.call(module.exports, module.exports, Module.createRequire(file), module, file, dirname);
}

/** Reads the cache beside `file`, if any. */
function readCache(file) {
  try {
    return readFileSync(`${file}.cache`);
  } catch {
    return undefined;
  }
}

/**
 * Runs `file` as `module`, with its code cache when V8 accepts it. `file` goes through the caller's own
 * `require` instead, without the cache, where `vm` would not behave as Node.js's loader: in a context of its
 * own (jest's test sandbox, with its own globals and `process.env`: `vm` runs code in Node.js's main context),
 * and with `--enable-source-maps` (Node.js maps stack traces only for the files its loader compiled).
 * @returns whether V8 used the cache.
 */
function run(module, require, file) {
  if (process.sourceMapsEnabled || vm.runInThisContext('globalThis') !== globalThis) {
    module.exports = require(file);
    return false;
  }
  const cachedData = readCache(file);
  const script = compile(file, cachedData);
  evaluate(script, module, file);
  return cachedData !== undefined && !script.cachedDataRejected;
}

/**
 * Writes the code cache of `file`: compiles it, runs its module initialisers, then serialises the bytecode V8
 * has by then.
 * - Without `training`: `@azure/functions-core`, which only the Functions worker provides, is answered by a stub
 *   that registers nothing. The cache then holds what the module initialisers ran.
 * - With `training` (dev/codeCacheTraining.ts, bundled by the build): its `train(load)` loads the app through
 *   the local Functions host and answers a cold instance's first requests against local simulators, so the
 *   cache also holds the release path. When training fails, the cache is produced without it (a warning says
 *   why): correct either way, only not as fast.
 * @returns the size of the cache in bytes, and whether it was trained.
 */
async function produce(file, training) {
  if (training) {
    try {
      const script = compile(file, undefined);
      const outcomes = await require(training).train(() => evaluate(script, { exports: {} }, file));
      if (outcomes.some((outcome) => outcome !== 'Accepted')) {
        throw new Error(`the training releases ended ${outcomes.join(', ')}, not Accepted`);
      }
      const cache = script.createCachedData();
      writeFileSync(`${file}.cache`, cache);
      return { bytes: cache.length, trained: true };
    } catch (error) {
      console.warn(`codeCache: training failed (${error?.message ?? error}); producing the cache without it`);
    }
  }
  const load = Module._load;
  const disposable = () => ({ dispose() {} });
  const stub = new Proxy({}, { get: (_, key) => (key === '__esModule' ? false : disposable) });
  Module._load = function loadStubbingCore(request, ...rest) {
    return request === '@azure/functions-core' ? stub : load.call(this, request, ...rest);
  };
  try {
    const script = compile(file, undefined);
    evaluate(script, { exports: {} }, file);
    const cache = script.createCachedData();
    writeFileSync(`${file}.cache`, cache);
    return { bytes: cache.length, trained: false };
  } finally {
    Module._load = load;
  }
}

module.exports = { run, produce };

// `node codeCache.cjs produce <file> [<training.js>]`: what scripts/build.mjs runs.
if (require.main === module && process.argv[2] === 'produce') {
  const path = require('node:path');
  const training = process.argv[4] && path.resolve(process.argv[4]);
  produce(path.resolve(process.argv[3]), training).then(
    // The app's initialisers and the training may have left timers and sockets; the cache is written.
    ({ trained }) => process.exit(training && !trained ? 3 : 0),
    (error) => {
      console.error(error);
      process.exit(1);
    },
  );
}
