/**
 * A stand-in for `@azure/functions-core`, the module the Functions worker injects. `@azure/functions`
 * registers functions through it; outside the worker it would fall back to "test mode" and drop them.
 * With this module mapped in (jest `moduleNameMapper`, esbuild `alias` for the sandbox), importing the app
 * records every registration, so tests drive the registered handlers themselves.
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

export function setProgrammingModel(): void {}

export function getProgrammingModel(): undefined {
  return undefined;
}

export function registerHook(): { dispose(): void } {
  return { dispose: () => undefined };
}

export const version = '4.0.0-local';
