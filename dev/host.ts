/**
 * The one local stand-in for the Azure Functions host and its Node.js worker, shared by the tests, the sandbox
 * (`npm start`) and the benchmarks.
 *
 * - It provides `@azure/functions-core` ({@link ./functionsCore}) to the app: jest maps the module in its
 *   config; in plain node this module hooks `Module._load`, as the worker injects it.
 * - {@link loadApp} loads the app and checks that every `%SETTING%` of its bindings resolves, as the host does
 *   when it indexes the functions.
 * - {@link route} is the one router: method and route template of the registered HTTP functions under the
 *   route prefix `api`, with the route parameters.
 * - Every invocation takes the worker's path: the host's RPC invocation request (trigger data and trigger
 *   metadata as RPC typed data) goes through the programming model the app set (`getInvocationModel` →
 *   `getArguments` → `invokeFunction` → `getResponse`), so the library's real conversions run (string
 *   metadata JSON-parsed, request bodies, output encoding), and the RPC response is decoded: HTTP status,
 *   headers and body, and the messages sent to each output queue, by queue name.
 *   https://github.com/Azure/azure-functions-nodejs-library/blob/v4.x/src/InvocationModel.ts
 *
 * What it does not do: function keys, hooks, retries, bindings other than HTTP, Service Bus and timers.
 */
import { randomUUID } from 'node:crypto';
import Module from 'node:module';
import path from 'node:path';
import * as functionsCore from './functionsCore';
import {
  getProgrammingModel,
  registrations,
  type BindingMetadata,
  type Registration,
  type RpcTypedData,
} from './functionsCore';

export { registrations, type Registration };

/** The host's route prefix for HTTP functions (host.json `extensions.http.routePrefix`). */
export const ROUTE_PREFIX = 'api';
/** Where `func start` serves the app; the origin of URLs built from a function name. */
export const LOCAL_ORIGIN = 'http://localhost:7071';

/** A binding expression: `%SETTING%`, resolved from the app settings. */
const BINDING_EXPRESSION = /%([^%]+)%/g;

const HOOKED = Symbol.for('mde-unisolate.functionsCoreHook');
type Loader = (request: string, parent: unknown, isMain: boolean) => unknown;
const moduleWithLoad = Module as unknown as { _load: Loader; [HOOKED]?: true };
if (!moduleWithLoad[HOOKED]) {
  // Plain node (sandbox, benchmarks): the worker injects `@azure/functions-core`; here the stand-in is returned.
  // Jest resolves modules itself (moduleNameMapper), so this hook only ever serves plain node.
  const originalLoad = moduleWithLoad._load;
  moduleWithLoad._load = function (request, parent, isMain) {
    if (request === '@azure/functions-core') return functionsCore;
    return originalLoad.call(this, request, parent, isMain);
  };
  moduleWithLoad[HOOKED] = true;
}

/** One log line of an invocation, as the worker forwards it to the host. */
export interface LogEntry {
  functionName: string;
  invocationId: string;
  /** `information`, `warning`, `error`, ... */
  level: string;
  /** `user` (the app's `context.log`) or `system` (the library's own warnings). */
  category: string;
  message: string;
}

let logListener: ((entry: LogEntry) => void) | undefined;

/**
 * Where invocation logs go: the sandbox prints them, tests collect them. Without a listener they are
 * dropped (the benchmarks keep none).
 */
export function onLog(listener: ((entry: LogEntry) => void) | undefined): void {
  logListener = listener;
}

/**
 * Loads the app and starts its programming model as the worker does (`getCapabilities`, which also locks
 * `app.setup`). Checks every `%SETTING%` in the bindings against `process.env`: the host refuses to index a
 * function whose binding expression does not resolve.
 * @param entry - the app's entry file (default: `src/index.ts`), or a function that loads it (the sandbox
 * bundles the app, so it passes `() => require('../src/index')`)
 * @returns every registered function, by name
 */
export async function loadApp(
  entry: string | (() => unknown) = path.join(__dirname, '..', 'src', 'index'),
): Promise<ReadonlyMap<string, Registration>> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (typeof entry === 'string') require(entry);
  else entry();
  const model = getProgrammingModel();
  if (!model) throw new Error('The app registered no function (no programming model was set)');
  await model.getCapabilities?.({});
  const unresolved = [...registrations().values()].flatMap((reg) =>
    Object.values(reg.bindings).flatMap((binding) =>
      Object.values(binding).flatMap((value) =>
        typeof value === 'string'
          ? [...value.matchAll(BINDING_EXPRESSION)]
              .filter(([, setting]) => !process.env[setting!])
              .map(([expression]) => `${reg.name}: ${expression}`)
          : [],
      ),
    ),
  );
  if (unresolved.length > 0) {
    throw new Error(`Binding expressions that resolve to no app setting: ${unresolved.join(', ')}`);
  }
  return registrations();
}

function registration(name: string): Registration {
  const found = registrations().get(name);
  if (!found) {
    throw new Error(
      `No function named ${name} is registered (have: ${[...registrations().keys()].join(', ')})`,
    );
  }
  return found;
}

function triggerOf(reg: Registration): [string, BindingMetadata] {
  const trigger = Object.entries(reg.bindings).find(
    ([, b]) => b.direction === 'in' && /Trigger$/i.test(b.type),
  );
  if (!trigger) throw new Error(`${reg.name} has no trigger binding`);
  return trigger;
}

/** `%SETTING%` replaced by the app setting, as the host resolves binding expressions. */
function resolve(expression: string): string {
  return expression.replace(BINDING_EXPRESSION, (_, setting: string) => process.env[setting] ?? '');
}

/** The route template of an HTTP function (the library's default is the function name). */
function templateOf(reg: Registration): string | undefined {
  const [, trigger] = triggerOf(reg);
  if (trigger.type !== 'httpTrigger') return undefined;
  return typeof trigger.route === 'string' ? trigger.route : reg.name;
}

/** A path segment percent-decoded; a malformed escape is left as sent. */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** Route parameters of `below` (the path below the prefix) under `template`, or undefined. */
function matchTemplate(template: string, below: string): Record<string, string> | undefined {
  const expected = template.split('/');
  const actual = below.split('/');
  if (expected.length !== actual.length) return undefined;
  const params: Record<string, string> = {};
  for (const [i, part] of expected.entries()) {
    const segment = actual[i]!;
    const parameter = /^\{(\w+)\}$/.exec(part)?.[1];
    if (parameter !== undefined) {
      if (segment === '') return undefined;
      params[parameter] = decodeSegment(segment);
    } else if (part.toLowerCase() !== segment.toLowerCase()) return undefined;
  }
  return params;
}

/** A request routed to a function. */
export interface Route {
  registration: Registration;
  params: Record<string, string>;
}

/**
 * The HTTP function that serves `method` and `url` (any origin; the path below `/api/`), with its route
 * parameters, or undefined (the host answers 404). Literal segments are matched case-insensitively; where
 * several templates match, the one with more literal segments wins, as in ASP.NET Core routing.
 */
export function route(method: string, url: string | URL): Route | undefined {
  const pathname = new URL(url, LOCAL_ORIGIN).pathname;
  const prefix = `/${ROUTE_PREFIX}/`;
  if (!pathname.toLowerCase().startsWith(prefix)) return undefined;
  const below = pathname.slice(prefix.length);
  let best: (Route & { literals: number }) | undefined;
  for (const reg of registrations().values()) {
    const template = templateOf(reg);
    if (template === undefined) continue;
    const methods = (triggerOf(reg)[1].methods as string[] | undefined)?.map((m) => m.toUpperCase());
    if (methods && !methods.includes(method.toUpperCase())) continue;
    const params = matchTemplate(template, below);
    if (!params) continue;
    const literals = template.split('/').filter((part) => !part.startsWith('{')).length;
    if (!best || literals > best.literals) best = { registration: reg, params, literals };
  }
  return best && { registration: best.registration, params: best.params };
}

/** What an invocation produced. */
export interface InvocationResult {
  /** Messages sent to each output queue, by queue name (an array output is one message per element). */
  queues: Record<string, unknown[]>;
  /** Every output message of every queue, in binding order (most functions have one output queue). */
  messages: unknown[];
  /** What the function threw: the host fails the invocation (Service Bus redelivers; HTTP answers 500). */
  error?: Error;
  /** Time in the app's handler (`invokeFunction`), excluding the worker's conversions. */
  handlerMs: number;
}

/** What an HTTP invocation produced. */
export interface HttpResult extends InvocationResult {
  status: number;
  headers: Headers;
  /** The body, JSON-decoded when it is JSON, else the text. */
  body: unknown;
}

/** An HTTP request to the app. */
export interface HttpInit {
  /** Default: the function's first method when invoked by name, else GET. */
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
}

function rpcBody(body: string | Uint8Array | undefined): RpcTypedData | undefined {
  if (body === undefined) return undefined;
  return typeof body === 'string' ? { string: body } : { bytes: body };
}

/** Sends a request through the router, as a client of the host would; 404 when no function serves it. */
export async function request(url: string, init: HttpInit = {}): Promise<HttpResult> {
  const method = init.method ?? 'GET';
  const target = new URL(url, LOCAL_ORIGIN);
  const routed = route(method, target);
  if (!routed) {
    const body = { error: `no function serves ${method} ${target.pathname}` };
    return { status: 404, headers: new Headers(), body, queues: {}, messages: [], handlerMs: 0 };
  }
  return invokeRouted(routed, method, target, init);
}

/**
 * Invokes an HTTP function by name: the URL is its route template filled with `params` (encoded), unless
 * `url` is given.
 */
export async function invokeHttp(
  name: string,
  init: HttpInit & { params?: Record<string, string>; url?: string } = {},
): Promise<HttpResult> {
  const reg = registration(name);
  const template = templateOf(reg);
  if (template === undefined) throw new Error(`${name} is not an HTTP function`);
  const params = init.params ?? {};
  const filled = template.replace(/\{(\w+)\}/g, (_, p: string) => encodeURIComponent(params[p] ?? ''));
  const target = new URL(init.url ?? `${LOCAL_ORIGIN}/${ROUTE_PREFIX}/${filled}`);
  const methods = triggerOf(reg)[1].methods as string[] | undefined;
  return invokeRouted({ registration: reg, params }, init.method ?? methods?.[0] ?? 'GET', target, init);
}

async function invokeRouted(routed: Route, method: string, url: URL, init: HttpInit): Promise<HttpResult> {
  const http = {
    method,
    url: url.toString(),
    headers: init.headers ?? {},
    params: routed.params,
    query: Object.fromEntries(url.searchParams),
    body: rpcBody(init.body),
  };
  const { result, returnValue } = await run(routed.registration, { http }, {});
  if (result.error) {
    return { ...result, status: 500, headers: new Headers(), body: '' };
  }
  const response = returnValue?.http;
  const text = response?.body ? decodeText(response.body) : '';
  return {
    ...result,
    status: Number(response?.statusCode ?? 204),
    headers: new Headers(response?.headers ?? {}),
    body: parseOrText(text),
  };
}

/**
 * Invokes a Service Bus function with one message, as the host delivers it: a string as text, bytes as bytes,
 * a number as a number, anything else as JSON (what a sender puts on the queue; the library parses JSON text
 * before the handler sees it).
 * @param metadata - trigger metadata by camelCase name (`messageId`, `deliveryCount`, `correlationId`), sent as
 * the host does: PascalCase names, strings as RPC strings, numbers as RPC ints; null or undefined is left out.
 * `deliveryCount` defaults to 1 and `messageId` to a fresh UUID, as every Service Bus message has both.
 */
export async function invokeServiceBus(
  name: string,
  message: unknown,
  metadata: Record<string, unknown> = {},
): Promise<InvocationResult> {
  const triggerMetadata: Record<string, RpcTypedData> = {};
  for (const [key, value] of Object.entries({ deliveryCount: 1, messageId: randomUUID(), ...metadata })) {
    const data = toRpc(value);
    if (data) triggerMetadata[key.charAt(0).toUpperCase() + key.slice(1)] = data;
  }
  return (await run(registration(name), toRpc(message), triggerMetadata)).result;
}

/** Invokes a timer function once, with the timer information the host sends. */
export async function invokeTimer(name: string, isPastDue = false): Promise<InvocationResult> {
  const timer = { Schedule: { AdjustForDST: true }, ScheduleStatus: null, IsPastDue: isPastDue };
  return (await run(registration(name), { json: JSON.stringify(timer) }, {})).result;
}

/** RPC typed data of a value, as the host encodes it (undefined: no data). */
function toRpc(value: unknown): RpcTypedData | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string') return { string: value };
  if (value instanceof ArrayBuffer) return { bytes: new Uint8Array(value) };
  if (ArrayBuffer.isView(value))
    return { bytes: new Uint8Array(value.buffer, value.byteOffset, value.byteLength) };
  if (typeof value === 'number') return Number.isInteger(value) ? { int: value } : { double: value };
  const json = JSON.stringify(value) as string | undefined;
  return json === undefined ? undefined : { json };
}

function decodeText(data: RpcTypedData): string {
  if (typeof data.string === 'string') return data.string;
  if (typeof data.json === 'string') return data.json;
  return data.bytes ? Buffer.from(data.bytes).toString('utf8') : '';
}

function parseOrText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** An output binding's data as the message(s) it sends: JSON decoded, text as is, bytes as text. */
function decodeOutput(data: RpcTypedData): unknown {
  if (typeof data.json === 'string') return JSON.parse(data.json);
  if (typeof data.string === 'string') return data.string;
  if (data.bytes) return Buffer.from(data.bytes).toString('utf8');
  return data.int ?? data.double ?? undefined;
}

/** One invocation through the app's programming model, as the worker runs it. */
async function run(
  reg: Registration,
  trigger: RpcTypedData | undefined,
  triggerMetadata: Record<string, RpcTypedData>,
): Promise<{ result: InvocationResult; returnValue?: RpcTypedData | null }> {
  const model = getProgrammingModel();
  if (!model) throw new Error('No programming model was set: load the app first');
  const [triggerName] = triggerOf(reg);
  const invocationId = randomUUID();
  const invocation = model.getInvocationModel({
    invocationId,
    metadata: { name: reg.name, bindings: reg.bindings },
    request: { invocationId, inputData: [{ name: triggerName, data: trigger ?? null }], triggerMetadata },
    state: 'invocation',
    log: (level, category, message) =>
      logListener?.({ functionName: reg.name, invocationId, level, category, message }),
  });
  const { context, inputs } = await invocation.getArguments();
  const started = performance.now();
  let returned: unknown;
  try {
    returned = await invocation.invokeFunction(context, inputs, reg.handler);
  } catch (error) {
    const handlerMs = performance.now() - started;
    const thrown = error instanceof Error ? error : new Error(String(error));
    return { result: { queues: {}, messages: [], error: thrown, handlerMs } };
  }
  const handlerMs = performance.now() - started;
  const response = await invocation.getResponse(context, returned);
  const queues: Record<string, unknown[]> = {};
  const messages: unknown[] = [];
  for (const output of response.outputData ?? []) {
    const binding = output.name ? reg.bindings[output.name] : undefined;
    if (!binding || typeof binding.queueName !== 'string' || !output.data) continue;
    const value = decodeOutput(output.data);
    const sent = Array.isArray(value) ? (value as unknown[]) : [value];
    (queues[resolve(binding.queueName)] ??= []).push(...sent);
    messages.push(...sent);
  }
  return { result: { queues, messages, handlerMs }, returnValue: response.returnValue };
}
