/**
 * The build's stand-ins (`scripts/lazyModules.cjs`): a built-in required on first use keeps the real module's
 * exports and loads it only when one is used; the `open` package's stand-in refuses with a message that says
 * why. Checked in fresh `node` processes, where `process.moduleLoadList` shows what Node.js loaded.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
const DIR = path.join(ROOT, 'build', `lazy-modules-test-${process.pid}`);

// eslint-disable-next-line @typescript-eslint/no-require-imports
const lazy = require('../../scripts/lazyModules.cjs') as {
  LAZY_BUILTINS: string[];
  lazyBuiltinSource(name: string): string;
  lazyBuiltins: unknown;
  noBrowser: unknown;
};

beforeAll(() => mkdirSync(DIR, { recursive: true }));
afterAll(() => rmSync(DIR, { recursive: true, force: true }));

function runInNode(script: string): unknown {
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  expect(child.stderr).toBe('');
  return JSON.parse(child.stdout);
}

it.each(lazy.LAZY_BUILTINS)(
  'node:%s: the same exports, and the built-in loaded only when one is used',
  (name) => {
    const file = path.join(DIR, `${name.replace('/', '-')}.js`);
    writeFileSync(file, lazy.lazyBuiltinSource(name));
    const script = [
      `const loaded = () => process.moduleLoadList.includes('NativeModule ${name}');`,
      `const standIn = require(${JSON.stringify(file)});`,
      'const before = loaded();',
      'const keys = Object.keys(standIn).sort();',
      'const afterKeys = loaded();',
      `const real = require('node:${name}');`,
      'const first = Object.getOwnPropertyNames(real)[0];',
      'const same = Object.getOwnPropertyNames(real).every((key) => standIn[key] === real[key]);',
      'console.log(JSON.stringify({ before, afterKeys, keys, realKeys: Object.getOwnPropertyNames(real).sort(), same, first: typeof standIn[first] }));',
    ].join('\n');
    const result = runInNode(script) as Record<string, unknown>;
    expect(result).toMatchObject({ before: false, afterKeys: false, same: true });
    expect(result.keys).toEqual(result.realKeys);
  },
);

it('child_process through its stand-in runs a command', () => {
  const file = path.join(DIR, 'child_process-run.js');
  writeFileSync(file, lazy.lazyBuiltinSource('child_process'));
  const script = [
    `const { execFileSync } = require(${JSON.stringify(file)});`,
    "const out = execFileSync(process.execPath, ['-e', 'process.stdout.write(String(6 * 7))'], { encoding: 'utf8' });",
    'console.log(JSON.stringify(out));',
  ].join('\n');
  expect(runInNode(script)).toBe('42');
});

it('the bundle made with both plugins loads neither child_process nor the open package, and open refuses', async () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const esbuild = require('esbuild') as typeof import('esbuild');
  const entry = path.join(DIR, 'entry.mjs');
  writeFileSync(
    entry,
    [
      "import { execFile } from 'node:child_process';",
      "import { createRequire } from 'node:module';",
      "import open from 'open';",
      "const loaded = process.moduleLoadList.includes('NativeModule child_process');",
      'export const check = async () => ({',
      '  loaded,',
      "  execFile: execFile === createRequire(__filename)('node:child_process').execFile,",
      '  open: await open("https://example.com").then(() => "opened", (error) => error.message),',
      '});',
      '',
    ].join('\n'),
  );
  const out = path.join(DIR, 'bundle.js');
  await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    outfile: out,
    logLevel: 'silent',
    plugins: [lazy.lazyBuiltins, lazy.noBrowser] as import('esbuild').Plugin[],
  });
  const result = runInNode(
    `require(${JSON.stringify(out)}).check().then((r) => console.log(JSON.stringify(r)));`,
  );
  expect(result).toEqual({
    loaded: false,
    execFile: true,
    open: expect.stringMatching(/^Interactive browser sign-in is not available in this app/),
  });
});
