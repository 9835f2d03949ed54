/**
 * A stand-in for `@azure/functions-core`, the module the Functions worker injects. `@azure/functions`
 * registers functions through it; outside the worker it would fall back to "test mode" and drop them.
 * With this module mapped in (jest `moduleNameMapper`, esbuild `alias` for the sandbox), importing the app
 * records every registration, so tests drive the registered handlers themselves. It also records the
 * programming model the library sets, so a test can invoke a function exactly as the worker does (RPC-shaped
 * request → `getInvocationModel` → `getArguments` → `invokeFunction` → `getResponse`): see
 * `invokeThroughWorker` in functionsHost.ts.
 */

/** Binding metadata as `@azure/functions` produces it. */
export interface BindingMetadata {
  type: string;
  direction: 'in' | 'out';
  name: string;
  [key: string]: unknown;
}

/** A registered function. */
export interface Registration {
  name: string;
  bindings: Record<string, BindingMetadata>;
  handler: (...args: unknown[]) => unknown;
}

const registry = ((globalThis as { __unisolateRegistry?: Map<string, Registration> }).__unisolateRegistry ??=
  new Map<string, Registration>());

/** Every function registered so far, by name. */
export function registrations(): Map<string, Registration> {
  return registry;
}

export function registerFunction(
  metadata: { name: string; bindings: Record<string, BindingMetadata> },
  handler: (...args: unknown[]) => unknown,
): { dispose(): void } {
  registry.set(metadata.name, { name: metadata.name, bindings: metadata.bindings, handler });
  return { dispose: () => registry.delete(metadata.name) };
}

/** RPC typed data as the host sends it (the subset the tests use). */
export interface RpcTypedData {
  string?: string | null;
  json?: string | null;
  bytes?: Uint8Array | null;
  int?: number | null;
  double?: number | null;
}

/** The raw invocation request the worker receives from the host. */
export interface RpcInvocationRequest {
  invocationId?: string | null;
  inputData?: { name?: string | null; data?: RpcTypedData | null }[] | null;
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
  ): Promise<{
    returnValue?: RpcTypedData | null;
    outputData?: { name?: string | null; data?: RpcTypedData | null }[] | null;
  }>;
}

/** A programming model, as `@azure/functions` registers one. */
export interface ProgrammingModel {
  name: string;
  version: string;
  getInvocationModel(coreCtx: CoreInvocationContext): InvocationModel;
  getCapabilities?(capabilities: Record<string, string>): Promise<Record<string, string>>;
}

const models = ((globalThis as { __unisolateModel?: { current?: ProgrammingModel } }).__unisolateModel ??=
  {});

/** Records the programming model, as the worker does: the last one set is used for every invocation. */
export function setProgrammingModel(model: ProgrammingModel): void {
  models.current = model;
}

/** The programming model set last (the library's, or a wrapper of it), if any. */
export function getProgrammingModel(): ProgrammingModel | undefined {
  return models.current;
}

export function registerHook(): { dispose(): void } {
  return { dispose: () => undefined };
}

export const version = '4.0.0-local';
