/** JSON decoding at the edge: error positions at any depth, and the nesting limit. */
import fc from 'fast-check';
import { jsonErrorOffset, MAX_JSON_DEPTH, nestedDeeperThan, parseJson } from '../../src/core/json';

describe('jsonErrorOffset', () => {
  it.each([
    ['{"comment": "x",}', 16],
    ['{"a" 1}', 5],
    ['[1,,2]', 3],
    ['{"a":[1,2}', 9],
    ['"\\q"', 2],
    ['tru', 3],
    ['{} x', 3],
    ['', 0],
  ])('finds the first error in %j at %i', (text, offset) => {
    expect(jsonErrorOffset(text)).toBe(offset);
  });

  it('scans any depth without recursion (a 100,000-level document)', () => {
    const depth = 100_000;
    expect(jsonErrorOffset(`${'['.repeat(depth)}${']'.repeat(depth)}`)).toBe(-1);
    expect(jsonErrorOffset(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`)).toBe(-1);
    expect(jsonErrorOffset(`${'['.repeat(depth)}}`)).toBe(depth);
  });

  it('agrees with JSON.parse on what is valid, and never points past the end', () => {
    fc.assert(
      fc.property(fc.json(), fc.nat(), (text, cut) => {
        expect(jsonErrorOffset(text)).toBe(-1);
        const prefix = text.slice(0, cut % (text.length + 1));
        let valid = true;
        try {
          JSON.parse(prefix);
        } catch {
          valid = false;
        }
        const offset = jsonErrorOffset(prefix);
        expect(offset === -1).toBe(valid);
        expect(offset).toBeLessThanOrEqual(prefix.length);
      }),
    );
  });
});

describe('parseJson nesting limit', () => {
  const nested = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;

  it(`accepts ${MAX_JSON_DEPTH} levels and refuses one more, saying why`, () => {
    expect(parseJson(nested(MAX_JSON_DEPTH))).toMatchObject({ ok: true });
    expect(parseJson(nested(MAX_JSON_DEPTH + 1))).toEqual({
      ok: false,
      message: expect.stringMatching(/nested more than 32 levels deep/),
    });
    expect(parseJson('{"devices":[{"machineId":"x"}]}')).toMatchObject({ ok: true });
  });

  it('measures depth iteratively: scalars are 0, each object or array one level', () => {
    expect(nestedDeeperThan('text', 0)).toBe(false);
    expect(nestedDeeperThan({}, 0)).toBe(true);
    expect(nestedDeeperThan({ a: [{}] }, 3)).toBe(false);
    expect(nestedDeeperThan({ a: [{}] }, 2)).toBe(true);
    let deep: unknown = [];
    for (let i = 0; i < 200_000; i += 1) deep = [deep];
    expect(nestedDeeperThan(deep, MAX_JSON_DEPTH)).toBe(true);
  });
});
