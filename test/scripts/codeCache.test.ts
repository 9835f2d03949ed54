/**
 * The code cache loader (`scripts/codeCache.cjs`, deployed as `dist/codeCache.js`): in real `node` processes,
 * a module runs the same with its cache, with a cache V8 rejects (other flags, damaged bytes) and without one,
 * and errors keep their lines; the cache is used only when the flags match. Also: the build's own cache is
 * accepted under the deployed node arguments (`infra/app/api.bicep`), which is what makes it worth shipping.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
const LOADER = path.join(ROOT, 'scripts', 'codeCache.cjs');
const DIR = path.join(ROOT, 'build', `code-cache-test-${process.pid}`);
const APP = path.join(DIR, 'app.js');
const TRAINED = path.join(DIR, 'training.js');
const FAILING = path.join(DIR, 'failing-training.js');
const REFUSED = path.join(DIR, 'refused-training.js');

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { deployedNodeArguments } = require('../../scripts/nodeArguments.cjs') as {
  deployedNodeArguments(root: string): string[];
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const codeCache = require(LOADER) as {
  run(module: { exports: unknown }, require: (id: string) => unknown, file: string): boolean;
};

beforeAll(() => {
  mkdirSync(DIR, { recursive: true });
  writeFileSync(path.join(DIR, 'helper.js'), 'module.exports = (a, b) => a + b;\n');
  writeFileSync(
    APP,
    [
      "const add = require('./helper.js');",
      'exports.sum = add(40, 2);',
      'exports.where = [path(__filename), path(__dirname)];',
      'function path(p) { return require("node:path").basename(p); }',
      'exports.fail = () => {',
      "  throw new Error('from line 6');",
      '};',
      'globalThis.codeCacheFixture = { work: () => [1, 2, 3].map((n) => n * 2).reduce((a, b) => a + b) };',
      '',
    ].join('\n'),
  );
  // Trainings: one that runs a function the initialisers did not, one that fails, one whose requests fail.
  const training = (body: string) => `exports.train = async (load) => {\n  load();\n  ${body}\n};\n`;
  writeFileSync(TRAINED, training("globalThis.codeCacheFixture.work();\n  return ['Accepted'];"));
  writeFileSync(FAILING, training("throw new Error('no simulators');"));
  writeFileSync(REFUSED, training("return ['Accepted', 'Failed'];"));
});
afterAll(() => rmSync(DIR, { recursive: true, force: true }));

/** Runs APP through the loader in a fresh `node` with `flags`; what it exported and whether the cache was used. */
function runInNode(flags: string[], file = APP) {
  const script = [
    `const m = { exports: {} };`,
    `const used = require(${JSON.stringify(LOADER)}).run(m, require, ${JSON.stringify(file)});`,
    `let line;`,
    `try { m.exports.fail?.(); } catch (e) { line = /app\\.js:(\\d+)/.exec(e.stack)?.[1]; }`,
    `console.log(JSON.stringify({ used, sum: m.exports.sum, where: m.exports.where, line }));`,
  ].join('\n');
  const child = spawnSync(process.execPath, [...flags, '-e', script], { encoding: 'utf8' });
  expect(child.stderr).toBe('');
  return JSON.parse(child.stdout) as { used: boolean; sum: number; where: string[]; line?: string };
}

function produce(flags: string[]): void {
  const child = spawnSync(process.execPath, [...flags, LOADER, 'produce', APP], { encoding: 'utf8' });
  expect({ status: child.status, stderr: child.stderr }).toEqual({ status: 0, stderr: '' });
}

/** Produces the cache with `training`: the exit status, what it printed, and the size of the cache. */
function produceTrained(flags: string[], training: string) {
  rmSync(`${APP}.cache`, { force: true });
  const child = spawnSync(process.execPath, [...flags, LOADER, 'produce', APP, training], {
    encoding: 'utf8',
  });
  return { status: child.status, stderr: child.stderr, bytes: statSync(`${APP}.cache`).size };
}

const EXPECTED = { sum: 42, where: ['app.js', path.basename(DIR)], line: '6' };
const FLAGS = ['--max-old-space-size=96'];

it('runs a module the same without a cache, with its cache, and with a cache V8 rejects', () => {
  rmSync(`${APP}.cache`, { force: true });
  expect(runInNode(FLAGS)).toEqual({ used: false, ...EXPECTED });
  produce(FLAGS);
  expect(runInNode(FLAGS)).toEqual({ used: true, ...EXPECTED });
  // Other V8 flags than the cache was produced with: rejected, compiled from source.
  expect(runInNode([])).toEqual({ used: false, ...EXPECTED });
  writeFileSync(`${APP}.cache`, Buffer.from('not a code cache'));
  expect(runInNode(FLAGS)).toEqual({ used: false, ...EXPECTED });
});

it('a trained cache also holds what the training ran; a failed training leaves the untrained cache', () => {
  produce(FLAGS);
  const untrained = statSync(`${APP}.cache`).size;
  const trained = produceTrained(FLAGS, TRAINED);
  expect(trained).toEqual({ status: 0, stderr: '', bytes: expect.any(Number) });
  expect(trained.bytes).toBeGreaterThan(untrained);
  expect(runInNode(FLAGS)).toEqual({ used: true, ...EXPECTED });
  for (const [training, why] of [
    [FAILING, 'no simulators'],
    [REFUSED, 'the training releases ended Accepted, Failed, not Accepted'],
  ] as const) {
    // Exit 3: the build reports an untrained cache; the cache is there and works.
    expect(produceTrained(FLAGS, training)).toEqual({
      status: 3,
      stderr: `codeCache: training failed (${why}); producing the cache without it\n`,
      bytes: untrained,
    });
    expect(runInNode(FLAGS)).toEqual({ used: true, ...EXPECTED });
  }
});

it('leaves source maps to Node.js: with --enable-source-maps it requires the file as Node would, without the cache', () => {
  produce(['--enable-source-maps']);
  expect(runInNode(['--enable-source-maps'])).toEqual({ used: false, ...EXPECTED });
});

it("uses the caller's own require inside a sandboxed context such as jest's", () => {
  const m = { exports: {} as Record<string, unknown> };
  expect(codeCache.run(m, require, APP)).toBe(false);
  expect(m.exports.sum).toBe(42);
});

it('the built bundle carries a cache that V8 accepts under the deployed node arguments', () => {
  const out = path.join(DIR, 'dist');
  const build = spawnSync(process.execPath, ['scripts/build.mjs', `--outdir=${out}`], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  expect({ status: build.status, stderr: build.stderr }).toEqual({ status: 0, stderr: '' });
  // Trained on a cold instance's first requests (dev/codeCacheTraining.ts, against the simulators).
  expect(build.stdout).toContain('(V8 code cache, trained on the first requests)');
  // The app needs @azure/functions-core, which only the Functions worker provides: a stub that registers nothing.
  const script = [
    "const Module = require('node:module'); const load = Module._load;",
    "const stub = new Proxy({}, { get: (_, k) => (k === '__esModule' ? false : () => ({ dispose() {} })) });",
    "Module._load = function (r, ...a) { return r === '@azure/functions-core' ? stub : load.call(this, r, ...a); };",
    'const m = { exports: {} };',
    `const used = require(${JSON.stringify(path.join(out, 'codeCache.js'))}).run(m, require, ${JSON.stringify(path.join(out, 'app.js'))});`,
    "const childProcess = process.moduleLoadList.includes('NativeModule child_process');",
    'console.log(JSON.stringify({ used, exports: Object.keys(m.exports).sort(), childProcess }));',
    'process.exit(0);',
  ].join('\n');
  const child = spawnSync(process.execPath, [...deployedNodeArguments(ROOT), '-e', script], {
    encoding: 'utf8',
  });
  expect(JSON.parse(child.stdout)).toEqual({
    used: true,
    exports: ['buildDependencies', 'getDependencies', 'setDependencies'],
    // Loaded on first use only (scripts/lazyModules.cjs): no cold start pays for it.
    childProcess: false,
  });
});
