/**
 * Drives the app's registered functions as the Functions host would: real `HttpRequest` and
 * `InvocationContext` objects from `@azure/functions`, extra outputs read back from the context.
 */
import { HttpRequest, HttpResponse, InvocationContext, type HttpResponseInit } from '@azure/functions';
import { getProgrammingModel, registrations, type RpcTypedData, type Registration } from './functionsCore';

/** Log lines captured from `context.log` & co. */
export const capturedLogs: string[] = [];

/** Loads the app through `package.json`-equivalent entry (`src/index.ts`) and returns the registrations. */
export function loadApp(): Map<string, Registration> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('../../src/index');
  return registrations();
}

function registration(name: string): Registration {
  const found = registrations().get(name);
  if (!found)
    throw new Error(
      `No function named ${name} is registered (have: ${[...registrations().keys()].join(', ')})`,
    );
  return found;
}

function contextFor(reg: Registration, triggerMetadata?: Record<string, unknown>): InvocationContext {
  const bindings = Object.values(reg.bindings);
  const trigger = bindings.find((b) => b.direction === 'in' && /trigger$/i.test(b.type));
  return new InvocationContext({
    invocationId: `inv-${Math.random().toString(16).slice(2)}`,
    functionName: reg.name,
    triggerMetadata,
    options: {
      trigger: { type: trigger?.type ?? 'unknown', name: trigger?.name ?? 'trigger' },
      extraOutputs: bindings
        .filter((b) => b.direction === 'out' && b.name !== '$return')
        .map((b) => ({ ...b, name: b.name, type: b.type })),
      extraInputs: [],
    },
    logHandler: (level, ...args) => capturedLogs.push(`[${level}] ${args.map(String).join(' ')}`),
  });
}

/** The response-queue messages a context holds (one binding: the response queue). */
function queueOutputs(reg: Registration, context: InvocationContext): unknown[] {
  const out = Object.values(reg.bindings).filter((b) => b.direction === 'out' && b.type === 'serviceBus');
  const values = out.map((b) => context.extraOutputs.get(b.name)).filter((v) => v !== undefined);
  return values.flatMap((v) => (Array.isArray(v) ? (v as unknown[]) : [v]));
}

/** What an HTTP invocation produced. */
export interface HttpResult {
  status: number;
  headers: Headers;
  body: unknown;
  messages: unknown[];
}

/** Invokes a registered HTTP function. */
export async function invokeHttp(
  name: string,
  init: {
    body?: string;
    headers?: Record<string, string>;
    params?: Record<string, string>;
    method?: string;
    url?: string;
  },
): Promise<HttpResult> {
  const reg = registration(name);
  const request = new HttpRequest({
    method: init.method ?? 'POST',
    url: init.url ?? 'http://localhost:7071/api/unisolate',
    headers: init.headers ?? { 'content-type': 'application/json' },
    params: init.params ?? {},
    body: init.body === undefined ? undefined : { string: init.body },
  });
  const context = contextFor(reg);
  const init2 = (await reg.handler(request, context)) as HttpResponseInit;
  const response = new HttpResponse(init2);
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: response.status, headers: response.headers, body, messages: queueOutputs(reg, context) };
}

/** What a Service Bus invocation produced: either messages, or the error it threw (for redelivery). */
export interface ServiceBusResult {
  messages: unknown[];
  error?: Error;
}

/** Invokes a registered Service Bus function with a message and trigger metadata. */
export async function invokeServiceBus(
  name: string,
  message: unknown,
  triggerMetadata: Record<string, unknown> = {},
): Promise<ServiceBusResult> {
  const reg = registration(name);
  const context = contextFor(reg, { deliveryCount: 1, messageId: `msg-${Date.now()}`, ...triggerMetadata });
  try {
    await reg.handler(message, context);
  } catch (error) {
    return { messages: [], error: error as Error };
  }
  return { messages: queueOutputs(reg, context) };
}

function fromRpc(data: RpcTypedData | null | undefined): unknown {
  if (!data) return undefined;
  if (typeof data.json === 'string') return JSON.parse(data.json);
  if (typeof data.string === 'string') return data.string;
  if (data.bytes) return Buffer.from(data.bytes).toString('utf8');
  return data.int ?? data.double ?? undefined;
}

/**
 * Invokes a registered (non-HTTP) function the way the Functions worker does: the host's RPC invocation request
 * (trigger data and trigger metadata as RPC typed data, e.g. `{ MessageId: { string: "123" } }`) goes through
 * the programming model the app set (`@azure/functions`' own conversion, plus anything the app wrapped around
 * it), and the response-queue messages are read back from the RPC response.
 * https://github.com/Azure/azure-functions-nodejs-library/blob/v4.x/src/InvocationModel.ts
 */
export async function invokeThroughWorker(
  name: string,
  trigger: RpcTypedData,
  triggerMetadata: Record<string, RpcTypedData> = {},
): Promise<ServiceBusResult> {
  const reg = registration(name);
  const model = getProgrammingModel();
  if (!model) throw new Error('No programming model was set: load the app first');
  const triggerName = Object.entries(reg.bindings).find(
    ([, b]) => b.direction === 'in' && /trigger$/i.test(b.type),
  )?.[0];
  if (!triggerName) throw new Error(`${name} has no trigger binding`);
  const invocationId = `inv-${Math.random().toString(16).slice(2)}`;
  const invocation = model.getInvocationModel({
    invocationId,
    metadata: { name: reg.name, bindings: reg.bindings },
    request: { invocationId, inputData: [{ name: triggerName, data: trigger }], triggerMetadata },
    state: 'invocation',
    log: (level, _category, message) => capturedLogs.push(`[${level}] ${message}`),
  });
  const { context, inputs } = await invocation.getArguments();
  let result: unknown;
  try {
    result = await invocation.invokeFunction(context, inputs, reg.handler);
  } catch (error) {
    return { messages: [], error: error as Error };
  }
  const response = await invocation.getResponse(context, result);
  const queues = new Set(
    Object.entries(reg.bindings)
      .filter(([, b]) => b.direction === 'out' && b.type === 'serviceBus')
      .map(([bindingName]) => bindingName),
  );
  const messages = (response.outputData ?? [])
    .filter((o) => o.name != null && queues.has(o.name))
    .map((o) => fromRpc(o.data));
  return { messages: messages.flatMap((v) => (Array.isArray(v) ? (v as unknown[]) : [v])) };
}
