/**
 * The app's one error type: what went wrong (a code with its outcome and HTTP status), what to do about it,
 * and the cause kept for logs only.
 */
import { ERROR_TABLE, type ErrorCode } from './outcome';

/**
 * The one error type of the app: a literal `code` (mapped to outcome and HTTP status by
 * `ERROR_TABLE`), a human message that says what to do, and the original `cause` (never shown to callers:
 * SDK errors can quote request details).
 */
export class UnisolateError extends Error {
  override readonly name = 'UnisolateError';

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly options: { cause?: unknown; retryAfterMs?: number; attempts?: number } = {},
  ) {
    super(message, { cause: options.cause });
  }

  /** Whether a Service Bus delivery that ends in this error should be redelivered. */
  get transient(): boolean {
    return ERROR_TABLE[this.code].transient;
  }

  /** Suggested wait before a retry (from MDE's `Retry-After` or the rate limiter), if known. */
  get retryAfterMs(): number | undefined {
    return this.options.retryAfterMs;
  }
}

/**
 * Converts anything thrown into a {@link UnisolateError}, once, at the boundary. Unknown errors become
 * `InternalError` with a generic message: their text may contain request details we must not echo.
 */
export function toUnisolateError(error: unknown): UnisolateError {
  if (error instanceof UnisolateError) return error;
  return new UnisolateError(
    'InternalError',
    'Unexpected internal error; see the function logs for details.',
    {
      cause: error,
    },
  );
}

/**
 * `ConfigurationError` for invalid app settings, in words a caller may see: never a setting's value (values
 * and the full list of problems go to the function log only).
 * @param settings - names of the invalid settings, for a caller that passed the caller checks; omit for a
 *   caller that is not (or could not be) authenticated, who learns only that the service is misconfigured
 */
export function misconfigured(settings?: readonly string[]): UnisolateError {
  return new UnisolateError(
    'ConfigurationError',
    settings && settings.length > 0
      ? `The service is misconfigured (invalid app settings: ${settings.join(', ')}); an administrator must fix them (details in the function log).`
      : 'The service is misconfigured; an administrator must fix the app settings (details in the function log).',
  );
}
