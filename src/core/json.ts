/**
 * JSON decoding with a precise error position. `JSON.parse` does the work; only when it fails does a small
 * scanner find where, because V8's messages do not always give a position and may quote the input.
 */

/** Result of {@link parseJson}. */
export type JsonResult = { ok: true; value: unknown } | { ok: false; message: string };

class SyntaxAt extends Error {
  constructor(readonly offset: number) {
    super(`JSON syntax error at ${offset}`);
  }
}

/** Offset of the first syntax error in `text`, or -1 (a minimal RFC 8259 scanner, iterative: any depth). */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  // Open containers, innermost last: the scanner keeps its nesting here, never on the call stack.
  const open: ('{' | '[')[] = [];
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i += 1;
  };
  const fail = (): never => {
    throw new SyntaxAt(i);
  };
  const literal = (word: string): void => {
    for (const ch of word) {
      if (text[i] !== ch) fail();
      i += 1;
    }
  };
  const string = (): void => {
    if (text[i] !== '"') fail();
    i += 1;
    for (;;) {
      if (i >= text.length) fail();
      const c = text.charCodeAt(i);
      if (c === 0x22) return void (i += 1);
      if (c < 0x20) fail();
      if (c === 0x5c) {
        i += 1;
        const e = text[i];
        if (e === 'u') {
          for (let k = 1; k <= 4; k += 1) if (!/[0-9a-fA-F]/.test(text[i + k] ?? '')) fail();
          i += 5;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 1;
        else fail();
      } else i += 1;
    }
  };
  const number = (): void => {
    const match = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!match) fail();
    i += match![0].length;
  };
  /** A member name and its colon; the value follows. */
  const key = (): void => {
    ws();
    string();
    ws();
    if (text[i] !== ':') fail();
    i += 1;
  };
  try {
    for (;;) {
      // A value: a scalar, or the start of a container (whose first member or element comes next).
      ws();
      const c = text[i];
      let opened = false;
      if (c === '{' || c === '[') {
        i += 1;
        ws();
        if (text[i] === (c === '{' ? '}' : ']')) i += 1;
        else {
          open.push(c);
          if (c === '{') key();
          opened = true;
        }
      } else if (c === '"') string();
      else if (c === 't') literal('true');
      else if (c === 'f') literal('false');
      else if (c === 'n') literal('null');
      else number();
      if (opened) continue;
      // After a value: close containers until one continues with a comma, or the text ends.
      for (;;) {
        ws();
        const top = open[open.length - 1];
        if (top === undefined) {
          if (i < text.length) fail();
          return -1;
        }
        if (text[i] === ',') {
          i += 1;
          if (top === '{') key();
          break;
        }
        if (text[i] !== (top === '{' ? '}' : ']')) fail();
        i += 1;
        open.pop();
      }
    }
  } catch (error) {
    return error instanceof SyntaxAt ? error.offset : 0;
  }
}

/**
 * Deepest nesting accepted in a request body: objects and arrays inside each other (`{}` is 1 level,
 * `{"devices": [{}]}` 3, the deepest a release request goes). Deeper bodies are refused as `Invalid` when they
 * are decoded, so nothing after the edge ever walks an unbounded structure.
 */
export const MAX_JSON_DEPTH = 32;

/** Whether `value` nests objects/arrays more than `max` levels deep (iterative: any depth). */
export function nestedDeeperThan(value: unknown, max: number): boolean {
  const pending: [unknown, number][] = [[value, 0]];
  for (let item = pending.pop(); item !== undefined; item = pending.pop()) {
    const [current, depth] = item;
    if (typeof current !== 'object' || current === null || ArrayBuffer.isView(current)) continue;
    if (depth + 1 > max) return true;
    for (const child of Array.isArray(current) ? current : Object.values(current)) {
      if (typeof child === 'object' && child !== null) pending.push([child, depth + 1]);
    }
  }
  return false;
}

/** The problem of a body nested deeper than {@link MAX_JSON_DEPTH}, or undefined. */
export function depthProblem(value: unknown): string | undefined {
  return nestedDeeperThan(value, MAX_JSON_DEPTH)
    ? `the body is nested more than ${MAX_JSON_DEPTH} levels deep; a release request is a flat JSON object (at most 3 levels with "devices")`
    : undefined;
}

/**
 * Decodes JSON; on failure says where (line, column, position) in words a caller can act on. A document
 * nested deeper than {@link MAX_JSON_DEPTH} is refused too.
 */
export function parseJson(text: string): JsonResult {
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch {
    const offset = Math.max(0, jsonErrorOffset(text));
    const before = text.slice(0, offset);
    const line = before.split('\n').length;
    const column = offset - before.lastIndexOf('\n');
    const what =
      offset >= text.length
        ? 'unexpected end of input'
        : `unexpected character ${JSON.stringify(text[offset])}`;
    return {
      ok: false,
      message: `the body is not valid JSON: ${what} at line ${line}, column ${column} (position ${offset})`,
    };
  }
  const tooDeep = depthProblem(value);
  return tooDeep === undefined ? { ok: true, value } : { ok: false, message: tooDeep };
}
