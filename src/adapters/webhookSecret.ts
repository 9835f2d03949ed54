/**
 * The webhook signing secret, read from Key Vault (setting `WEBHOOK_SIGNING_SECRET_NAME`) with the same
 * reader and managed identity as the MDE app credentials (`vaultReader.ts`), and cached per instance with the
 * same TTL (`SECRET_CACHE_TTL_SECONDS`): a signed request costs no Key Vault round trip once warm.
 *
 * - One Key Vault read serves every concurrent cold request (single flight).
 * - After the TTL the secret is re-read; if Key Vault is down then, the cached one keeps working.
 * - A caller waits at most its `remainingMs`; Key Vault not answering in time is `SecretUnavailable`, and the
 *   shared read is aborted only when its last waiter gives up (`sharedFlight.ts`).
 * - The value may hold several keys separated by whitespace or commas, so a rotation can accept the old and
 *   the new key for a while (docs/security.md, "Rotating the webhook secret").
 * Errors are `UnisolateError`s whose messages never contain the secret.
 */
import { UnisolateError } from '../core/errors';
import type { AttemptOptions, Logger } from '../core/ports';
import { VaultCache, vaultOutOfTime, type VaultItem, type VaultReader } from './vaultReader';

/** Shortest key accepted: HMAC-SHA256 keys should carry at least 256 bits (`openssl rand -hex 32`). */
export const MIN_WEBHOOK_SECRET_CHARS = 32;

/** The Key Vault item holding the webhook signing key(s), named by `WEBHOOK_SIGNING_SECRET_NAME`. */
export function webhookSecretItem(name: string): VaultItem {
  return {
    name,
    kind: 'secret',
    what: 'webhook signing key',
    setting: 'WEBHOOK_SIGNING_SECRET_NAME',
    valueHint: '"$(openssl rand -hex 32)"',
  };
}

/** Options of {@link WebhookSecret}. */
export interface WebhookSecretOptions {
  vault: VaultReader;
  /** Name of the Key Vault secret. */
  name: string;
  ttlMs: number;
  now: () => number;
  log: Logger;
}

/** Reads and caches the webhook signing key(s). */
export class WebhookSecret {
  private readonly item: VaultItem;
  private readonly cache: VaultCache<string[]>;
  private readonly outOfTime: () => UnisolateError;

  constructor(private readonly options: WebhookSecretOptions) {
    this.item = webhookSecretItem(options.name);
    this.outOfTime = () =>
      vaultOutOfTime(
        `the webhook signing key (secret ${options.name}) was not read, so the request signature could not be checked`,
      );
    this.cache = new VaultCache({
      ttlMs: options.ttlMs,
      now: options.now,
      log: options.log,
      what: 'webhook signing secret',
      outOfTime: this.outOfTime,
    });
  }

  /** The accepted signing keys (one, or two during a rotation), waiting at most `remainingMs` for Key Vault. */
  keys(options: Pick<AttemptOptions, 'remainingMs'> = {}): Promise<string[]> {
    return this.cache.get((signal) => this.read(signal), options.remainingMs);
  }

  private async read(signal: AbortSignal): Promise<string[]> {
    const { name } = this.options;
    const secret = await this.options.vault.read(this.item, signal, this.outOfTime);
    const keys = (secret.value ?? '').split(/[\s,]+/).filter(Boolean);
    if (keys.length === 0 || keys.some((key) => key.length < MIN_WEBHOOK_SECRET_CHARS)) {
      throw new UnisolateError(
        'ConfigurationError',
        `Key Vault secret ${name} (WEBHOOK_SIGNING_SECRET_NAME) must hold one or more keys of at least ${MIN_WEBHOOK_SECRET_CHARS} characters, e.g. from openssl rand -hex 32.`,
      );
    }
    return keys;
  }
}
