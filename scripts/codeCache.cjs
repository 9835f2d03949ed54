// Runs the app bundle (dist/app.js) with V8's code cache (dist/app.js.cache). Copied to dist/codeCache.js by
// scripts/build.mjs; dist/index.js (package.json `main`, what the Functions worker loads) calls `run`, and the
// build calls `produce` once, in a child process started with the deployed node arguments.
//
// Why: a cold instance otherwise parses and compiles the 870 KiB bundle before it can answer (~26 ms of CPU on
// the benchmark machine), and compiles lazily every function its module initialisers run (~10 ms more). The
// cache holds the bytecode of the bundle's top level and of every function that ran while the app loaded, so
// V8 deserialises it instead (npm run bench, figure 2).
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
 * Writes the code cache of `file`: compiles it, runs its module initialisers (with `@azure/functions-core`,
 * which only the Functions worker provides, answered by a stub that registers nothing), then serialises the
 * bytecode V8 has by then.
 * @returns the size of the cache in bytes.
 */
function produce(file) {
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
    return cache.length;
  } finally {
    Module._load = load;
  }
}

module.exports = { run, produce };

// `node codeCache.cjs produce <file>`: what scripts/build.mjs runs.
if (require.main === module && process.argv[2] === 'produce') {
  produce(require('node:path').resolve(process.argv[3]));
  // The app's initialisers may have started timers; the cache is written.
  process.exit(0);
}
