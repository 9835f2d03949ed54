/**
 * What the core needs from the outside world. Adapters implement these; tests pass fakes or point the
 * real adapters at local simulators.
 */
import type { Outcome } from './outcome';

/** One Defender API response, as the core sees it (any status; transport failures are thrown). */
export interface ApiResponse {
  status: number;
  /** Raw `Retry-After` header, if any. */
  retryAfter?: string | undefined;
  body: unknown;
}

/** A transport failure (no HTTP response): connection reset/refused, DNS, or the per-attempt timeout. */
export class TransportError extends Error {
  override readonly name = 'TransportError';
  constructor(
    readonly kind: 'network' | 'timeout',
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Options of one Defender API attempt. */
export interface AttemptOptions {
  timeoutMs: number;
}

/**
 * The Defender for Endpoint API. Each method is ONE attempt: it resolves with any HTTP response, throws
 * {@link TransportError} when there is none, and throws `UnisolateError` when credentials cannot be had
 * (Key Vault, managed identity or Entra ID failure).
 */
export interface DefenderApi {
  /** `POST {api}/api/machines/{id}/unisolate` with `{"Comment": comment}`. `machineId` is validated. */
  unisolate(machineId: string, comment: string, options: AttemptOptions): Promise<ApiResponse>;
  /** `GET {api}/api/machineactions?$filter=...` (OData filter built by the caller from validated values). */
  listMachineActions(filter: string, options: AttemptOptions): Promise<ApiResponse>;
  /** Drops cached secrets and tokens, so the next call re-reads Key Vault (after a 401: rotated secret). */
  refreshCredentials(): Promise<void>;
}

/** Structured log sink; values are sanitised by the implementation. Never pass secrets. */
export interface Logger {
  info(message: string, properties?: Record<string, unknown>): void;
  warn(message: string, properties?: Record<string, unknown>): void;
  error(message: string, properties?: Record<string, unknown>): void;
}

/** A Defender API call, for dependency telemetry. */
export interface DependencyRecord {
  name: string;
  target: string;
  resultCode: string;
  success: boolean;
  durationMs: number;
  correlationId: string;
}

/** Telemetry sink. Implementations never throw and never block a release. */
export interface Telemetry {
  trackOutcome(outcome: Outcome, durationMs: number): void;
  trackDependency(record: DependencyRecord): void;
  /** A Service Bus delivery that failed transiently and was handed back for redelivery (not an outcome). */
  trackRedelivery(outcome: Outcome, deliveryCount: number): void;
  flush(): Promise<void>;
}

/** Time, injected so tests can use fake or scaled clocks. */
export interface Clock {
  now: () => number;
  sleep: (ms: number) => Promise<void>;
}
