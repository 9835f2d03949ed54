/**
 * "Should I retry, and after how long?" as a pure function (house style: the loop that sleeps is
 * elsewhere). Modelled on the retry strategies of Azure core-rest-pipeline.
 */

/** Why one Defender API attempt failed. */
export type AttemptFailure =
  | { kind: 'status'; status: number; retryAfter?: string | undefined }
  | { kind: 'network'; code: string }
  | { kind: 'timeout' };

/** Backoff parameters. */
export interface BackoffPolicy {
  /** First backoff ceiling; doubles each attempt. */
  baseDelayMs: number;
  /** Largest backoff ceiling. */
  maxDelayMs: number;
  /** Hard stop on attempts, whatever the budget. */
  maxAttempts: number;
}

/** Defaults: 1 s, 2 s, 4 s ... capped at 16 s, with full jitter. */
export const DEFAULT_BACKOFF: BackoffPolicy = { baseDelayMs: 1000, maxDelayMs: 16_000, maxAttempts: 8 };

/** Input of {@link decideRetry}. */
export interface RetryInput {
  /** Attempts made so far (1 after the first attempt). */
  attempt: number;
  failure: AttemptFailure;
  /** Time left in this invocation's retry budget. */
  remainingMs: number;
  /** Current time (ms since epoch), to read an HTTP-date `Retry-After`. */
  now: number;
  /** Uniform random number in [0, 1), injected for tests. */
  random: number;
  /** Whether credentials were already refreshed after a 401 in this invocation. */
  credentialsRefreshed: boolean;
  policy?: BackoffPolicy;
}

/** The decision. `waitMs` on a refusal is what the caller should tell its own caller (`Retry-After`). */
export type RetryDecision =
  | { retry: true; delayMs: number; refreshCredentials: boolean }
  | { retry: false; reason: 'not-retriable' | 'budget-spent' | 'attempts-spent'; waitMs?: number };

/**
 * Network error codes worth another try (connection reset/refused, DNS, unreachable). Timeouts are not here:
 * the Defender client reports them (ETIMEDOUT, ECONNABORTED, ERR_CANCELED) as `timeout` failures, which are
 * always retried.
 */
export const TRANSIENT_NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);

/**
 * Parses `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 section 10.2.3). Returns ms, or undefined
 * when absent or unreadable.
 */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/** Capped exponential backoff with full jitter: uniform in [0, min(max, base * 2^(attempt-1))]. */
export function backoffDelay(
  attempt: number,
  random: number,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random * ceiling);
}

/**
 * Decides whether to retry a failed attempt.
 * - 429 and 503: wait what `Retry-After` says (else backoff), if the budget allows.
 * - 408, 500, 502, 504, network errors, timeouts: backoff with full jitter.
 * - 401: once, immediately, with refreshed credentials (the client secret may have been rotated).
 * - Anything else (400, 403, 404, ...): never.
 */
export function decideRetry(input: RetryInput): RetryDecision {
  const policy = input.policy ?? DEFAULT_BACKOFF;
  const { failure } = input;
  let delayMs: number;
  if (failure.kind === 'status') {
    const { status } = failure;
    if (status === 401) {
      return input.credentialsRefreshed
        ? { retry: false, reason: 'not-retriable' }
        : { retry: true, delayMs: 0, refreshCredentials: true };
    }
    if (status === 429 || status === 503) {
      delayMs =
        parseRetryAfter(failure.retryAfter, input.now) ?? backoffDelay(input.attempt, input.random, policy);
    } else if (status === 408 || status === 500 || status === 502 || status === 504) {
      delayMs = backoffDelay(input.attempt, input.random, policy);
    } else {
      return { retry: false, reason: 'not-retriable' };
    }
  } else if (failure.kind === 'network') {
    if (!TRANSIENT_NETWORK_CODES.has(failure.code)) return { retry: false, reason: 'not-retriable' };
    delayMs = backoffDelay(input.attempt, input.random, policy);
  } else {
    delayMs = backoffDelay(input.attempt, input.random, policy);
  }
  if (input.attempt >= policy.maxAttempts) return { retry: false, reason: 'attempts-spent', waitMs: delayMs };
  // Waiting must leave time for the next attempt itself, or it is pointless.
  if (delayMs >= input.remainingMs) return { retry: false, reason: 'budget-spent', waitMs: delayMs };
  return { retry: true, delayMs, refreshCredentials: false };
}
