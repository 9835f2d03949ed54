/**
 * Reading Key Vault, in one place for everything the app keeps there (the MDE app credentials, the webhook
 * signing key), with the app's managed identity through one `SecretClient`:
 *
 * - {@link VaultReader.read} reads one item (a certificate through the secret Key Vault keeps for it), bounded
 *   by an abort signal, and maps every failure once to an `UnisolateError` that says what to do: missing item
 *   (`ConfigurationError`), refused, unreachable, managed identity unavailable, or out of time
 *   (`SecretUnavailable`). Messages name the item, never its value. It records the version of each item
 *   read, so that the self-test ({@link VaultReader.inspect}) reports an item read within the TTL without
 *   reading it again.
 * - {@link VaultCache} caches what is derived from such reads per instance, with a TTL: one read serves every
 *   concurrent caller (single flight), each caller waits at most its own `remainingMs` (`sharedFlight.ts`), and
 *   after the TTL a Key Vault outage keeps the cached value in use.
 */
import type { KeyVaultSecret, SecretClient } from '@azure/keyvault-secrets';
import { UnisolateError } from '../core/errors';
import type { Logger } from '../core/ports';
import { abortable, deadlineIn, isAbortError, SharedFlight, within, type Deadline } from './sharedFlight';

/** What a Key Vault item is: a secret, or a certificate (read through its secret: key and certificate). */
export type VaultItemKind = 'secret' | 'certificate';

/** One item the app reads from Key Vault. */
export interface VaultItem {
  name: string;
  kind: VaultItemKind;
  /** What it holds, for messages and the self-test (`MDE app client secret`). */
  what: string;
  /** The setting that names it (`KV_SECRET_CLIENT_SECRET`). */
  setting: string;
  /** What to store when it is missing, for the `az keyvault secret set` hint; default `<value>`. */
  valueHint?: string;
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : typeof error;
}

/**
 * The transient error of a Key Vault wait cut short by the caller's budget.
 * @param what - what was not read, and what that means (`the MDE app credentials were not read`)
 * @param budget - the time that ran out
 */
export function vaultOutOfTime(
  what: string,
  budget = 'the time this request had left (MDE_RETRY_BUDGET_MS)',
): UnisolateError {
  return new UnisolateError(
    'SecretUnavailable',
    `Key Vault (or the managed identity endpoint) did not answer within ${budget}; ${what}. Retry later.`,
    { retryAfterMs: 30_000 },
  );
}

/** Options of {@link VaultReader}. */
export interface VaultReaderOptions {
  /** Absent when the settings name no vault (`KEY_VAULT_URL` unset: federated, ids in the settings). */
  client?: Pick<SecretClient, 'getSecret'>;
  /** How long a read stays current for {@link VaultReader.inspect} (`SECRET_CACHE_TTL_SECONDS`). */
  ttlMs: number;
  now: () => number;
}

/** An item as the self-test reports it: its name, what it holds, and the version read. */
export interface VaultItemVersion {
  name: string;
  what: string;
  version: string;
}

/** Reads Key Vault items; see the module comment. */
export class VaultReader {
  /** The version of each item last read, and when. */
  private readonly versions = new Map<string, { version: string; readAt: number }>();

  constructor(private readonly options: VaultReaderOptions) {}

  /**
   * The version of each of `items`: as last read when that was within the TTL (the same read the releases
   * use), else read now, waiting at most `remainingMs`. Errors as for {@link read}.
   */
  inspect(items: readonly VaultItem[], remainingMs: number): Promise<VaultItemVersion[]> {
    const signal = AbortSignal.timeout(Math.max(1, remainingMs));
    const outOfTime = () => vaultOutOfTime('the items were not read', `${remainingMs} ms`);
    return Promise.all(
      items.map(async (item) => {
        const known = this.versions.get(item.name);
        const current = known !== undefined && this.options.now() - known.readAt < this.options.ttlMs;
        const version = current
          ? known.version
          : ((await this.read(item, signal, outOfTime)).properties.version ?? 'unknown');
        return { name: item.name, what: item.what, version };
      }),
    );
  }

  /**
   * Reads `item`. Throws `UnisolateError`: `ConfigurationError` (no vault configured, or no such item),
   * `SecretUnavailable` (refused, unreachable, no managed identity token, or `signal` fired: `outOfTime()`).
   */
  async read(item: VaultItem, signal: AbortSignal, outOfTime: () => UnisolateError): Promise<KeyVaultSecret> {
    const { name, kind, setting } = item;
    const client = this.options.client;
    if (!client) {
      throw new UnisolateError(
        'ConfigurationError',
        `Set KEY_VAULT_URL: the Key Vault ${kind} ${name} (${setting}) is needed.`,
      );
    }
    try {
      const secret = await abortable(client.getSecret(name, { abortSignal: signal }), signal, outOfTime);
      this.versions.set(name, {
        version: secret.properties.version ?? 'unknown',
        readAt: this.options.now(),
      });
      return secret;
    } catch (error) {
      if (error instanceof UnisolateError) throw error;
      if (isAbortError(error)) throw outOfTime();
      const status = (error as { statusCode?: unknown }).statusCode;
      if (status === 404) {
        throw new UnisolateError(
          'ConfigurationError',
          kind === 'certificate'
            ? `Key Vault certificate ${name} does not exist (${setting} names it). Create it (az keyvault certificate create --vault-name <vault> --name ${name} --policy @policy.json, docs/deploy.md) and upload its public part to the MDE app registration.`
            : `Key Vault secret ${name} does not exist (${setting} names it). Set it: az keyvault secret set --vault-name <vault> --name ${name} --value ${item.valueHint ?? '<value>'}.`,
          { cause: error },
        );
      }
      if (status === 401 || status === 403) {
        throw new UnisolateError(
          'SecretUnavailable',
          `Key Vault refused to read ${kind} ${name} (HTTP ${status}): give the function app's managed identity the Key Vault Secrets User role on the vault (role assignments can take a few minutes to apply).`,
          { cause: error },
        );
      }
      const cause = typeof status === 'number' ? `HTTP ${status}` : errorName(error);
      const identity = /ManagedIdentity|CredentialUnavailable|AuthenticationRequired/i.test(errorName(error));
      throw new UnisolateError(
        'SecretUnavailable',
        identity
          ? `Could not get a managed identity token to read Key Vault (${cause}): check that the app has a managed identity (AZURE_CLIENT_ID for a user-assigned one) and that the identity endpoint is reachable. Retry later.`
          : `Could not read Key Vault ${kind} ${name} (${cause}): the vault may be unreachable or throttling. Retry later.`,
        { cause: error },
      );
    }
  }
}

/** Options of {@link VaultCache}. */
export interface VaultCacheOptions {
  /** How long a read value is used before it is read again (`SECRET_CACHE_TTL_SECONDS`). */
  ttlMs: number;
  now: () => number;
  log: Logger;
  /** What the value is, for the log line when a stale one is kept (`MDE app credentials`). */
  what: string;
  /** The error of a caller whose budget ran out before the read ended. */
  outOfTime: () => UnisolateError;
}

/** A value read from Key Vault, cached with a TTL; see the module comment. */
export class VaultCache<T> {
  private cached?: { value: T; readAt: number };
  private readonly flight = new SharedFlight<T>();

  constructor(private readonly options: VaultCacheOptions) {}

  /** The value while it is within its TTL, else undefined. */
  fresh(): T | undefined {
    const cached = this.cached;
    return cached && this.options.now() - cached.readAt < this.options.ttlMs ? cached.value : undefined;
  }

  /** Whether a value was ever read (it may be past its TTL). */
  get loaded(): boolean {
    return this.cached !== undefined;
  }

  /** The value, waiting at most `remainingMs` for a read (`outOfTime()` after that). */
  get(read: (signal: AbortSignal) => Promise<T>, remainingMs?: number): Promise<T> {
    const deadline = deadlineIn(remainingMs);
    return within(this.load(read, deadline), deadline, this.options.outOfTime);
  }

  /**
   * The fresh value, or the shared read (joined, or started with `read`), which is aborted once every
   * waiter's deadline has passed; `force` reads even when fresh. The promise is the shared one: the caller
   * bounds its own wait ({@link get}, or `within`). When Key Vault is unavailable (`SecretUnavailable`) and a
   * value was read before, that value is kept for another TTL.
   */
  load(read: (signal: AbortSignal) => Promise<T>, deadline: Deadline, force = false): Promise<T> {
    const fresh = force ? undefined : this.fresh();
    if (fresh !== undefined) return Promise.resolve(fresh);
    return this.flight.join(({ signal }) => this.readOrKeep(read, signal), deadline);
  }

  private async readOrKeep(read: (signal: AbortSignal) => Promise<T>, signal: AbortSignal): Promise<T> {
    const stale = this.cached;
    try {
      const value = await read(signal);
      this.cached = { value, readAt: this.options.now() };
      return value;
    } catch (error) {
      if (stale && error instanceof UnisolateError && error.code === 'SecretUnavailable') {
        this.options.log.warn(`Key Vault unavailable; keeping the cached ${this.options.what}`, {
          errorCode: error.code,
        });
        this.cached = { value: stale.value, readAt: this.options.now() };
        return stale.value;
      }
      throw error;
    }
  }
}
