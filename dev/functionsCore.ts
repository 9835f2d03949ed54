/**
 * The one stand-in for `@azure/functions-core`, the module the Azure Functions Node.js worker injects into the
 * app. `@azure/functions` registers functions and sets its programming model through it; outside the worker
 * it would fall back to "test mode" and drop them. `./host` provides this module to the app (jest maps it with
 * `moduleNameMapper`; in plain node the host hooks `Module._load`, as the worker does), so importing the app
 * records every registration and the programming model, and `./host` invokes functions through that model
 * exactly as the worker does.
 * https://github.com/Azure/azure-functions-nodejs-worker/blob/v3.x/types-core/index.d.ts
 */

/** Binding metadata as `@azure/functions` produces it (`type`, `direction`, plus the binding's options). */
export interface BindingMetadata {
  type: string;
  direction: 'in' | 'out';
  name: string;
  [key: string]: unknown;
}

/** A registered function. */
export interface Registration {
  name: string;
  /** By binding name (`$return` for an HTTP trigger's response). */
  bindings: Record<string, BindingMetadata>;
  handler: (...args: unknown[]) => unknown;
}

/** RPC typed data as the host sends and receives it (the cases this app meets). */
export interface RpcTypedData {
  string?: string | null;
  json?: string | null;
  bytes?: Uint8Array | null;
  int?: number | null;
  double?: number | null;
  http?: RpcHttpData | null;
}

/** An HTTP request or response as RPC data. */
export interface RpcHttpData {
  method?: string | null;
  url?: string | null;
  headers?: Record<string, string> | null;
  params?: Record<string, string> | null;
  query?: Record<string, string> | null;
  body?: RpcTypedData | null;
  statusCode?: string | null;
}

/** One input or output binding's data. */
export interface RpcParameterBinding {
  name?: string | null;
  data?: RpcTypedData | null;
}

/** The raw invocation request the worker receives from the host. */
export interface RpcInvocationRequest {
  invocationId?: string | null;
  inputData?: RpcParameterBinding[] | null;
  triggerMetadata?: Record<string, RpcTypedData> | null;
}

/** What the worker hands a programming model for one invocation. */
export interface CoreInvocationContext {
  invocationId: string;
  request: RpcInvocationRequest;
  metadata: { name: string; bindings: Record<string, BindingMetadata> };
  state?: 'preInvocationHooks' | 'postInvocationHooks' | 'invocation';
  log(level: string, category: string, message: string): void;
}

/** The invocation steps the worker runs, in order. */
export interface InvocationModel {
  getArguments(): Promise<{ context: unknown; inputs: unknown[] }>;
  invokeFunction(
    context: unknown,
    inputs: unknown[],
    callback: (...args: unknown[]) => unknown,
  ): Promise<unknown>;
  getResponse(
    context: unknown,
    result: unknown,
  ): Promise<{ returnValue?: RpcTypedData | null; outputData?: RpcParameterBinding[] | null }>;
}

/** A programming model, as `@azure/functions` registers one. */
export interface ProgrammingModel {
  name: string;
  version: string;
  getInvocationModel(coreCtx: CoreInvocationContext): InvocationModel;
  getCapabilities?(capabilities: Record<string, string>): Promise<Record<string, string>>;
}

/**
 * Registrations and the programming model live on `globalThis`: a jest `isolateModules` block or a second
 * copy of this module (a bundle) must feed the same registry.
 */
const state = ((globalThis as { __functionsCoreStandIn?: CoreState }).__functionsCoreStandIn ??= {
  registry: new Map<string, Registration>(),
});
interface CoreState {
  registry: Map<string, Registration>;
  model?: ProgrammingModel;
}

/** Every function registered so far, by name. */
export function registrations(): ReadonlyMap<string, Registration> {
  return state.registry;
}

/** Called by `@azure/functions` for each `app.http(...)`, `app.serviceBusQueue(...)`, ... */
export function registerFunction(
  metadata: { name: string; bindings: Record<string, BindingMetadata> },
  handler: (...args: unknown[]) => unknown,
): { dispose(): void } {
  state.registry.set(metadata.name, { name: metadata.name, bindings: metadata.bindings, handler });
  return { dispose: () => state.registry.delete(metadata.name) };
}

/** Records the programming model, as the worker does: the last one set is used for every invocation. */
export function setProgrammingModel(model: ProgrammingModel): void {
  state.model = model;
}

/** The programming model set last (the library's, or the app's wrapper of it), if any. */
export function getProgrammingModel(): ProgrammingModel | undefined {
  return state.model;
}

/** Hooks are accepted and never run (the app registers none). */
export function registerHook(): { dispose(): void } {
  return { dispose: () => undefined };
}

export const version = '4.0.0-local';
