/**
 * A stand-in for the Azure Functions Node.js worker, for benchmark child processes: it provides
 * `@azure/functions-core` (hooking `Module._load`, as the worker injects that module), loads an app file, and
 * invokes registered functions exactly as the worker does, through the app's own programming model
 * (`getInvocationModel(coreCtx)` → `getArguments` → `invokeFunction` → `getResponse`), with RPC-shaped
 * trigger data. So what is measured is the deployed bundle plus the library's real conversion work.
 * https://github.com/Azure/azure-functions-nodejs-library/blob/v4.x/src/InvocationModel.ts
 */
import Module from 'node:module';

/** RPC typed data, the subset used here. */
export interface RpcTypedData {
  string?: string;
  json?: string;
  bytes?: Uint8Array;
  int?: number;
  http?: Record<string, unknown>;
}

interface CoreRegistration {
  metadata: {
    name: string;
    bindings: Record<string, { type: string; direction: string; queueName?: string }>;
  };
  callback: (...args: unknown[]) => unknown;
}

interface InvocationModel {
  getArguments(): Promise<{ context: unknown; inputs: unknown[] }>;
  invokeFunction(context: unknown, inputs: unknown[], handler: unknown): Promise<unknown>;
  getResponse(
    context: unknown,
    result: unknown,
  ): Promise<{
    returnValue?: RpcTypedData | null;
    outputData?: Array<{ name: string; data: RpcTypedData | null | undefined }>;
  }>;
}

interface ProgrammingModel {
  getInvocationModel(coreCtx: unknown): InvocationModel;
  getCapabilities(capabilities: Record<string, string>): Promise<Record<string, string>>;
}

const functions = new Map<string, CoreRegistration>();
let programmingModel: ProgrammingModel | undefined;
let invocations = 0;

const coreApi = {
  version: '3.10.1-bench',
  registerFunction(metadata: CoreRegistration['metadata'], callback: CoreRegistration['callback']) {
    functions.set(metadata.name, { metadata, callback });
    return { dispose: () => functions.delete(metadata.name) };
  },
  setProgrammingModel(model: ProgrammingModel) {
    programmingModel = model;
  },
  getProgrammingModel: () => programmingModel,
  registerHook: () => ({ dispose: () => undefined }),
};

type Loader = (request: string, parent: unknown, isMain: boolean) => unknown;
const moduleWithLoad = Module as unknown as { _load: Loader };
const originalLoad = moduleWithLoad._load;
moduleWithLoad._load = function (request, parent, isMain) {
  if (request === '@azure/functions-core') return coreApi;
  return originalLoad.call(this, request, parent, isMain);
};

/** Loads an app file (absolute path) and tells its programming model the worker is ready, like the worker. */
export async function loadApp(file: string): Promise<string[]> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require(file);
  if (!programmingModel) throw new Error(`${file} did not register a programming model`);
  await programmingModel.getCapabilities({});
  return [...functions.keys()];
}

/**
 * The queue each Service Bus output binding of a function writes to, by binding name, with `%SETTING%`
 * resolved from the environment as the host resolves it.
 */
export function outputQueues(name: string): Map<string, string> {
  const registration = functions.get(name);
  const queues = new Map<string, string>();
  for (const [binding, meta] of Object.entries(registration?.metadata.bindings ?? {})) {
    if (meta.direction !== 'out' || !meta.queueName) continue;
    queues.set(
      binding,
      meta.queueName.replace(/%([^%]+)%/g, (_, setting: string) => process.env[setting] ?? ''),
    );
  }
  return queues;
}

/** What one invocation produced, decoded. */
export interface InvocationResult {
  /** HTTP response (HTTP triggers). */
  http?: { status: number; body: unknown };
  /** Output bindings by name, JSON-decoded. */
  outputs: Record<string, unknown>;
  /** The error the function threw (Service Bus redelivery), if any. */
  error?: Error;
  /** Time in the app's handler (`invokeFunction`), excluding the worker's RPC ↔ object conversions. */
  handlerMs: number;
}

function decode(data: RpcTypedData | null | undefined): unknown {
  if (!data) return undefined;
  if (data.json !== undefined) return JSON.parse(data.json);
  if (data.string !== undefined) return data.string;
  if (data.bytes !== undefined) {
    const text = Buffer.from(data.bytes).toString('utf8');
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return data;
}

/**
 * Invokes a registered function the way the worker does.
 * @param trigger - the trigger's input (RPC typed data)
 * @param triggerMetadata - RPC trigger metadata
 */
export async function invoke(
  name: string,
  trigger: RpcTypedData,
  triggerMetadata: Record<string, RpcTypedData> = {},
): Promise<InvocationResult> {
  const registration = functions.get(name);
  if (!registration || !programmingModel) throw new Error(`function ${name} is not registered`);
  const triggerName = Object.entries(registration.metadata.bindings).find(
    ([, b]) => b.direction === 'in' && /trigger$/i.test(b.type),
  )?.[0];
  if (!triggerName) throw new Error(`function ${name} has no trigger binding`);
  const inputData = { [triggerName]: trigger };
  invocations += 1;
  const coreCtx = {
    invocationId: `bench-${invocations}`,
    metadata: registration.metadata,
    request: {
      invocationId: `bench-${invocations}`,
      inputData: Object.entries(inputData).map(([binding, data]) => ({ name: binding, data })),
      triggerMetadata,
    },
    state: 'invocation',
    log: () => undefined,
  };
  const model = programmingModel.getInvocationModel(coreCtx);
  const { context, inputs } = await model.getArguments();
  let result: unknown;
  const started = performance.now();
  try {
    result = await model.invokeFunction(context, inputs, registration.callback);
  } catch (error) {
    const handlerMs = performance.now() - started;
    return { outputs: {}, error: error instanceof Error ? error : new Error(String(error)), handlerMs };
  }
  const handlerMs = performance.now() - started;
  const response = await model.getResponse(context, result);
  const outputs: Record<string, unknown> = {};
  for (const output of response.outputData ?? []) outputs[output.name] = decode(output.data);
  const http = response.returnValue?.http as { statusCode?: string; body?: RpcTypedData } | undefined;
  return {
    outputs,
    http: http ? { status: Number(http.statusCode), body: decode(http.body) } : undefined,
    handlerMs,
  };
}

/** RPC input of an HTTP POST with a JSON body. */
export function httpInput(url: string, params: Record<string, string>, body: unknown): RpcTypedData {
  return {
    http: {
      method: 'POST',
      url,
      headers: { 'content-type': 'application/json' },
      params,
      query: {},
      body: { string: JSON.stringify(body) },
    },
  };
}
