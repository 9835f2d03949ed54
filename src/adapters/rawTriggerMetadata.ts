/**
 * Trigger metadata as the host sent it. The Functions host passes Service Bus `MessageId` and `CorrelationId`
 * as RPC strings, but `@azure/functions` JSON-parses every string of the trigger metadata
 * (`fromRpcTriggerMetadata` → `fromRpcTypedData` → `tryJsonParse`): a correlation id `"12345"` reaches the
 * handler as the number 12345, `"true"` as a boolean, and a long digit string as a rounded number
 * (`"12345678901234567890123"` → 1.2345678901234568e22), which no longer names the message.
 *
 * The raw invocation request is only visible to the programming model: the worker calls
 * `getInvocationModel(coreCtx)` with `coreCtx.request`, the unconverted `RpcInvocationRequest`
 * (https://github.com/Azure/azure-functions-nodejs-library/blob/v4.x/src/InvocationModel.ts). So
 * {@link keepRawTriggerMetadata} wraps the model `@azure/functions` registered: every call is delegated
 * unchanged, and the string-typed trigger metadata of each invocation is remembered for its
 * `InvocationContext`. Pre-invocation hooks cannot do this: their context holds the converted values only.
 */
import type { InvocationContext } from '@azure/functions';

/** RPC typed data: only the `string` case matters here. */
interface RpcTypedDataLike {
  string?: string | null;
}

/** What the worker passes to `getInvocationModel` (`CoreInvocationContext` of `@azure/functions-core`). */
interface CoreInvocationContextLike {
  request?: { triggerMetadata?: Record<string, RpcTypedDataLike | null | undefined> | null } | null;
}

interface InvocationModelLike {
  getArguments(): Promise<{ context: unknown; inputs: unknown[] }>;
  invokeFunction(context: unknown, inputs: unknown[], callback: unknown): Promise<unknown>;
  getResponse(context: unknown, result: unknown): Promise<unknown>;
}

interface ProgrammingModelLike {
  name: string;
  version: string;
  getInvocationModel(coreCtx: CoreInvocationContextLike): InvocationModelLike;
  getCapabilities?(capabilities: Record<string, string>): Promise<Record<string, string>>;
}

/** The two functions of `@azure/functions-core` used here. */
export interface CoreApiLike {
  getProgrammingModel(): unknown;
  setProgrammingModel(model: ProgrammingModelLike): void;
}

/** Raw string metadata per invocation context (lower-cased names); collected with the context. */
const rawByContext = new WeakMap<object, ReadonlyMap<string, string>>();
const WRAPPED = Symbol.for('mde-unisolate.rawTriggerMetadata');

function isProgrammingModel(value: unknown): value is ProgrammingModelLike {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { getInvocationModel?: unknown }).getInvocationModel === 'function'
  );
}

/** `@azure/functions-core`, which only exists inside the Functions worker (it injects the module). */
function workerCoreApi(): CoreApiLike | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const core = require('@azure/functions-core') as Partial<CoreApiLike>;
    return typeof core.getProgrammingModel === 'function' && typeof core.setProgrammingModel === 'function'
      ? (core as CoreApiLike)
      : undefined;
  } catch {
    return undefined;
  }
}

function stringsOf(
  metadata: Record<string, RpcTypedDataLike | null | undefined> | null | undefined,
): Map<string, string> {
  const strings = new Map<string, string>();
  for (const [name, data] of Object.entries(metadata ?? {})) {
    if (typeof data?.string === 'string') strings.set(name.toLowerCase(), data.string);
  }
  return strings;
}

/**
 * Wraps the registered programming model so handlers can read the raw string trigger metadata
 * ({@link triggerText}). Call once, after the functions are registered (the library sets its model on the
 * first registration). Returns false, changing nothing, outside the worker or when no model is set.
 */
export function keepRawTriggerMetadata(core: CoreApiLike | undefined = workerCoreApi()): boolean {
  const inner = core?.getProgrammingModel();
  if (!core || !isProgrammingModel(inner)) return false;
  if ((inner as { [WRAPPED]?: boolean })[WRAPPED]) return true;
  const wrapped: ProgrammingModelLike & { [WRAPPED]: true } = {
    [WRAPPED]: true,
    // The worker reports these as the app's programming model: keep the library's.
    name: inner.name,
    version: inner.version,
    getInvocationModel(coreCtx) {
      const model = inner.getInvocationModel(coreCtx);
      return {
        async getArguments() {
          const args = await model.getArguments();
          if (typeof args.context === 'object' && args.context !== null) {
            rawByContext.set(args.context, stringsOf(coreCtx.request?.triggerMetadata));
          }
          return args;
        },
        invokeFunction: (context, inputs, callback) => model.invokeFunction(context, inputs, callback),
        getResponse: (context, result) => model.getResponse(context, result),
      };
    },
  };
  // The library's capabilities (and its setup lock) go through unchanged.
  if (typeof inner.getCapabilities === 'function') {
    wrapped.getCapabilities = (capabilities) => inner.getCapabilities!(capabilities);
  }
  core.setProgrammingModel(wrapped);
  return true;
}

/**
 * A trigger metadata value as text exactly as the sender set it (e.g. Service Bus `messageId`,
 * `correlationId`), or undefined when absent or empty.
 *
 * The raw RPC string when the invocation came through the wrapped model. Otherwise (another host, tests
 * driving a handler directly) the converted value: a string as is, a number only when it is a safe integer
 * (its text is then the sender's digits, barring exotic spellings such as `1e3`), anything else undefined:
 * no id rather than a wrong one.
 * @param name - the camelCase name the library uses (`messageId`); matched case-insensitively in the raw data
 */
export function triggerText(context: InvocationContext, name: string): string | undefined {
  const raw = rawByContext.get(context);
  if (raw?.has(name.toLowerCase())) {
    const text = raw.get(name.toLowerCase());
    return text ? text : undefined;
  }
  const value = context.triggerMetadata?.[name];
  if (typeof value === 'string') return value.length > 0 ? value : undefined;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  return undefined;
}
