/**
 * A small OData v4 query evaluator for the Defender simulator: `$filter`, `$orderby`, `$top`, `$skip` and
 * `$select`, over plain JSON entities.
 *
 * Supported `$filter` grammar (what MDE documents for its list APIs,
 * https://learn.microsoft.com/defender-endpoint/api/exposed-apis-odata-samples):
 * - comparisons `eq ne gt ge lt le` between a property and a literal (either order);
 * - `in` with a parenthesised literal list (OData 4.01): `id in ('a','b')`;
 * - functions `startswith(prop,'x')`, `endswith(prop,'x')`, `contains(prop,'x')`, `tolower(prop)`,
 *   `toupper(prop)`;
 * - lambda `any` on string collections: `machineTags/any(tag: tag eq 'x')`;
 * - `and`, `or`, `not`, parentheses;
 * - literals: `'string'` (a quote inside is doubled: `'o''brien'`), numbers, `true`, `false`, `null`, and
 *   unquoted date-times such as `2024-01-31T10:00:00Z` / `2024-01-31Z`.
 *
 * String comparison is case-insensitive, as MDE's (SQL-backed) filters are: `computerDnsName eq 'WS-01'`
 * matches `ws-01`. A date-time literal compared to a string property compares as instants.
 */

/** Raised for a malformed or unsupported query; the simulator maps it to `400 ODataError`. */
export class ODataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ODataError';
  }
}

type Literal = string | number | boolean | null | { date: number; text: string };

/** Parsed `$filter` expression. */
export type FilterNode =
  | { kind: 'and' | 'or'; left: FilterNode; right: FilterNode }
  | { kind: 'not'; operand: FilterNode }
  | { kind: 'cmp'; op: 'eq' | 'ne' | 'gt' | 'ge' | 'lt' | 'le'; left: ValueNode; right: ValueNode }
  | { kind: 'in'; value: ValueNode; list: Literal[] }
  | { kind: 'call'; fn: 'startswith' | 'endswith' | 'contains'; args: [ValueNode, ValueNode] }
  | { kind: 'any'; property: string; variable: string; predicate: FilterNode }
  | { kind: 'bool'; value: ValueNode };

/** A value-producing expression. */
export type ValueNode =
  | { kind: 'prop'; name: string }
  | { kind: 'lit'; value: Literal }
  | { kind: 'fn'; fn: 'tolower' | 'toupper'; arg: ValueNode };

type Token =
  | { t: 'str'; v: string }
  | { t: 'num'; v: number }
  | { t: 'date'; v: number; text: string }
  | { t: 'id'; v: string }
  | { t: '(' | ')' | ',' | ':' | '/' };

const DATE_RE = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?/;

function tokenize(input: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < input.length) {
    const c = input[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
    } else if (c === "'") {
      let value = '';
      i++;
      for (;;) {
        if (i >= input.length) throw new ODataError('Unterminated string literal');
        const ch = input[i]!;
        if (ch === "'") {
          if (input[i + 1] === "'") {
            value += "'";
            i += 2;
            continue;
          }
          i++;
          break;
        }
        value += ch;
        i++;
      }
      tokens.push({ t: 'str', v: value });
    } else if (c === '(' || c === ')' || c === ',' || c === ':' || c === '/') {
      tokens.push({ t: c });
      i++;
    } else if (/[0-9-]/.test(c)) {
      const rest = input.slice(i);
      const date = DATE_RE.exec(rest);
      if (date && /^\d{4}-/.test(rest)) {
        const text = date[0];
        const ms = Date.parse(/T/.test(text) || !/Z$/.test(text) ? text : text.replace(/Z$/, 'T00:00:00Z'));
        if (Number.isNaN(ms)) throw new ODataError(`Invalid date-time literal '${text}'`);
        tokens.push({ t: 'date', v: ms, text });
        i += text.length;
      } else {
        const num = /^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(rest);
        if (!num) throw new ODataError(`Unexpected character '${c}' at position ${i}`);
        tokens.push({ t: 'num', v: Number(num[0]) });
        i += num[0].length;
      }
    } else if (/[A-Za-z_$@]/.test(c)) {
      const id = /^[A-Za-z_$@][A-Za-z0-9_.$@]*/.exec(input.slice(i))!;
      tokens.push({ t: 'id', v: id[0] });
      i += id[0].length;
    } else {
      throw new ODataError(`Unexpected character '${c}' at position ${i}`);
    }
  }
  return tokens;
}

const CMP_OPS = new Set(['eq', 'ne', 'gt', 'ge', 'lt', 'le']);

class Parser {
  private pos = 0;
  constructor(private readonly tokens: Token[]) {}

  parse(): FilterNode {
    const node = this.parseOr();
    if (this.pos < this.tokens.length) throw new ODataError(`Unexpected token at position ${this.pos}`);
    return node;
  }

  private peek(): Token | undefined {
    return this.tokens[this.pos];
  }

  private isKeyword(word: string): boolean {
    const t = this.peek();
    return t?.t === 'id' && t.v.toLowerCase() === word;
  }

  private expect(t: Token['t']): Token {
    const tok = this.tokens[this.pos];
    if (tok?.t !== t) throw new ODataError(`Expected '${t}' at token ${this.pos}`);
    this.pos++;
    return tok;
  }

  private parseOr(): FilterNode {
    let left = this.parseAnd();
    while (this.isKeyword('or')) {
      this.pos++;
      left = { kind: 'or', left, right: this.parseAnd() };
    }
    return left;
  }

  private parseAnd(): FilterNode {
    let left = this.parseUnary();
    while (this.isKeyword('and')) {
      this.pos++;
      left = { kind: 'and', left, right: this.parseUnary() };
    }
    return left;
  }

  private parseUnary(): FilterNode {
    if (this.isKeyword('not')) {
      this.pos++;
      return { kind: 'not', operand: this.parseUnary() };
    }
    return this.parsePredicate();
  }

  private parsePredicate(): FilterNode {
    const tok = this.peek();
    if (tok?.t === '(') {
      this.pos++;
      const inner = this.parseOr();
      this.expect(')');
      return inner;
    }
    if (tok?.t === 'id') {
      const name = tok.v.toLowerCase();
      const next = this.tokens[this.pos + 1];
      if (next?.t === '(' && (name === 'startswith' || name === 'endswith' || name === 'contains')) {
        this.pos += 2;
        const a = this.parseValue();
        this.expect(',');
        const b = this.parseValue();
        this.expect(')');
        return this.maybeComparison({ kind: 'call', fn: name, args: [a, b] });
      }
      if (next?.t === '/') {
        const property = tok.v;
        this.pos += 2;
        const fn = this.expect('id') as { t: 'id'; v: string };
        if (fn.v.toLowerCase() !== 'any') throw new ODataError(`Unsupported lambda '${fn.v}'`);
        this.expect('(');
        const variable = (this.expect('id') as { t: 'id'; v: string }).v;
        this.expect(':');
        const predicate = this.parseOr();
        this.expect(')');
        return { kind: 'any', property, variable, predicate };
      }
    }
    const left = this.parseValue();
    if (this.isKeyword('in')) {
      this.pos++;
      this.expect('(');
      const list: Literal[] = [];
      for (;;) {
        const v = this.parseValue();
        if (v.kind !== 'lit') throw new ODataError("'in' list may only contain literals");
        list.push(v.value);
        if (this.peek()?.t === ',') {
          this.pos++;
          continue;
        }
        break;
      }
      this.expect(')');
      return { kind: 'in', value: left, list };
    }
    const opTok = this.peek();
    if (opTok?.t === 'id' && CMP_OPS.has(opTok.v.toLowerCase())) {
      this.pos++;
      const op = opTok.v.toLowerCase() as 'eq' | 'ne' | 'gt' | 'ge' | 'lt' | 'le';
      return { kind: 'cmp', op, left, right: this.parseValue() };
    }
    if (left.kind === 'prop') return { kind: 'bool', value: left };
    throw new ODataError('Expected a comparison operator');
  }

  /** `startswith(a,'b') eq true` is legal OData; fold it back into the call. */
  private maybeComparison(call: FilterNode): FilterNode {
    const opTok = this.peek();
    if (opTok?.t === 'id' && (opTok.v.toLowerCase() === 'eq' || opTok.v.toLowerCase() === 'ne')) {
      this.pos++;
      const rhs = this.parseValue();
      if (rhs.kind !== 'lit' || typeof rhs.value !== 'boolean')
        throw new ODataError('Expected true or false');
      const positive = (opTok.v.toLowerCase() === 'eq') === rhs.value;
      return positive ? call : { kind: 'not', operand: call };
    }
    return call;
  }

  private parseValue(): ValueNode {
    const tok = this.peek();
    if (!tok) throw new ODataError('Unexpected end of $filter');
    this.pos++;
    switch (tok.t) {
      case 'str':
        return { kind: 'lit', value: tok.v };
      case 'num':
        return { kind: 'lit', value: tok.v };
      case 'date':
        return { kind: 'lit', value: { date: tok.v, text: tok.text } };
      case 'id': {
        const lower = tok.v.toLowerCase();
        if (lower === 'true' || lower === 'false') return { kind: 'lit', value: lower === 'true' };
        if (lower === 'null') return { kind: 'lit', value: null };
        if ((lower === 'tolower' || lower === 'toupper') && this.peek()?.t === '(') {
          this.pos++;
          const arg = this.parseValue();
          this.expect(')');
          return { kind: 'fn', fn: lower, arg };
        }
        return { kind: 'prop', name: tok.v };
      }
      default:
        throw new ODataError(`Unexpected '${tok.t}'`);
    }
  }
}

/** Parses a `$filter` expression. @throws {@link ODataError} */
export function parseFilter(filter: string): FilterNode {
  return new Parser(tokenize(filter)).parse();
}

/** Reads a property case-insensitively (exact name first). Undefined when the entity has no such property. */
function readProp(entity: Record<string, unknown>, name: string, scope: Record<string, unknown>): unknown {
  if (name in scope) return scope[name];
  if (name in entity) return entity[name];
  const lower = name.toLowerCase();
  for (const key of Object.keys(entity)) if (key.toLowerCase() === lower) return entity[key];
  throw new ODataError(`Could not find a property named '${name}' on the entity type.`);
}

function evalValue(
  node: ValueNode,
  entity: Record<string, unknown>,
  scope: Record<string, unknown>,
): unknown {
  switch (node.kind) {
    case 'lit':
      return node.value;
    case 'prop':
      return readProp(entity, node.name, scope);
    case 'fn': {
      const v = evalValue(node.arg, entity, scope);
      if (typeof v !== 'string') return v;
      return node.fn === 'tolower' ? v.toLowerCase() : v.toUpperCase();
    }
  }
}

function isDateLit(v: unknown): v is { date: number; text: string } {
  return typeof v === 'object' && v !== null && 'date' in v;
}

/** Compares two values OData-style; undefined when incomparable. */
function compare(a: unknown, b: unknown): number | undefined {
  if (isDateLit(a) || isDateLit(b)) {
    const ta = isDateLit(a) ? a.date : typeof a === 'string' ? Date.parse(a) : NaN;
    const tb = isDateLit(b) ? b.date : typeof b === 'string' ? Date.parse(b) : NaN;
    if (Number.isNaN(ta) || Number.isNaN(tb)) return undefined;
    return ta - tb;
  }
  if (typeof a === 'string' && typeof b === 'string') {
    const x = a.toLowerCase();
    const y = b.toLowerCase();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'number' && typeof b === 'string' && b.trim() !== '' && !Number.isNaN(Number(b))) {
    return a - Number(b);
  }
  if (typeof a === 'string' && typeof b === 'number' && a.trim() !== '' && !Number.isNaN(Number(a))) {
    return Number(a) - b;
  }
  if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
  return undefined;
}

function equals(a: unknown, b: unknown): boolean {
  if (a === null || a === undefined || b === null || b === undefined) {
    return (a === null || a === undefined) && (b === null || b === undefined);
  }
  return compare(a, b) === 0;
}

/** Evaluates a parsed filter against one entity. */
export function matches(
  node: FilterNode,
  entity: Record<string, unknown>,
  scope: Record<string, unknown> = {},
): boolean {
  switch (node.kind) {
    case 'and':
      return matches(node.left, entity, scope) && matches(node.right, entity, scope);
    case 'or':
      return matches(node.left, entity, scope) || matches(node.right, entity, scope);
    case 'not':
      return !matches(node.operand, entity, scope);
    case 'bool':
      return evalValue(node.value, entity, scope) === true;
    case 'in': {
      const v = evalValue(node.value, entity, scope);
      return node.list.some((item) => equals(v, item));
    }
    case 'call': {
      const a = evalValue(node.args[0], entity, scope);
      const b = evalValue(node.args[1], entity, scope);
      if (typeof a !== 'string' || typeof b !== 'string') return false;
      const x = a.toLowerCase();
      const y = b.toLowerCase();
      return node.fn === 'startswith'
        ? x.startsWith(y)
        : node.fn === 'endswith'
          ? x.endsWith(y)
          : x.includes(y);
    }
    case 'any': {
      const coll = readProp(entity, node.property, scope);
      if (!Array.isArray(coll)) return false;
      return coll.some((item: unknown) =>
        matches(node.predicate, entity, { ...scope, [node.variable]: item }),
      );
    }
    case 'cmp': {
      const a = evalValue(node.left, entity, scope);
      const b = evalValue(node.right, entity, scope);
      if (node.op === 'eq') return equals(a, b);
      if (node.op === 'ne') return !equals(a, b);
      const c = compare(a, b);
      if (c === undefined) return false;
      return node.op === 'gt' ? c > 0 : node.op === 'ge' ? c >= 0 : node.op === 'lt' ? c < 0 : c <= 0;
    }
  }
}

/**
 * If `node` requires `property eq '<value>'` (at top level or inside an `and` chain), returns that value.
 * Lets the simulator use an index instead of scanning every entity.
 */
export function requiredEquality(node: FilterNode, property: string): string | undefined {
  const lower = property.toLowerCase();
  if (node.kind === 'and')
    return requiredEquality(node.left, property) ?? requiredEquality(node.right, property);
  if (node.kind !== 'cmp' || node.op !== 'eq') return undefined;
  const { left, right } = node;
  if (left.kind === 'prop' && left.name.toLowerCase() === lower && right.kind === 'lit') {
    return typeof right.value === 'string' ? right.value : undefined;
  }
  if (right.kind === 'prop' && right.name.toLowerCase() === lower && left.kind === 'lit') {
    return typeof left.value === 'string' ? left.value : undefined;
  }
  return undefined;
}

/** Parsed `$orderby` clause. */
export interface OrderBy {
  property: string;
  descending: boolean;
}

/** Parses `$orderby` (`prop [asc|desc], …`). @throws {@link ODataError} */
export function parseOrderBy(orderby: string): OrderBy[] {
  return orderby
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '')
    .map((part) => {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:\s+(asc|desc))?$/i.exec(part);
      if (!m) throw new ODataError(`Invalid $orderby clause '${part}'`);
      return { property: m[1]!, descending: (m[2] ?? 'asc').toLowerCase() === 'desc' };
    });
}

function parseCount(name: string, raw: string | null, max: number): number | undefined {
  if (raw === null) return undefined;
  if (!/^\d+$/.test(raw.trim())) throw new ODataError(`Invalid ${name} value '${raw}'`);
  const n = Number(raw.trim());
  if (n > max) throw new ODataError(`The limit of '${max}' for ${name} query has been exceeded.`);
  return n;
}

/** Query options understood by {@link applyQuery}. */
export interface QueryOptions {
  /** Max `$top` accepted (MDE: 10000). */
  maxTop?: number;
  /**
   * Pre-narrowing hook: given the parsed filter, may return a smaller candidate list (e.g. from an index).
   * The filter is still applied to whatever it returns.
   */
  candidates?: (filter: FilterNode | undefined) => readonly Record<string, unknown>[] | undefined;
}

/**
 * Applies `$filter`, `$orderby`, `$skip`, `$top` and `$select` from `query` to `items`.
 * @throws {@link ODataError} on a malformed query.
 */
export function applyQuery<T extends Record<string, unknown>>(
  items: readonly T[],
  query: URLSearchParams,
  options: QueryOptions = {},
): Record<string, unknown>[] {
  const filterText = query.get('$filter');
  const filter = filterText !== null && filterText.trim() !== '' ? parseFilter(filterText) : undefined;
  const orderText = query.get('$orderby');
  const order = orderText !== null ? parseOrderBy(orderText) : [];
  const maxTop = options.maxTop ?? 10000;
  const top = parseCount('$top', query.get('$top'), maxTop);
  const skip = parseCount('$skip', query.get('$skip'), Number.MAX_SAFE_INTEGER) ?? 0;
  const selectText = query.get('$select');

  const source = (options.candidates?.(filter) as readonly T[] | undefined) ?? items;
  let result: Record<string, unknown>[] = filter ? source.filter((e) => matches(filter, e)) : [...source];
  if (order.length > 0) {
    // Validate property names even when the result is empty, like the real service.
    if (result[0] !== undefined) for (const o of order) readProp(result[0], o.property, {});
    result.sort((a, b) => {
      for (const o of order) {
        const c = compare(readProp(a, o.property, {}), readProp(b, o.property, {})) ?? 0;
        if (c !== 0) return o.descending ? -c : c;
      }
      return 0;
    });
  }
  result = result.slice(skip, top === undefined ? undefined : skip + top);
  if (selectText !== null && selectText.trim() !== '') {
    const fields = selectText.split(',').map((f) => f.trim());
    result = result.map((e) => Object.fromEntries(fields.map((f) => [f, readProp(e, f, {})])));
  }
  return result;
}
