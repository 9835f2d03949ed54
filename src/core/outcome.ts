/**
 * The outcome of a release: the one thing every request ends in, identical in the HTTP response, the
 * response-queue message and (flattened) the telemetry event.
 */

/** A Defender for Endpoint MachineAction, as returned by the API (fields we rely on; others pass through). */
export interface MachineAction {
  id: string;
  type: string;
  /** One of {@link MachineActionStatus}; typed as string because MDE may add values. */
  status: string;
  machineId?: string;
  computerDnsName?: string | null;
  requestor?: string | null;
  requestorComment?: string | null;
  creationDateTimeUtc?: string;
  lastUpdateDateTimeUtc?: string;
  [field: string]: unknown;
}

/** https://learn.microsoft.com/en-us/defender-endpoint/api/machineaction */
export type MachineActionStatus = 'Pending' | 'InProgress' | 'Succeeded' | 'Failed' | 'TimeOut' | 'Cancelled';

/** Which entry point received the request. */
export type Trigger = 'http' | 'serviceBus';

/** Every outcome status. */
export type OutcomeStatus =
  | 'Accepted'
  | 'AlreadyInProgress'
  // Parked (phase "queued"): the Defender API budget cannot take it now; it runs at `retryAt` by itself.
  | 'Queued'
  | 'Invalid'
  | 'NotFound'
  | 'Forbidden'
  | 'Throttled'
  | 'Failed'
  // Safety checks: the release was deliberately not sent; all HTTP 409.
  | 'Ambiguous'
  | 'NotIsolated'
  | 'IsolationPending'
  | 'Blocked'
  // Caller checks: the HTTP caller was refused before anything was done (401/403).
  | 'Unauthorized'
  // Completion messages (phase "completed"): the tracked MachineAction ended.
  // Released: Succeeded. ReleaseFailed: Failed, TimeOut or Cancelled. TrackingExpired: no end within TRACK_MAX_HOURS.
  | 'Released'
  | 'ReleaseFailed'
  | 'TrackingExpired';

/** Error codes, each mapped to exactly one outcome status by {@link ERROR_TABLE}. */
export type ErrorCode =
  | 'InvalidRequest'
  | 'DuplicateDevice'
  | 'RequestTooLarge'
  | 'UnsupportedMediaType'
  | 'MachineNotFound'
  | 'MdeForbidden'
  | 'MdeUnauthorized'
  | 'MdeThrottled'
  | 'MdeUnavailable'
  | 'MdeTimeout'
  | 'MdeUnexpectedResponse'
  | 'SecretUnavailable'
  | 'CredentialsRejected'
  | 'TokenUnavailable'
  | 'ConfigurationError'
  | 'InternalError'
  | 'AmbiguousDeviceName'
  | 'DeviceNotIsolated'
  | 'IsolationPending'
  | 'ReleaseBlocked'
  | 'HealthCheckUnavailable'
  | 'SignatureInvalid'
  | 'CallerUnauthenticated'
  | 'CallerNotAllowed'
  | 'IdempotencyKeyInUse'
  | 'IdempotencyKeyReused'
  | 'ReleaseActionFailed'
  | 'TrackingExpired'
  | 'ReleaseNotFound'
  | 'StateUnavailable';

/**
 * The one table that decides, for an error code: the outcome status, the HTTP status, and whether a
 * Service Bus delivery should be retried (thrown) rather than reported. Nothing else decides these.
 */
export const ERROR_TABLE: Readonly<
  Record<ErrorCode, { status: OutcomeStatus; http: number; transient: boolean }>
> = {
  InvalidRequest: { status: 'Invalid', http: 400, transient: false },
  // A bulk entry naming a device another entry of the same request already releases (after names resolve).
  DuplicateDevice: { status: 'Invalid', http: 400, transient: false },
  RequestTooLarge: { status: 'Invalid', http: 413, transient: false },
  UnsupportedMediaType: { status: 'Invalid', http: 415, transient: false },
  MachineNotFound: { status: 'NotFound', http: 404, transient: false },
  MdeForbidden: { status: 'Forbidden', http: 502, transient: false },
  MdeUnauthorized: { status: 'Forbidden', http: 502, transient: false },
  MdeThrottled: { status: 'Throttled', http: 429, transient: true },
  MdeUnavailable: { status: 'Failed', http: 502, transient: true },
  MdeTimeout: { status: 'Failed', http: 502, transient: true },
  MdeUnexpectedResponse: { status: 'Failed', http: 502, transient: false },
  // Key Vault / managed identity / Entra outages: our own dependencies, so 503 (retry later).
  SecretUnavailable: { status: 'Failed', http: 503, transient: true },
  TokenUnavailable: { status: 'Failed', http: 503, transient: true },
  // The MDE app's credentials in Key Vault were refused by Entra ID: an operator must fix them.
  CredentialsRejected: { status: 'Failed', http: 503, transient: false },
  ConfigurationError: { status: 'Failed', http: 503, transient: false },
  InternalError: { status: 'Failed', http: 502, transient: true },
  // Safety checks: the request conflicts with the device's state; nothing was sent to MDE's release API.
  AmbiguousDeviceName: { status: 'Ambiguous', http: 409, transient: false },
  DeviceNotIsolated: { status: 'NotIsolated', http: 409, transient: false },
  IsolationPending: { status: 'IsolationPending', http: 409, transient: false },
  ReleaseBlocked: { status: 'Blocked', http: 409, transient: false },
  // The health gate could not read the device (no Machine.Read.All / Alert.Read.All): fail closed.
  HealthCheckUnavailable: { status: 'Blocked', http: 409, transient: false },
  // Caller checks (HTTP only, before the body is parsed): never an MDE call. 'Forbidden' is MDE's own
  // refusal, so a refused caller is 'Unauthorized': 401 when not authenticated (signature, token), 403 when
  // authenticated without an allowed app role. See docs/security.md.
  SignatureInvalid: { status: 'Unauthorized', http: 401, transient: false },
  CallerUnauthenticated: { status: 'Unauthorized', http: 401, transient: false },
  CallerNotAllowed: { status: 'Unauthorized', http: 403, transient: false },
  // Idempotency: a duplicate still running elsewhere (retry shortly: the stored outcome is then
  // replayed), or a key reused with a different body (a caller bug: use a new key).
  IdempotencyKeyInUse: { status: 'Failed', http: 409, transient: true },
  IdempotencyKeyReused: { status: 'Invalid', http: 422, transient: false },
  // Completion messages (never an HTTP answer of a release; the http value is for the status endpoint).
  ReleaseActionFailed: { status: 'ReleaseFailed', http: 502, transient: false },
  TrackingExpired: { status: 'TrackingExpired', http: 504, transient: false },
  // Status endpoint: no recorded release with that correlation id; durable state not configured/reachable.
  ReleaseNotFound: { status: 'NotFound', http: 404, transient: false },
  StateUnavailable: { status: 'Failed', http: 503, transient: true },
};

/** HTTP status for the success statuses (errors come from {@link ERROR_TABLE}). */
export const SUCCESS_HTTP: Readonly<Record<'Accepted' | 'AlreadyInProgress' | 'Queued', number>> = {
  Accepted: 201,
  AlreadyInProgress: 200,
  Queued: 202,
};

/** The phases of a release's outcomes, in order. */
export type Phase = 'queued' | 'accepted' | 'completed';

/** The error part of an outcome. */
export interface OutcomeError {
  code: ErrorCode;
  message: string;
}

/** The outcome message. `schemaVersion` changes only on a breaking change of this shape. */
export interface Outcome {
  schemaVersion: 1;
  correlationId: string;
  machineId: string | null;
  status: OutcomeStatus;
  machineAction: MachineAction | null;
  error: OutcomeError | null;
  trigger: Trigger;
  requestedBy: string | null;
  receivedAt: string;
  completedAt: string;
  attempts: number;
  /** The host name the caller gave (look-up by name); `machineId` is then the resolved id, or null. */
  deviceName?: string;
  /** `Ambiguous`: every device the name could mean; pick one and send its `machineId`. */
  candidates?: DeviceCandidate[];
  /** Present (true) when the request said `"force": true`: the health gate was bypassed. */
  forced?: boolean;
  /** Bulk requests: the device's position (0-based) in the request's `devices` array. */
  index?: number;
  /** Checks that could not be made and were skipped (e.g. missing read permission). */
  warnings?: string[];
  /**
   * `queued`: parked (status `Queued`): the release runs by itself at `retryAt`, at most one such message per
   * release; `accepted`: the answer to the request (MDE queued the action, or the request ended there), one per
   * release; `completed`: the tracked MachineAction ended (statuses Released / ReleaseFailed / TrackingExpired).
   * Set on every message the triggers send.
   */
  phase?: Phase;
  /** `Queued`: when the release runs again (ISO 8601), once the Defender API budget frees. */
  retryAt?: string;
  /** Present (true) on a Service Bus message that repeats a stored outcome for a duplicate request. */
  replayed?: boolean;
  /**
   * Present (true) on the answer to a duplicate that arrived while the first request with the same
   * idempotency key was still running (`IdempotencyKeyInUse`, nothing was done). It is not the request's
   * outcome: that one comes from the first request, with the same correlation id. A consumer of the response
   * queue (a ticket, a playbook) ignores a message marked duplicate.
   */
  duplicate?: boolean;
}

/** A device a host name may refer to (`Ambiguous` outcomes). */
export interface DeviceCandidate {
  id: string;
  computerDnsName: string;
  lastSeen: string | null;
  healthStatus: string | null;
}

/** HTTP status for an outcome. */
export function httpStatusOf(outcome: Outcome): number {
  if (outcome.error) return ERROR_TABLE[outcome.error.code].http;
  if (outcome.status === 'Queued') return SUCCESS_HTTP.Queued;
  return outcome.status === 'AlreadyInProgress' ? SUCCESS_HTTP.AlreadyInProgress : SUCCESS_HTTP.Accepted;
}

/** What every outcome of one release shares: the request's fields and the device. */
export interface OutcomeBase {
  correlationId: string;
  machineId: string | null;
  trigger: Trigger;
  requestedBy: string | null;
  /** ISO 8601. */
  receivedAt: string;
  deviceName?: string;
  forced?: boolean;
  index?: number;
}

/** The result part of an outcome. */
export interface OutcomeResult {
  status: OutcomeStatus;
  phase: Phase;
  /** ISO 8601. */
  completedAt: string;
  machineAction?: MachineAction | null;
  /** The error (any `{code, message}`, e.g. an `UnisolateError`); null or absent on success. */
  error?: OutcomeError | null;
  attempts?: number;
  candidates?: DeviceCandidate[];
  warnings?: string[];
  retryAt?: string;
  duplicate?: boolean;
}

/** Builds an outcome: the one place an outcome is made, so every one has the same shape and field order. */
export function buildOutcome(base: OutcomeBase, result: OutcomeResult): Outcome {
  const outcome: Outcome = {
    schemaVersion: 1,
    correlationId: base.correlationId,
    machineId: base.machineId,
    status: result.status,
    machineAction: result.machineAction ?? null,
    error: result.error ? { code: result.error.code, message: result.error.message } : null,
    trigger: base.trigger,
    requestedBy: base.requestedBy,
    receivedAt: base.receivedAt,
    completedAt: result.completedAt,
    attempts: result.attempts ?? 0,
  };
  if (base.deviceName !== undefined) outcome.deviceName = base.deviceName;
  if (result.candidates !== undefined) outcome.candidates = result.candidates;
  if (base.forced) outcome.forced = true;
  if (base.index !== undefined) outcome.index = base.index;
  if (result.warnings !== undefined && result.warnings.length > 0) outcome.warnings = result.warnings;
  outcome.phase = result.phase;
  if (result.retryAt !== undefined) outcome.retryAt = result.retryAt;
  if (result.duplicate) outcome.duplicate = true;
  return outcome;
}
