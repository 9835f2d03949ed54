/**
 * What the core needs from the outside world. Adapters implement these; tests pass fakes or point the
 * real adapters at local simulators.
 */
import type { Outcome } from './outcome';
import type { ReleaseRecord, ReleaseRef } from './records';
import type { LedgerStore } from './sharedBudget';
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

/**
 * Stored data that fails its shape check (written by another version, or damaged). The store answered, so it
 * is not unavailable: the circuit breaker lets this through without opening.
 */
export class MalformedDataError extends Error {
  override readonly name = 'MalformedDataError';
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
  /**
   * `GET {api}/api/machineactions?$filter=...&$orderby=creationDateTimeUtc desc&$top=...&$skip=...` (OData
   * filter built by the caller from validated values; at most 10,000 per page).
   * https://learn.microsoft.com/defender-endpoint/api/get-machineactions-collection
   */
  listMachineActions(
    filter: string,
    options: AttemptOptions,
    top?: number,
    skip?: number,
  ): Promise<ApiResponse>;
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
   * Makes sure a bearer token is at hand (cached, else fetched: Key Vault, Entra ID), waiting at most
   * `remainingMs`, so that the call that follows takes its budget slot only for the HTTP request itself.
   * Throws like a call when credentials cannot be had.
   */
  ensureCredentials(options?: Pick<AttemptOptions, 'remainingMs'>): Promise<void>;
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
  /**
   * `pending`: a request is running under this key; `done`: it has been answered; `retry`: it has been
   * answered, but a device failed transiently (or still runs elsewhere): a repeat takes the same request over.
   */
  state: 'pending' | 'retry' | 'done';
  /** When the key was claimed (ms since epoch); the idempotency window starts here. */
  claimedAt: number;
  /** A pending claim whose lease ran out was abandoned (its instance stopped) and may be taken over. */
  leaseUntil: number;
  /** Where the request's device releases are recorded. */
  correlationId: string;
  requestId: string;
}

/** A release as recorded by {@link ReleaseStore.createReleases}: its stored version, and whether that call created it. */
export interface RecordedRelease extends Versioned<ReleaseRecord> {
  /** False when an earlier invocation of the same request had recorded it (the stored record is returned). */
  created: boolean;
}

/** What the tracker reads about an accepted release (kept beside the record, so listing is cheap). */
export interface TrackedRelease {
  ref: ReleaseRef;
  machineId: string;
  machineActionId: string | null;
  /** When the release arrived (ms since epoch). */
  receivedAt: number;
  /** When the tracked action was created (ms; an action already running may predate the release). */
  actionCreatedAt: number;
  /** The tracked action's status as last recorded (null when not known yet). */
  actionStatus: string | null;
  trackUntil: number;
}

/**
 * Durable state (Azure Table Storage): idempotency claims, device release records with their indexes (parked
 * releases by due time, accepted releases being tracked), and the budget ledgers. Results that are part of
 * normal concurrency (already exists, ETag mismatch, gone) are return values; anything else (store
 * unreachable, refused) is thrown.
 */
export interface ReleaseStore extends LedgerStore {
  readKey(keyHash: string): Promise<Versioned<IdempotencyRecord> | undefined>;
  /** Inserts a claim: its ETag, or undefined when the key is already claimed (insert that fails on conflict). */
  insertKey(record: IdempotencyRecord): Promise<string | undefined>;
  /** Replaces a claim if its ETag still matches: the new ETag, or undefined otherwise. */
  replaceKey(record: IdempotencyRecord, etag: string): Promise<string | undefined>;

  /**
   * Records a request's device releases (each with its index entries, so a running one is due again when its
   * lease ends) and when to delete them (and the request's idempotency claim, `keyHash`). Records an earlier
   * invocation of the request made are kept as stored, and the ones it did not get to are created. Returns
   * each, in order, as stored; undefined for a record not written because the store failed partway (throws
   * when it wrote nothing).
   */
  createReleases(
    records: readonly ReleaseRecord[],
    expiry: { expiresAt: number; keyHash?: string },
  ): Promise<(RecordedRelease | undefined)[]>;
  /** The releases under a correlation id (of one request, with `requestId`), in request and index order. */
  readReleases(correlationId: string, requestId?: string): Promise<Versioned<ReleaseRecord>[]>;
  readRelease(ref: ReleaseRef): Promise<Versioned<ReleaseRecord> | undefined>;
  /**
   * Replaces a record if it is unchanged since `previous` was read, moving its index entries with it in the
   * same transaction (parked or running → due index; accepted → tracked index). The new ETag, or undefined when another
   * invocation changed it first.
   */
  updateRelease(record: ReleaseRecord, previous: Versioned<ReleaseRecord>): Promise<string | undefined>;
  /**
   * Releases due by `until`, earliest first, at most `limit`: parked ones, and running ones whose lease ends
   * by then.
   */
  listDue(until: number, limit: number): Promise<Versioned<ReleaseRecord>[]>;
  /** Accepted releases being tracked, at most `limit`. */
  listTracked(limit: number): Promise<TrackedRelease[]>;
  /**
   * Claims a device an index of a bulk request reached by name (insert that fails on conflict): the index that
   * owns it, `index` itself when this call claimed it. Two entries naming one device are released once.
   */
  claimDevice(ref: ReleaseRef, machineId: string): Promise<number>;
  /** Deletes up to `limit` requests whose records expired by `now` (records, indexes and claims). */
  deleteExpired(now: number, limit: number): Promise<number>;
  /** When the tracker last polled MDE (0: never). */
  readTrackerPoll(): Promise<number>;
  writeTrackerPoll(at: number): Promise<void>;
}
