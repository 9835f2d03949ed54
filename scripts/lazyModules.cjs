// esbuild plugins for dist/app.js that keep code the app never runs out of its cold start (scripts/build.mjs):
//
// - `lazyBuiltins`: `child_process` (which loads `dgram` and the socket list with it) is imported at the top by
//   @azure/identity's developer-tool credentials (@azure/core-process: Azure CLI, Azure Developer CLI), which the
//   app uses only outside Azure. Under the deployed V8 flags Node.js compiles every built-in from source (its own
//   code cache is rejected), so the import cost every cold start ~2 ms. It is replaced by a module with the same
//   exports that requires the built-in on first use. (http2, fs/promises and assert look like candidates too,
//   but Node.js's fetch internals load them anyway, and an HTTP invocation needs those.)
// - `noBrowser`: the `open` package (with default-browser, wsl-utils, powershell-utils and is-wsl, which reads
//   /proc/version as it loads) reaches the bundle only through @azure/identity's interactive browser sign-in,
//   which a Function app never does; it is replaced by a function that says so.
'use strict';

/** The built-ins loaded on first use, by the name they are imported with (with or without `node:`). */
const LAZY_BUILTINS = ['child_process'];

/**
 * The source of a CommonJS module that stands for the built-in `name`: the same own property names (from this
 * Node.js, which builds the app), each a getter that requires the built-in on first use.
 */
function lazyBuiltinSource(name) {
  const keys = Object.getOwnPropertyNames(require(`node:${name}`));
  return [
    `// node:${name}, required on first use (scripts/lazyModules.cjs).`,
    'let real;',
    `const load = () => (real ??= require('node:${name}'));`,
    'const lazy = {};',
    `for (const key of ${JSON.stringify(keys)}) {`,
    '  Object.defineProperty(lazy, key, { get: () => load()[key], set: (value) => { load()[key] = value; }, enumerable: true, configurable: true });',
    '}',
    'module.exports = lazy;',
    '',
  ].join('\n');
}

/** The esbuild plugin that replaces imports of {@link LAZY_BUILTINS} by their stand-ins. */
const lazyBuiltins = {
  name: 'lazy-builtins',
  setup(build) {
    const names = LAZY_BUILTINS.map((name) => name.replace('/', '\\/')).join('|');
    build.onResolve({ filter: new RegExp(`^(node:)?(${names})$`) }, (args) =>
      // The stand-in's own require is the built-in itself.
      args.namespace === 'lazy-builtin'
        ? { path: args.path, external: true }
        : { path: args.path.replace(/^node:/, ''), namespace: 'lazy-builtin' },
    );
    build.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => ({
      contents: lazyBuiltinSource(args.path),
      loader: 'js',
    }));
  },
};

/** The source that stands for the `open` package: its one export, which refuses. */
const NO_BROWSER_SOURCE = [
  '// The `open` package, left out of the app (scripts/lazyModules.cjs): a Function app has no browser.',
  'module.exports = async function open() {',
  '  throw new Error(\'Interactive browser sign-in is not available in this app: the build leaves out the "open" package.\');',
  '};',
  'module.exports.default = module.exports;',
  '',
].join('\n');

/** The esbuild plugin that replaces the `open` package by {@link NO_BROWSER_SOURCE}. */
const noBrowser = {
  name: 'no-browser',
  setup(build) {
    build.onResolve({ filter: /^open$/ }, () => ({ path: 'open', namespace: 'no-browser' }));
    build.onLoad({ filter: /.*/, namespace: 'no-browser' }, () => ({
      contents: NO_BROWSER_SOURCE,
      loader: 'js',
    }));
  },
};

module.exports = { LAZY_BUILTINS, lazyBuiltinSource, lazyBuiltins, noBrowser };
