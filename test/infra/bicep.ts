/**
 * Offline reading of the Bicep templates under `infra/`.
 *
 * There is no Bicep compiler here, so the templates are parsed with the tree-sitter-bicep grammar
 * (through web-tree-sitter) and turned into plain JS structures that the policy tests inspect:
 * literals become JS values, every other expression becomes an {@link Expr} holding its source text.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Language, LANGUAGE_VERSION, MIN_COMPATIBLE_VERSION, Node, Parser, Tree } from 'web-tree-sitter';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const INFRA_DIR = path.join(REPO_ROOT, 'infra');
const GRAMMAR_WASM = path.join(REPO_ROOT, 'node_modules', 'tree-sitter-bicep', 'tree-sitter-bicep.wasm');

/** A Bicep expression that is not a literal, kept as its source text. */
export class Expr {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

/** A Bicep value: literals as JS values, anything else as {@link Expr}. */
export type BicepValue = string | number | boolean | null | Expr | BicepValue[] | BicepObject;
export interface BicepObject {
  [key: string]: BicepValue;
}

export interface Decorator {
  name: string;
  args: BicepValue[];
}

export interface ParamDecl {
  name: string;
  type: string;
  /** `undefined`: the parameter is required. */
  defaultValue: BicepValue | undefined;
  decorators: Decorator[];
}

export interface ResourceDecl {
  symbol: string;
  /** Full type without API version, e.g. `Microsoft.Web/sites/config` for a nested `'config'`. */
  type: string;
  apiVersion: string;
  existing: boolean;
  /** Source text of the `if (...)` condition, if any. */
  condition: string | undefined;
  body: BicepObject;
  /** The enclosing resource of a nested declaration. */
  parent: ResourceDecl | undefined;
}

export interface ModuleDecl {
  symbol: string;
  /** Module path as written, relative to the declaring file. */
  source: string;
  condition: string | undefined;
  body: BicepObject;
}

export interface OutputDecl {
  name: string;
  type: string;
  value: BicepValue;
}

export interface BicepFile {
  /** Absolute path. */
  file: string;
  source: string;
  tree: Tree;
  targetScope: string | undefined;
  params: Map<string, ParamDecl>;
  vars: Map<string, BicepValue>;
  /** Every resource declaration, nested ones included. */
  resources: ResourceDecl[];
  modules: ModuleDecl[];
  outputs: Map<string, OutputDecl>;
}

let parserPromise: Promise<{ parser: Parser; language: Language }> | undefined;

/** The Bicep parser, created once per test file. Throws if the grammar's ABI is not supported. */
export function bicepParser(): Promise<{ parser: Parser; language: Language }> {
  parserPromise ??= (async () => {
    await Parser.init();
    // Bytes, not a path: with a path web-tree-sitter uses a dynamic import(), which jest's VM rejects.
    const language = await Language.load(new Uint8Array(fs.readFileSync(GRAMMAR_WASM)));
    const abi = language.abiVersion;
    if (abi < MIN_COMPATIBLE_VERSION || abi > LANGUAGE_VERSION) {
      throw new Error(
        `tree-sitter-bicep ABI ${abi} is outside web-tree-sitter's ${MIN_COMPATIBLE_VERSION}-${LANGUAGE_VERSION}`,
      );
    }
    const parser = new Parser();
    parser.setLanguage(language);
    return { parser, language };
  })();
  return parserPromise;
}

/** Every `.bicep` file under `infra/`, sorted. */
export function bicepFiles(dir = INFRA_DIR): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.bicep'))
    .map((entry) => path.join(entry.parentPath, entry.name))
    .sort();
}

/** ERROR and MISSING nodes of a tree, as `line:column type` strings. Empty: the source parsed cleanly. */
export function syntaxProblems(tree: Tree): string[] {
  const problems: string[] = [];
  const walk = (node: Node): void => {
    if (node.isError || node.isMissing) {
      const where = `${node.startPosition.row + 1}:${node.startPosition.column + 1}`;
      problems.push(
        `${where} ${node.isMissing ? `MISSING ${node.type}` : 'ERROR'} near ${JSON.stringify(node.text.slice(0, 40))}`,
      );
    }
    for (const child of node.children) walk(child);
  };
  walk(tree.rootNode);
  return problems;
}

/** Parses source text. */
export async function parseBicepSource(source: string): Promise<Tree> {
  const { parser } = await bicepParser();
  const tree = parser.parse(source);
  if (!tree) throw new Error('tree-sitter returned no tree');
  return tree;
}

/** Reads and parses one file into its declarations. */
export async function loadBicep(file: string): Promise<BicepFile> {
  const source = fs.readFileSync(file, 'utf8');
  const tree = await parseBicepSource(source);
  const result: BicepFile = {
    file,
    source,
    tree,
    targetScope: undefined,
    params: new Map(),
    vars: new Map(),
    resources: [],
    modules: [],
    outputs: new Map(),
  };
  for (const node of namedChildren(tree.rootNode)) {
    switch (node.type) {
      case 'target_scope_assignment':
        result.targetScope = asString(toValue(namedChildren(node)[0]!));
        break;
      case 'parameter_declaration': {
        const [id, type, value] = namedChildren(node);
        result.params.set(id!.text, {
          name: id!.text,
          type: type!.text,
          defaultValue: value ? toValue(value) : undefined,
          decorators: decoratorsOf(node),
        });
        break;
      }
      case 'variable_declaration': {
        const [id, value] = namedChildren(node);
        result.vars.set(id!.text, toValue(value!));
        break;
      }
      case 'output_declaration': {
        const [id, type, value] = namedChildren(node);
        result.outputs.set(id!.text, { name: id!.text, type: type!.text, value: toValue(value!) });
        break;
      }
      case 'resource_declaration':
        collectResources(node, undefined, result.resources);
        break;
      case 'module_declaration': {
        const [id, pathNode] = namedChildren(node);
        const { condition, body } = declarationBody(node);
        result.modules.push({ symbol: id!.text, source: asString(toValue(pathNode!)), condition, body });
        break;
      }
      default:
        break;
    }
  }
  return result;
}

let infraPromise: Promise<Map<string, BicepFile>> | undefined;

/**
 * Loads every file under `infra/`, keyed by path relative to `infra/` with forward slashes. Loaded once per
 * test file and shared: callers must not modify the result.
 */
export function loadInfra(): Promise<Map<string, BicepFile>> {
  infraPromise ??= (async () => {
    const files = new Map<string, BicepFile>();
    for (const file of bicepFiles()) {
      files.set(path.relative(INFRA_DIR, file).split(path.sep).join('/'), await loadBicep(file));
    }
    return files;
  })();
  return infraPromise;
}

/** The source with every comment blanked out (same length), for text scans that must ignore comments. */
export function codeWithoutComments(file: Pick<BicepFile, 'source' | 'tree'>): string {
  const chars = [...file.source];
  const walk = (node: Node): void => {
    if (node.type === 'comment' || node.type === 'diagnostic_comment') {
      // Indices are UTF-16 offsets; the templates are ASCII, where they equal character offsets.
      for (let i = node.startIndex; i < node.endIndex; i += 1) if (chars[i] !== '\n') chars[i] = ' ';
      return;
    }
    for (const child of node.children) walk(child);
  };
  walk(file.tree.rootNode);
  return chars.join('');
}

/** Converts a value node to a JS structure. */
export function toValue(node: Node): BicepValue {
  switch (node.type) {
    case 'string':
      return stringValue(node);
    case 'number':
      return Number(node.text);
    case 'boolean':
      return node.text === 'true';
    case 'null':
      return null;
    case 'array':
      return namedChildren(node).map(toValue);
    case 'object': {
      const object: BicepObject = {};
      for (const property of namedChildren(node)) {
        if (property.type !== 'object_property') continue;
        const [key, value] = namedChildren(property);
        if (!key || !value || key.type === 'resource_declaration') continue; // nested resources: see collectResources
        // An interpolated key (`'${identityId}': {}`) is kept as its source text.
        const name = key.type === 'string' ? stringValue(key) : key.text;
        object[name instanceof Expr ? name.text : asString(name)] = toValue(value);
      }
      return object;
    }
    default:
      return new Expr(node.text);
  }
}

/** A literal string, or fails. */
export function asString(value: BicepValue | undefined): string {
  if (typeof value !== 'string') throw new Error(`expected a string literal, got ${describe(value)}`);
  return value;
}

/** A nested object, or fails. */
export function asObject(value: BicepValue | undefined): BicepObject {
  if (value === null || typeof value !== 'object' || value instanceof Expr || Array.isArray(value)) {
    throw new Error(`expected an object literal, got ${describe(value)}`);
  }
  return value;
}

/** Follows a dotted path through nested objects; `undefined` when a step is missing. */
export function getPath(value: BicepValue | undefined, dotted: string): BicepValue | undefined {
  let current: BicepValue | undefined = value;
  for (const key of dotted.split('.')) {
    if (current === null || current === undefined || typeof current !== 'object') return undefined;
    if (current instanceof Expr || Array.isArray(current)) return undefined;
    current = current[key];
  }
  return current;
}

/** Source text of an expression value (literal strings are quoted the Bicep way). */
export function exprText(value: BicepValue | undefined): string {
  if (value instanceof Expr) return value.text;
  if (typeof value === 'string') return `'${value}'`;
  return JSON.stringify(value);
}

function describe(value: BicepValue | undefined): string {
  return value instanceof Expr ? `expression ${value.text}` : JSON.stringify(value);
}

function namedChildren(node: Node): Node[] {
  return node.children.filter(
    (child) => child.isNamed && child.type !== 'comment' && child.type !== 'diagnostic_comment',
  );
}

function stringValue(node: Node): BicepValue {
  let text = '';
  for (const part of namedChildren(node)) {
    if (part.type === 'interpolation') return new Expr(node.text);
    text += part.type === 'escape_sequence' ? unescape(part.text) : part.text;
  }
  return text;
}

function unescape(sequence: string): string {
  const simple: Record<string, string> = {
    "\\'": "'",
    '\\\\': '\\',
    '\\n': '\n',
    '\\r': '\r',
    '\\t': '\t',
    '\\$': '$',
  };
  const known = simple[sequence];
  if (known !== undefined) return known;
  const unicode = /^\\u\{([0-9a-fA-F]+)\}$/.exec(sequence);
  if (unicode) return String.fromCodePoint(parseInt(unicode[1]!, 16));
  throw new Error(`unknown escape sequence ${sequence}`);
}

function decoratorsOf(node: Node): Decorator[] {
  let previous = node.previousNamedSibling;
  while (previous?.type === 'comment') previous = previous.previousNamedSibling;
  if (previous?.type !== 'decorators') return [];
  return namedChildren(previous).map((decorator) => {
    const call = namedChildren(decorator)[0]!;
    const [name, args] = namedChildren(call);
    return { name: name!.text, args: args ? namedChildren(args).map(toValue) : [] };
  });
}

/** The body object of a resource or module, and its `if` condition. Loops are not used in `infra/`. */
function declarationBody(node: Node): { condition: string | undefined; body: BicepObject } {
  const last = namedChildren(node).at(-1)!;
  if (last.type === 'object') return { condition: undefined, body: asObject(toValue(last)) };
  if (last.type === 'if_statement') {
    const [condition, object] = namedChildren(last);
    return { condition: condition!.text, body: asObject(toValue(object!)) };
  }
  throw new Error(`unsupported declaration body: ${last.type}`);
}

function collectResources(node: Node, parent: ResourceDecl | undefined, into: ResourceDecl[]): void {
  const [id, typeNode] = namedChildren(node);
  const typeString = asString(toValue(typeNode!));
  const [typeName, apiVersion] = typeString.split('@');
  // A nested declaration may give just the child type ('config'), completed from its parent.
  const type = parent && !typeName!.includes('/') ? `${parent.type}/${typeName}` : typeName!;
  const { condition, body } = declarationBody(node);
  const resource: ResourceDecl = {
    symbol: id!.text,
    type,
    apiVersion: apiVersion ?? parent?.apiVersion ?? '',
    existing: node.children.some((child) => child.type === 'existing'),
    condition,
    body,
    parent,
  };
  into.push(resource);
  const bodyNode = namedChildren(node).at(-1)!;
  const objectNode = bodyNode.type === 'object' ? bodyNode : namedChildren(bodyNode).at(-1)!;
  for (const property of namedChildren(objectNode)) {
    const nested = namedChildren(property)[0];
    if (nested?.type === 'resource_declaration') collectResources(nested, resource, into);
  }
}

/**
 * Identifiers the file refers to: every `identifier` node except declaration names and object keys.
 * Used like Bicep's no-unused-params / no-unused-vars linter rules.
 */
export function referencedIdentifiers(file: Pick<BicepFile, 'tree'>): Set<string> {
  const declarations = new Set([
    'parameter_declaration',
    'variable_declaration',
    'resource_declaration',
    'module_declaration',
    'output_declaration',
  ]);
  const names = new Set<string>();
  const walk = (node: Node): void => {
    const first = namedChildren(node)[0];
    for (const child of node.children) {
      const isDeclaredName = declarations.has(node.type) && child.equals(first!);
      const isKey = node.type === 'object_property' && child.equals(first!) && child.type === 'identifier';
      if (child.type === 'identifier' && !isDeclaredName && !isKey) names.add(child.text);
      walk(child);
    }
  };
  walk(file.tree.rootNode);
  return names;
}
