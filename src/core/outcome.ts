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
  'Accepted' | 'AlreadyInProgress' | 'Invalid' | 'NotFound' | 'Forbidden' | 'Throttled' | 'Failed';

/** Error codes, each mapped to exactly one outcome status by {@link ERROR_TABLE}. */
export type ErrorCode =
  | 'InvalidRequest'
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
  | 'InternalError';

/**
 * The one table that decides, for an error code: the outcome status, the HTTP status, and whether a
 * Service Bus delivery should be retried (thrown) rather than reported. Nothing else decides these.
 */
export const ERROR_TABLE: Readonly<
  Record<ErrorCode, { status: OutcomeStatus; http: number; transient: boolean }>
> = {
  InvalidRequest: { status: 'Invalid', http: 400, transient: false },
  RequestTooLarge: { status: 'Invalid', http: 413, transient: false },
  UnsupportedMediaType: { status: 'Invalid', http: 415, transient: false },
  MachineNotFound: { status: 'NotFound', http: 404, transient: false },
  MdeForbidden: { status: 'Forbidden', http: 502, transient: false },
  MdeUnauthorized: { status: 'Forbidden', http: 502, transient: false },
  MdeThrottled: { status: 'Throttled', http: 429, transient: true },
  MdeUnavailable: { status: 'Failed', http: 502, transient: true },
  MdeTimeout: { status: 'Failed', http: 504, transient: true },
  MdeUnexpectedResponse: { status: 'Failed', http: 502, transient: false },
  // Key Vault / managed identity / Entra outages: our own dependencies, so 503 (retry later).
  SecretUnavailable: { status: 'Failed', http: 503, transient: true },
  TokenUnavailable: { status: 'Failed', http: 503, transient: true },
  // The MDE app's credentials in Key Vault were refused by Entra ID: an operator must fix them.
  CredentialsRejected: { status: 'Failed', http: 503, transient: false },
  ConfigurationError: { status: 'Failed', http: 503, transient: false },
  InternalError: { status: 'Failed', http: 500, transient: true },
};

/** HTTP status for the success statuses (errors come from {@link ERROR_TABLE}). */
export const SUCCESS_HTTP: Readonly<Record<'Accepted' | 'AlreadyInProgress', number>> = {
  Accepted: 201,
  AlreadyInProgress: 200,
};

/** Every documented HTTP status per outcome status (for the OpenAPI description and tests). */
export function httpStatusesOf(status: OutcomeStatus): number[] {
  if (status === 'Accepted' || status === 'AlreadyInProgress') return [SUCCESS_HTTP[status]];
  const codes = Object.values(ERROR_TABLE)
    .filter((row) => row.status === status)
    .map((row) => row.http);
  return [...new Set(codes)].sort();
}

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
}

/** HTTP status for an outcome. */
export function httpStatusOf(outcome: Outcome): number {
  if (outcome.error) return ERROR_TABLE[outcome.error.code].http;
  return outcome.status === 'AlreadyInProgress' ? SUCCESS_HTTP.AlreadyInProgress : SUCCESS_HTTP.Accepted;
}
