/**
 * What the core needs from the outside world. Adapters implement these; tests pass fakes or point the
 * real adapters at local simulators.
 */
import type { Outcome } from './outcome';
import type { SelfTestReport } from './selfTest';

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
  /**
   * Time left in the invocation's retry budget. Bounds everything the attempt may wait for before its HTTP
   * call too (Key Vault, managed identity, Entra ID): a dependency that never answers ends the attempt with
   * the transient `SecretUnavailable` / `TokenUnavailable`. Absent: only the SDKs' own limits.
   */
  remainingMs?: number;
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
  listMachineActions(filter: string, options: AttemptOptions, top?: number): Promise<ApiResponse>;
  /**
   * `GET {api}/api/machines?$filter=...&$top=...` (needs Machine.Read.All). The caller escapes string
   * literals (`'` → `''`). https://learn.microsoft.com/en-us/defender-endpoint/api/get-machines
   */
  listMachines(filter: string, options: AttemptOptions, top?: number): Promise<ApiResponse>;
  /** `GET {api}/api/machines/{id}` (Machine.Read.All). `machineId` is validated 40-hex. */
  getMachine(machineId: string, options: AttemptOptions): Promise<ApiResponse>;
  /**
   * `GET {api}/api/machines/{id}/alerts` (Alert.Read.All).
   * https://learn.microsoft.com/en-us/defender-endpoint/api/get-machine-related-alerts
   */
  getMachineAlerts(machineId: string, options: AttemptOptions): Promise<ApiResponse>;
  /**
   * `GET {api}/api/machineactions/{id}` (Machine.Read.All): one MachineAction, for tracking a release to its
   * end. https://learn.microsoft.com/en-us/defender-endpoint/api/get-machineaction-object
   */
  getMachineAction(actionId: string, options: AttemptOptions): Promise<ApiResponse>;
  /**
   * Drops cached secrets and tokens, so the next call re-reads Key Vault (after a 401: rotated secret); the
   * re-read waits at most `remainingMs`.
   */
  refreshCredentials(options?: Pick<AttemptOptions, 'remainingMs'>): Promise<void>;
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
  /** A tracked release reached its end (`UnisolateCompleted`): time from receipt to the action's end. */
  trackCompletion(outcome: Outcome, timeToCompletionMs: number): void;
  /** The self-test's result at cold start (`UnisolateSelfTest`). */
  trackSelfTest(report: SelfTestReport, durationMs: number): void;
  flush(): Promise<void>;
}

/** Time, injected so tests can use fake or scaled clocks. */
export interface Clock {
  now: () => number;
  sleep: (ms: number) => Promise<void>;
}

/** A stored value and its ETag, for optimistic concurrency (If-Match). */
export interface Versioned<T> {
  value: T;
  etag: string;
}

/** The claim of one idempotency key (see `core/idempotency.ts`). */
export interface IdempotencyRecord {
  /** SHA-256 of the trigger and the caller's key (the key itself is caller text: never stored raw). */
  keyHash: string;
  /** SHA-256 of the request body, so a key reused with another body is recognised. */
  fingerprint: string;
  /** `pending`: a release is running under this key; `done`: `outcome` is final. */
  state: 'pending' | 'done';
  /** When the key was claimed (ms since epoch); the idempotency window starts here. */
  claimedAt: number;
  /** A pending claim older than this was abandoned (instance stopped mid-release) and may be taken over. */
  leaseUntil: number;
  /** The stored outcome (an array for a bulk request), null while pending. */
  outcome: Outcome | Outcome[] | null;
}

/** What is recorded about a release that MDE accepted (see `core/tracking.ts`). */
export interface ReleaseRecord {
  correlationId: string;
  /** Bulk requests: the device's index; the record is then keyed `<correlationId>:<index>`. */
  index?: number;
  machineId: string;
  phase: 'accepted' | 'completed';
  /** The latest outcome: the accepted one, then the completion. */
  outcome: Outcome;
  /** The MachineAction being tracked (null until found, for an AlreadyInProgress without it). */
  machineActionId: string | null;
  /** When the release was received (ms since epoch). */
  receivedAt: number;
  /** Tracking gives up (TrackingExpired) at this time. */
  trackUntil: number;
  /** The tracker polls the action again from this time. */
  nextPollAt: number;
  polls: number;
}

/**
 * Durable release state (Azure Table Storage). Results that are part of normal concurrency (already exists,
 * ETag mismatch, gone) are return values; anything else (store unreachable, refused) is thrown.
 */
export interface ReleaseStore {
  readKey(keyHash: string): Promise<Versioned<IdempotencyRecord> | undefined>;
  /** Inserts a claim: its ETag, or undefined when the key is already claimed (insert that fails on conflict). */
  insertKey(record: IdempotencyRecord): Promise<string | undefined>;
  /** Replaces a claim if its ETag still matches: the new ETag, or undefined otherwise. */
  replaceKey(record: IdempotencyRecord, etag: string): Promise<string | undefined>;
  /** Deletes a claim if its ETag still matches (no error when it is gone or changed). */
  deleteKey(keyHash: string, etag: string): Promise<void>;
  /** Records an accepted release and marks it open for tracking (replaces an earlier one of that id). */
  saveRelease(record: ReleaseRecord): Promise<void>;
  /** The latest release of a release id (correlation id, `<correlationId>:<index>` for a bulk device). */
  readRelease(releaseId: string): Promise<ReleaseRecord | undefined>;
  /** Open (tracked) releases due for a poll at `now`, oldest poll time first, at most `limit`. */
  listOpen(now: number, limit: number): Promise<Versioned<ReleaseRecord>[]>;
  /** Saves tracking progress if the open entry's ETag still matches; false otherwise. */
  updateOpen(record: ReleaseRecord, etag: string): Promise<boolean>;
  /**
   * Closes an open release with its completion, atomically with the ETag check: true for exactly one
   * caller; false when another tracker closed or updated it first.
   */
  closeOpen(record: ReleaseRecord, etag: string): Promise<boolean>;
}
