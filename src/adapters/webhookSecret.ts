/**
 * The webhook signing secret, read from Key Vault (setting `WEBHOOK_SIGNING_SECRET_NAME`) with the same
 * `SecretClient` and managed identity as the MDE app credentials, and cached per instance with the same TTL
 * (`SECRET_CACHE_TTL_SECONDS`): a signed request costs no Key Vault round trip once warm.
 *
 * - One Key Vault read serves every concurrent cold request (single flight).
 * - After the TTL the secret is re-read; if Key Vault is down then, the cached one keeps working.
 * - A caller waits at most its `remainingMs`; Key Vault not answering in time is `SecretUnavailable`, and the
 *   shared read is aborted only when its last waiter gives up (`sharedFlight.ts`).
 * - The value may hold several keys separated by whitespace or commas, so a rotation can accept the old and
 *   the new key for a while (docs/security.md, "Rotating the webhook secret").
 * Errors are `UnisolateError`s whose messages never contain the secret.
 */
import type { SecretClient } from '@azure/keyvault-secrets';
import { UnisolateError } from '../core/errors';
import type { AttemptOptions, Logger } from '../core/ports';
import { abortable, deadlineIn, SharedFlight, within } from './sharedFlight';

/** Shortest key accepted: HMAC-SHA256 keys should carry at least 256 bits (`openssl rand -hex 32`). */
export const MIN_WEBHOOK_SECRET_CHARS = 32;

/** Options of {@link WebhookSecret}. */
export interface WebhookSecretOptions {
  secretClient: Pick<SecretClient, 'getSecret'>;
  /** Name of the Key Vault secret. */
  name: string;
  ttlMs: number;
  now: () => number;
  log: Logger;
}

/** Reads and caches the webhook signing key(s). */
export class WebhookSecret {
  private cached?: { keys: string[]; readAt: number };
  private readonly flight = new SharedFlight<string[]>();
  /** Counters for diagnostics and tests. */
  readonly stats = { reads: 0 };

  constructor(private readonly options: WebhookSecretOptions) {}

  /** The accepted signing keys (one, or two during a rotation), waiting at most `remainingMs` for Key Vault. */
  async keys(options: Pick<AttemptOptions, 'remainingMs'> = {}): Promise<string[]> {
    const cached = this.cached;
    if (cached && this.options.now() - cached.readAt < this.options.ttlMs) return cached.keys;
    const deadline = deadlineIn(options.remainingMs);
    return within(
      this.flight.join(({ signal }) => this.read(cached?.keys, signal), deadline),
      deadline,
      () => this.outOfTime(),
    );
  }

  private outOfTime(): UnisolateError {
    return new UnisolateError(
      'SecretUnavailable',
      `Key Vault did not answer within the time this request had left, so the request signature could not be checked (secret ${this.options.name}). Retry later.`,
      { retryAfterMs: 30_000 },
    );
  }

  private async read(stale: string[] | undefined, signal: AbortSignal): Promise<string[]> {
    try {
      const keys = await this.fetch(signal);
      this.cached = { keys, readAt: this.options.now() };
      return keys;
    } catch (error) {
      if (stale && error instanceof UnisolateError && error.code === 'SecretUnavailable') {
        this.options.log.warn('Key Vault unavailable; keeping the cached webhook signing secret', {
          errorCode: error.code,
        });
        this.cached = { keys: stale, readAt: this.options.now() };
        return stale;
      }
      throw error;
    }
  }

  private async fetch(signal: AbortSignal): Promise<string[]> {
    const { name } = this.options;
    let value: string | undefined;
    try {
      this.stats.reads += 1;
      const secret = await abortable(
        this.options.secretClient.getSecret(name, { abortSignal: signal }),
        signal,
        () => this.outOfTime(),
      );
      value = secret.value;
    } catch (error) {
      if (error instanceof UnisolateError) throw error;
      if (error instanceof Error && (error.name === 'AbortError' || error.name === 'DeadlineExceeded')) {
        throw this.outOfTime();
      }
      const status = (error as { statusCode?: unknown }).statusCode;
      if (status === 404) {
        throw new UnisolateError(
          'ConfigurationError',
          `Key Vault secret ${name} (WEBHOOK_SIGNING_SECRET_NAME) does not exist. Create it: az keyvault secret set --vault-name <vault> --name ${name} --value "$(openssl rand -hex 32)".`,
          { cause: error },
        );
      }
      if (status === 401 || status === 403) {
        throw new UnisolateError(
          'SecretUnavailable',
          `Key Vault refused to read secret ${name} (HTTP ${status}): give the function app's managed identity the Key Vault Secrets User role on the vault.`,
          { cause: error },
        );
      }
      throw new UnisolateError(
        'SecretUnavailable',
        `Could not read Key Vault secret ${name} (${typeof status === 'number' ? `HTTP ${status}` : error instanceof Error ? error.name : 'error'}) to check the request signature. Retry later.`,
        { cause: error },
      );
    }
    const keys = (value ?? '').split(/[\s,]+/).filter(Boolean);
    if (keys.length === 0 || keys.some((key) => key.length < MIN_WEBHOOK_SECRET_CHARS)) {
      throw new UnisolateError(
        'ConfigurationError',
        `Key Vault secret ${name} (WEBHOOK_SIGNING_SECRET_NAME) must hold one or more keys of at least ${MIN_WEBHOOK_SECRET_CHARS} characters, e.g. from openssl rand -hex 32.`,
      );
    }
    return keys;
  }
}
