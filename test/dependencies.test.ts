// The installed tree keeps every declared range: for each package in package-lock.json, each dependency
// it declares resolves (npm's rule: nearest node_modules up the path) to a version its range accepts.
// npm `overrides` can silently break this; `npm ls` marks an overridden edge valid, this test does not.
import { readFileSync } from 'node:fs';
import path from 'node:path';

/** The part of semver this test uses (semver ships no types; it is a devDependency for this test). */
interface Semver {
  validRange(range: string, options: { loose: boolean }): string | null;
  satisfies(version: string, range: string, options: { loose: boolean }): boolean;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const semver = require('semver') as Semver;

interface LockEntry {
  name?: string;
  version?: string;
  link?: boolean;
  resolved?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}
type LockPackages = Record<string, LockEntry>;

/** The lock key npm loads `name` from when required by the package at `from` ('' is the project). */
function resolveFrom(packages: LockPackages, from: string, name: string): string | undefined {
  let base = from;
  for (;;) {
    const candidate = `${base === '' ? '' : `${base}/`}node_modules/${name}`;
    if (packages[candidate] !== undefined) return candidate;
    if (base === '') return undefined;
    const parent = base.lastIndexOf('/node_modules/');
    base = parent < 0 ? '' : base.slice(0, parent);
  }
}

/** Every declared range the resolved version does not satisfy, as readable lines; [] when the tree is sound. */
function brokenRanges(packages: LockPackages): string[] {
  const broken: string[] = [];
  for (const [key, entry] of Object.entries(packages)) {
    const who = key === '' ? '(project)' : key;
    const optional = entry.optionalDependencies ?? {};
    const declared: [kind: string, deps: Record<string, string> | undefined][] = [
      ['dependencies', entry.dependencies],
      ['optionalDependencies', entry.optionalDependencies],
      ['peerDependencies', entry.peerDependencies],
      // Only the project's own devDependencies are installed.
      ['devDependencies', key === '' ? entry.devDependencies : undefined],
    ];
    for (const [kind, deps] of declared) {
      for (const [name, spec] of Object.entries(deps ?? {})) {
        let at = resolveFrom(packages, key, name);
        let target = at === undefined ? undefined : packages[at];
        if (target?.link === true && target.resolved !== undefined) {
          at = target.resolved;
          target = packages[at];
        }
        if (at === undefined || target === undefined) {
          // Peers may be absent, and optional dependencies may not exist for this platform.
          const mayBeAbsent =
            kind === 'peerDependencies' || kind === 'optionalDependencies' || name in optional;
          if (!mayBeAbsent) broken.push(`${who}: ${kind} ${name}@${spec} is not installed`);
          continue;
        }
        // An alias (`npm:real-name@range`) names the package it must resolve to.
        const alias = /^npm:((?:@[^/]+\/)?[^@]+)@(.*)$/.exec(spec);
        const range = alias ? alias[2]! : spec;
        if (alias && target.name !== alias[1]) {
          broken.push(`${who}: ${kind} ${name}@${spec} resolves to ${target.name ?? name} (${at})`);
          continue;
        }
        if (semver.validRange(range, { loose: true }) === null) {
          broken.push(`${who}: ${kind} ${name}@${spec} is not a version range this test can check`);
          continue;
        }
        const version = target.version ?? '';
        if (range !== '*' && range !== '' && !semver.satisfies(version, range, { loose: true })) {
          broken.push(`${who}: ${kind} ${name}@${spec} resolves to ${version} (${at})`);
        }
      }
    }
  }
  return broken;
}

describe('package-lock.json', () => {
  it('resolves every declared dependency range to a version the range accepts', () => {
    const lock = JSON.parse(readFileSync(path.join(__dirname, '..', 'package-lock.json'), 'utf8')) as {
      lockfileVersion: number;
      packages: LockPackages;
    };
    expect(lock.lockfileVersion).toBeGreaterThanOrEqual(2);
    expect(Object.keys(lock.packages).length).toBeGreaterThan(100);
    expect(brokenRanges(lock.packages)).toEqual([]);
  });
});

describe('brokenRanges', () => {
  // A nested copy shadows the hoisted one for its own subtree only, as in node's module resolution.
  const packages: LockPackages = {
    '': { dependencies: { a: '^1.0.0', b: '^2.0.0' }, devDependencies: { d: '*' } },
    'node_modules/a': { version: '1.2.0', dependencies: { c: '^3.0.0', x: 'npm:c@^3.0.0' } },
    'node_modules/a/node_modules/c': { version: '3.1.0' },
    'node_modules/a/node_modules/x': { name: 'c', version: '3.0.0' },
    'node_modules/b': { version: '2.0.0', dependencies: { c: '^4.0.0' }, peerDependencies: { e: '^1.0.0' } },
    'node_modules/c': { version: '4.0.0' },
    'node_modules/d': { version: '0.1.0' },
  };

  it('accepts a tree whose nested and hoisted copies each satisfy their dependents', () => {
    expect(resolveFrom(packages, 'node_modules/a', 'c')).toBe('node_modules/a/node_modules/c');
    expect(resolveFrom(packages, 'node_modules/b', 'c')).toBe('node_modules/c');
    expect(brokenRanges(packages)).toEqual([]);
  });

  it('reports a range broken by the copy npm would load, a wrong alias and a missing dependency', () => {
    const bent: LockPackages = {
      ...packages,
      'node_modules/b': {
        version: '2.0.0',
        dependencies: { c: '^3.0.0', f: '^1.0.0' },
        peerDependencies: { d: '>=1' },
      },
      'node_modules/a/node_modules/x': { name: 'y', version: '3.0.0' },
    };
    expect(brokenRanges(bent)).toEqual([
      'node_modules/a: dependencies x@npm:c@^3.0.0 resolves to y (node_modules/a/node_modules/x)',
      'node_modules/b: dependencies c@^3.0.0 resolves to 4.0.0 (node_modules/c)',
      'node_modules/b: dependencies f@^1.0.0 is not installed',
      'node_modules/b: peerDependencies d@>=1 resolves to 0.1.0 (node_modules/d)',
    ]);
  });
});
