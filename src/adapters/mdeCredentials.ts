/**
 * The MDE app's credentials: read from Key Vault with the function's managed identity, cached per instance
 * with a TTL, and turned into bearer tokens for the Defender API, cached until shortly before expiry.
 *
 * - One Key Vault read serves every concurrent cold request (single flight, no thundering herd).
 * - After the TTL the secrets are re-read; if Key Vault is down then, the cached ones keep working.
 * - `refresh()` (after a 401 from MDE) forces a re-read: the client secret may have been rotated.
 * - Every wait is bounded by the caller's `remainingMs` (see `sharedFlight.ts`): Key Vault, the managed
 *   identity endpoint or Entra ID not answering in time is `SecretUnavailable` / `TokenUnavailable`, and a
 *   read shared by concurrent requests is aborted only when the last of them gives up.
 * Errors are `UnisolateError`s whose messages never contain a secret or a token.
 */
import type { AccessToken, ClientSecretCredentialOptions, TokenCredential } from '@azure/identity';
import { ClientSecretCredential } from '@azure/identity';
import type { SecretClient } from '@azure/keyvault-secrets';
import { UnisolateError } from '../core/errors';
import type { AttemptOptions, Logger } from '../core/ports';
import { isLoopbackUrl } from './loopback';
import {
  abortable,
  deadlineIn,
  SharedFlight,
  within,
  type Deadline,
  type FlightContext,
} from './sharedFlight';

/** The three secrets. */
export interface MdeAppSecrets {
  tenantId: string;
  clientId: string;
  clientSecret: string;
}

/** Options of {@link MdeCredentials}. */
export interface MdeCredentialsOptions {
  secretClient: Pick<SecretClient, 'getSecret'>;
  secretNames: { tenantId: string; clientId: string; clientSecret: string };
  authorityHost: string;
  scope: string;
  ttlMs: number;
  now: () => number;
  log: Logger;
  /** Builds the MDE app credential; injectable for tests. */
  createCredential?: (secrets: MdeAppSecrets, authorityHost: string) => TokenCredential;
}

/**
 * Entra ID errors meaning the app's credentials themselves are wrong (not an outage): invalid or expired
 * secret, unknown or disabled app, unknown tenant. https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes
 */
const REJECTED_CREDENTIALS = new Set([
  'AADSTS7000215',
  'AADSTS7000222',
  'AADSTS700016',
  'AADSTS7000112',
  'AADSTS90002',
  'AADSTS900023',
]);

/** Tokens are renewed this long before they expire. */
const TOKEN_RENEW_MARGIN_MS = 5 * 60_000;

/**
 * Entra ID calls: few, quick SDK retries (the core retries the whole attempt within its budget), and a hard
 * timeout per HTTP try, so that a token endpoint that never answers does not keep a socket open forever even
 * where the SDK ignores the abort signal (MSAL's token requests).
 */
export const ENTRA_CLIENT_OPTIONS: Pick<
  ClientSecretCredentialOptions,
  'retryOptions' | 'additionalPolicies'
> = {
  retryOptions: { maxRetries: 2, retryDelayInMs: 500, maxRetryDelayInMs: 4000 },
  additionalPolicies: [
    {
      position: 'perRetry',
      policy: {
        name: 'mdeUnisolateTryTimeout',
        sendRequest: (request, next) => {
          request.timeout = request.timeout > 0 ? Math.min(request.timeout, 15_000) : 15_000;
          return next(request);
        },
      },
    },
  ],
};

function defaultCredential(secrets: MdeAppSecrets, authorityHost: string): TokenCredential {
  return new ClientSecretCredential(secrets.tenantId, secrets.clientId, secrets.clientSecret, {
    authorityHost,
    // Only a loopback simulator lacks Entra's instance discovery metadata.
    disableInstanceDiscovery: isLoopbackUrl(authorityHost),
    ...ENTRA_CLIENT_OPTIONS,
  });
}

/** Whether an SDK call ended because its abort signal fired (our deadline), not because of the service. */
function aborted(error: unknown): boolean {
  return error instanceof Error && (error.name === 'AbortError' || error.name === 'DeadlineExceeded');
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : typeof error;
}

/** Extracts `AADSTSnnnn` from an Entra error, the only part of its text we repeat. */
function aadstsCode(error: unknown): string | undefined {
  const text = error instanceof Error ? error.message : '';
  return /AADSTS\d+/.exec(text)?.[0];
}

/** Key Vault secrets + Entra token cache for the MDE app. */
export class MdeCredentials {
  private secrets?: { value: MdeAppSecrets; readAt: number; credential: TokenCredential };
  private readonly secretsFlight = new SharedFlight<MdeAppSecrets>();
  private token?: { value: string; renewAt: number };
  private readonly tokenFlight = new SharedFlight<string>();
  /** What the token flight is waiting for, to name it when a waiter's time is up. */
  private phase: 'secrets' | 'token' = 'secrets';
  private readonly createCredential: (secrets: MdeAppSecrets, authorityHost: string) => TokenCredential;
  /** Counters for diagnostics and benchmarks. */
  readonly stats = { secretReads: 0, tokenRequests: 0 };

  constructor(private readonly options: MdeCredentialsOptions) {
    this.createCredential = options.createCredential ?? defaultCredential;
  }

  /** A bearer token for the Defender API, waiting at most `remainingMs` for Key Vault and Entra ID. */
  async getToken(options: Pick<AttemptOptions, 'remainingMs'> = {}): Promise<string> {
    const now = this.options.now();
    if (
      this.token &&
      now < this.token.renewAt &&
      this.secrets &&
      now - this.secrets.readAt < this.options.ttlMs
    ) {
      return this.token.value;
    }
    const deadline = deadlineIn(options.remainingMs);
    return within(
      this.tokenFlight.join((flight) => this.fetchToken(flight), deadline),
      deadline,
      () => this.outOfTime(this.phase),
    );
  }

  /** Forgets secrets and token: the next call re-reads Key Vault and asks Entra for a new token. */
  async refresh(options: Pick<AttemptOptions, 'remainingMs'> = {}): Promise<void> {
    this.token = undefined;
    const deadline = deadlineIn(options.remainingMs);
    await within(this.loadSecrets(true, deadline), deadline, () => this.outOfTime('secrets'));
  }

  /** The transient error of a wait cut short by the caller's budget. */
  private outOfTime(phase: 'secrets' | 'token'): UnisolateError {
    return phase === 'secrets'
      ? new UnisolateError(
          'SecretUnavailable',
          'Key Vault (or the managed identity endpoint) did not answer within the time this request had left (MDE_RETRY_BUDGET_MS); the MDE app credentials were not read. Retry later.',
          { retryAfterMs: 30_000 },
        )
      : new UnisolateError(
          'TokenUnavailable',
          'Entra ID did not answer within the time this request had left (MDE_RETRY_BUDGET_MS); no token for the Defender API. Retry later.',
          { retryAfterMs: 30_000 },
        );
  }

  private async fetchToken(flight: FlightContext): Promise<string> {
    this.phase = 'secrets';
    await abortable(this.loadSecrets(false, this.secretsDeadline(flight)), flight.signal, () =>
      this.outOfTime('secrets'),
    );
    // Re-reading unchanged secrets (TTL) keeps the token; changed secrets cleared it.
    if (this.token && this.options.now() < this.token.renewAt) return this.token.value;
    this.phase = 'token';
    let access: AccessToken;
    try {
      access = await this.requestToken(flight.signal);
    } catch (error) {
      if (!(error instanceof UnisolateError) || error.code !== 'CredentialsRejected') throw error;
      // The secret may have been rotated in Key Vault since we read it: read once more, then give up.
      this.phase = 'secrets';
      await abortable(this.loadSecrets(true, flight.deadline), flight.signal, () =>
        this.outOfTime('secrets'),
      );
      this.phase = 'token';
      access = await this.requestToken(flight.signal);
    }
    const renewAt = Math.min(
      access.refreshAfterTimestamp ?? Infinity,
      access.expiresOnTimestamp - TOKEN_RENEW_MARGIN_MS,
    );
    this.token = { value: access.token, renewAt: Math.max(renewAt, this.options.now() + 1000) };
    return access.token;
  }

  /**
   * How long a Key Vault re-read may take within a token flight. With cached credentials (TTL re-read), only
   * half of the time left: if Key Vault does not answer, the cached ones are used with the other half.
   */
  private secretsDeadline(flight: FlightContext): Deadline {
    if (!this.secrets) return flight.deadline;
    const now = Date.now();
    const until = flight.deadline();
    const half = until === Infinity ? Infinity : now + (until - now) / 2;
    return () => half;
  }

  private async requestToken(signal: AbortSignal): Promise<AccessToken> {
    const current = this.secrets;
    if (!current) throw new UnisolateError('SecretUnavailable', 'The MDE app credentials were not loaded.');
    this.stats.tokenRequests += 1;
    try {
      const access = await abortable(
        current.credential.getToken(this.options.scope, { abortSignal: signal }),
        signal,
        () => this.outOfTime('token'),
      );
      if (!access) throw new Error('empty token response');
      return access;
    } catch (error) {
      if (error instanceof UnisolateError) throw error;
      if (aborted(error)) throw this.outOfTime('token');
      const code = aadstsCode(error);
      // MSAL reports a refused client secret as AuthenticationRequiredError or AuthenticationError depending on
      // the path; what identifies it is the OAuth error / AADSTS code, not the class.
      const text = error instanceof Error ? error.message : '';
      const rejected =
        /\b(invalid_client|unauthorized_client|invalid_tenant)\b/.test(text) ||
        (code !== undefined && REJECTED_CREDENTIALS.has(code));
      if (rejected) {
        throw new UnisolateError(
          'CredentialsRejected',
          `Entra ID rejected the MDE app credentials from Key Vault (${code}). Check the secrets ${this.options.secretNames.tenantId}, ${this.options.secretNames.clientId} and ${this.options.secretNames.clientSecret} (is the client secret expired or rotated?) and MDE_CLOUD.`,
          { cause: error },
        );
      }
      throw new UnisolateError(
        'TokenUnavailable',
        `Could not get a token for the Defender API from Entra ID (${code ?? errorName(error)}). Entra ID may be unreachable; retry later.`,
        { cause: error },
      );
    }
  }

  private async loadSecrets(force: boolean, deadline: Deadline): Promise<MdeAppSecrets> {
    const cached = this.secrets;
    if (!force && cached && this.options.now() - cached.readAt < this.options.ttlMs) return cached.value;
    return this.secretsFlight.join((flight) => this.readSecrets(cached?.value, flight.signal), deadline);
  }

  private async readSecrets(stale: MdeAppSecrets | undefined, signal: AbortSignal): Promise<MdeAppSecrets> {
    const names = this.options.secretNames;
    let value: MdeAppSecrets;
    try {
      this.stats.secretReads += 1;
      const [tenantId, clientId, clientSecret] = await Promise.all(
        [names.tenantId, names.clientId, names.clientSecret].map((name) => this.readSecret(name, signal)),
      );
      value = { tenantId: tenantId!, clientId: clientId!, clientSecret: clientSecret! };
    } catch (error) {
      if (stale && error instanceof UnisolateError && error.code === 'SecretUnavailable') {
        // Key Vault is down after the TTL: the cached credentials are still the best we have.
        this.options.log.warn('Key Vault unavailable; keeping the cached MDE app credentials', {
          errorCode: error.code,
        });
        this.secrets = { ...this.secrets!, readAt: this.options.now() };
        return stale;
      }
      throw error;
    }
    const previous = this.secrets;
    const unchanged =
      previous &&
      previous.value.tenantId === value.tenantId &&
      previous.value.clientId === value.clientId &&
      previous.value.clientSecret === value.clientSecret;
    const credential = unchanged
      ? previous.credential
      : this.createCredential(value, this.options.authorityHost);
    if (!unchanged) this.token = undefined;
    this.secrets = { value, readAt: this.options.now(), credential };
    return value;
  }

  private async readSecret(name: string, signal: AbortSignal): Promise<string> {
    try {
      const secret = await abortable(
        this.options.secretClient.getSecret(name, { abortSignal: signal }),
        signal,
        () => this.outOfTime('secrets'),
      );
      const value = secret.value?.trim();
      if (!value) {
        throw new UnisolateError(
          'ConfigurationError',
          `Key Vault secret ${name} is empty: set it with az keyvault secret set.`,
        );
      }
      return value;
    } catch (error) {
      if (error instanceof UnisolateError) throw error;
      if (aborted(error)) throw this.outOfTime('secrets');
      const status = (error as { statusCode?: number }).statusCode;
      if (status === 404) {
        throw new UnisolateError(
          'ConfigurationError',
          `Key Vault secret ${name} does not exist. Set it: az keyvault secret set --vault-name <vault> --name ${name} --value <value>.`,
          { cause: error },
        );
      }
      if (status === 401 || status === 403) {
        throw new UnisolateError(
          'SecretUnavailable',
          `Key Vault refused to read secret ${name} (HTTP ${status}): give the function app's managed identity the Key Vault Secrets User role on the vault (role assignments can take a few minutes to apply).`,
          { cause: error },
        );
      }
      const cause = status ? `HTTP ${status}` : errorName(error);
      const identity = /ManagedIdentity|CredentialUnavailable|AuthenticationRequired/i.test(errorName(error));
      throw new UnisolateError(
        'SecretUnavailable',
        identity
          ? `Could not get a managed identity token to read Key Vault (${cause}): check that the app has a managed identity (AZURE_CLIENT_ID for a user-assigned one) and that the identity endpoint is reachable. Retry later.`
          : `Could not read Key Vault secret ${name} (${cause}): the vault may be unreachable or throttling. Retry later.`,
        { cause: error },
      );
    }
  }
}
