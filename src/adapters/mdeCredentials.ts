/**
 * The MDE app's credentials, turned into bearer tokens for the Defender API (cached until 5 minutes before
 * they expire), in one of three modes (`MDE_CREDENTIAL`, docs/security.md):
 * - `secret`: tenant id, client id and client secret from Key Vault (`ClientSecretCredential`);
 * - `certificate`: tenant and client id as above, and the Key Vault certificate's secret, PEM or PKCS#12
 *   (`ClientCertificateCredential`, which signs a client assertion with its private key);
 * - `federated`: no secret and no certificate: the user-assigned managed identity's token for the token
 *   exchange audience is the client assertion (`ClientAssertionCredential`); the MDE app registration holds
 *   that identity as a federated identity credential. Tenant and client id from Key Vault or the settings.
 * Tenant and client id come from the settings instead of Key Vault when given there (not secrets).
 * What is read is cached per instance with a TTL (`vaultReader.ts`, shared with the webhook signing key):
 *
 * - One Key Vault read serves every concurrent cold request (single flight, no thundering herd).
 * - The items are read one after another, over one connection: Key Vault answers a client's first request
 *   with an authentication challenge, and reads sent at once would each open a TLS connection and each get
 *   that challenge (three handshakes' CPU on a cold instance, for two in-region round trips saved).
 * - After the TTL the secrets are re-read; if Key Vault is down then, the cached ones keep working.
 * - `refresh()` (after a 401 from MDE) forces a re-read: the client secret may have been rotated.
 * - Every wait is bounded by the caller's `remainingMs` (see `sharedFlight.ts`): Key Vault, the managed
 *   identity endpoint or Entra ID not answering in time is `SecretUnavailable` / `TokenUnavailable`, and a
 *   read shared by concurrent requests is aborted only when the last of them gives up.
 * Errors are `UnisolateError`s whose messages never contain a secret or a token.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { X509Certificate } from 'node:crypto';
import type { AccessToken, ClientSecretCredentialOptions, TokenCredential } from '@azure/identity';
import {
  ClientAssertionCredential,
  ClientCertificateCredential,
  ClientSecretCredential,
} from '@azure/identity';
import { UnisolateError } from '../core/errors';
import type { MdeCredentialMode } from '../config';
import type { AttemptOptions, Logger } from '../core/ports';
import { isLoopbackUrl } from './loopback';
import { pkcs12ToPem } from './pkcs12';
import {
  abortable,
  deadlineIn,
  isAbortError,
  SDK_RETRY_OPTIONS,
  SharedFlight,
  within,
  type Deadline,
  type FlightContext,
} from './sharedFlight';
import { VaultCache, vaultOutOfTime, type VaultItem, type VaultReader } from './vaultReader';

/** What the MDE app authenticates with, as read from Key Vault and the settings. */
export type MdeAppCredential =
  | { kind: 'secret'; tenantId: string; clientId: string; clientSecret: string }
  | {
      kind: 'certificate';
      tenantId: string;
      clientId: string;
      /** PEM: private key, then the certificate (and its chain). */
      certificate: string;
      /** Key Vault version of the certificate, and its SHA-1 thumbprint (hex), for messages. */
      version: string;
      thumbprint: string;
    }
  | { kind: 'federated'; tenantId: string; clientId: string };

/** Everything {@link MdeCredentialsOptions.createCredential} may need besides the credential itself. */
export interface CredentialContext {
  authorityHost: string;
  sendCertificateChain: boolean;
  /** The client assertion of the federated mode: the managed identity's token for the exchange audience. */
  getAssertion: () => Promise<string>;
}

/** Options of {@link MdeCredentials}. */
export interface MdeCredentialsOptions {
  mode: MdeCredentialMode;
  /** The Key Vault reader (shared with the webhook signing key); without a vault when nothing is read. */
  vault: VaultReader;
  secretNames: { tenantId: string; clientId: string; clientSecret: string };
  /** Key Vault certificate of the `certificate` mode (`KV_CERTIFICATE_NAME`). */
  certificateName: string;
  /** Tenant and client id from the settings; each one given is not read from Key Vault. */
  ids?: { tenantId?: string | undefined; clientId?: string | undefined };
  sendCertificateChain?: boolean;
  /** `federated`: the user-assigned managed identity whose token is the client assertion. */
  assertionIdentity?: TokenCredential;
  /** The audience that token is requested for (`MDE_TOKEN_EXCHANGE_AUDIENCE`, or the cloud's). */
  tokenExchangeAudience: string;
  authorityHost: string;
  scope: string;
  ttlMs: number;
  now: () => number;
  log: Logger;
  /** Builds the MDE app credential; injectable for tests. */
  createCredential?: (credential: MdeAppCredential, context: CredentialContext) => TokenCredential;
}

/**
 * Entra ID errors meaning the app's credentials themselves are wrong (not an outage): invalid or expired
 * secret, unknown or disabled app, unknown tenant. https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes
 */
const REJECTED_CREDENTIALS = new Set([
  // Client secret: invalid, expired; unknown or disabled app; unknown tenant.
  'AADSTS7000215',
  'AADSTS7000222',
  'AADSTS700016',
  'AADSTS7000112',
  'AADSTS90002',
  'AADSTS900023',
  // No credential in the request; malformed assertion.
  'AADSTS7000218',
  'AADSTS50027',
  // Certificate: not registered on the app, or the signature does not verify; assertion outside its validity
  // (the host's clock).
  'AADSTS700027',
  'AADSTS700024',
  // Federated: no federated identity credential for the assertion's issuer, subject or audience.
  'AADSTS70021',
  'AADSTS700211',
  'AADSTS700212',
  'AADSTS700213',
]);

/** Tokens are renewed this long before they expire. */
const TOKEN_RENEW_MARGIN_MS = 5 * 60_000;

/**
 * Entra ID calls: few, quick SDK retries (`SDK_RETRY_OPTIONS`), and a hard timeout per HTTP try, so that a token endpoint that never answers does not keep a socket open forever even
 * where the SDK ignores the abort signal (MSAL's token requests).
 */
const ENTRA_CLIENT_OPTIONS: Pick<ClientSecretCredentialOptions, 'retryOptions' | 'additionalPolicies'> = {
  retryOptions: SDK_RETRY_OPTIONS,
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

function defaultCredential(credential: MdeAppCredential, context: CredentialContext): TokenCredential {
  const options = {
    authorityHost: context.authorityHost,
    // Only a loopback simulator lacks Entra's instance discovery metadata.
    disableInstanceDiscovery: isLoopbackUrl(context.authorityHost),
    ...ENTRA_CLIENT_OPTIONS,
  };
  const { tenantId, clientId } = credential;
  switch (credential.kind) {
    case 'secret':
      return new ClientSecretCredential(tenantId, clientId, credential.clientSecret, options);
    case 'certificate':
      return new ClientCertificateCredential(
        tenantId,
        clientId,
        { certificate: credential.certificate },
        { ...options, sendCertificateChain: context.sendCertificateChain },
      );
    case 'federated':
      return new ClientAssertionCredential(tenantId, clientId, context.getAssertion, options);
  }
}

/** Whether two reads hold the same credential (then the token and the SDK credential are kept). */
function sameCredential(a: MdeAppCredential, b: MdeAppCredential): boolean {
  if (a.kind !== b.kind || a.tenantId !== b.tenantId || a.clientId !== b.clientId) return false;
  if (a.kind === 'secret' && b.kind === 'secret') return a.clientSecret === b.clientSecret;
  if (a.kind === 'certificate' && b.kind === 'certificate') return a.certificate === b.certificate;
  return true;
}

/** The claims of a JWT that identify it (`iss`, `sub`, `aud`); never its signature or the token itself. */
function identifyingClaims(jwt: string): { iss?: string; sub?: string; aud?: string } {
  try {
    const payload = JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<
      string,
      unknown
    >;
    const text = (v: unknown) => (typeof v === 'string' && v.length <= 300 ? v : undefined);
    return { iss: text(payload.iss), sub: text(payload.sub), aud: text(payload.aud) };
  } catch {
    return {};
  }
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : typeof error;
}

/** What a token flight is waiting for, to name it when a waiter's time is up. */
type Phase = 'secrets' | 'token';

/** What one token request learnt of its federated assertion: the identifying claims, or why there was none. */
interface AssertionRecord {
  claims?: ReturnType<typeof identifyingClaims>;
  failure?: unknown;
}

/** Extracts `AADSTSnnnn` from an Entra error, the only part of its text we repeat. */
function aadstsCode(error: unknown): string | undefined {
  const text = error instanceof Error ? error.message : '';
  return /AADSTS\d+/.exec(text)?.[0];
}

/** Key Vault secrets + Entra token cache for the MDE app. */
export class MdeCredentials {
  /** The credential as read from Key Vault and the settings (TTL, single flight, stale on outage). */
  private readonly secrets: VaultCache<MdeAppCredential>;
  /** The SDK credential built from the latest read (kept while the read credential does not change). */
  private client?: { value: MdeAppCredential; credential: TokenCredential };
  private token?: { value: string; renewAt: number };
  private readonly tokenFlight = new SharedFlight<string>();
  /**
   * The phase of each running token flight, by its shared promise: flights run concurrently (a newcomer
   * starts its own once one is older than the join window), so each waiter reads its own flight's.
   */
  private readonly phases = new WeakMap<Promise<string>, { phase: Phase }>();
  /**
   * The assertion record of the token request in progress: the SDK calls {@link getAssertion} from inside
   * the request, so concurrent requests each record theirs.
   */
  private readonly assertions = new AsyncLocalStorage<AssertionRecord>();
  private readonly createCredential: (
    credential: MdeAppCredential,
    context: CredentialContext,
  ) => TokenCredential;
  /** The Key Vault items of this mode: the ids not given in the settings, and the secret or certificate. */
  private readonly items: { tenantId?: VaultItem; clientId?: VaultItem; material?: VaultItem };
  /** Counters for diagnostics and benchmarks. */
  readonly stats = { secretReads: 0, tokenRequests: 0 };

  constructor(private readonly options: MdeCredentialsOptions) {
    this.createCredential = options.createCredential ?? defaultCredential;
    const { secretNames, ids, mode } = options;
    const secret = (name: string, what: string, setting: string): VaultItem => ({
      name,
      kind: 'secret',
      what,
      setting,
    });
    this.items = {
      tenantId:
        ids?.tenantId === undefined
          ? secret(secretNames.tenantId, 'MDE app tenant id', 'KV_SECRET_TENANT_ID')
          : undefined,
      clientId:
        ids?.clientId === undefined
          ? secret(secretNames.clientId, 'MDE app client id', 'KV_SECRET_CLIENT_ID')
          : undefined,
      material:
        mode === 'secret'
          ? secret(secretNames.clientSecret, 'MDE app client secret', 'KV_SECRET_CLIENT_SECRET')
          : mode === 'certificate'
            ? {
                name: options.certificateName,
                kind: 'certificate',
                what: 'MDE app certificate',
                setting: 'KV_CERTIFICATE_NAME',
              }
            : undefined,
    };
    this.secrets = new VaultCache({
      ttlMs: options.ttlMs,
      now: options.now,
      log: options.log,
      what: 'MDE app credentials',
      outOfTime: () => this.outOfTime('secrets'),
    });
  }

  /** What this mode reads from Key Vault, for the self-test; empty when nothing. */
  vaultItems(): VaultItem[] {
    const { tenantId, clientId, material } = this.items;
    return [tenantId, clientId, material].filter((item) => item !== undefined);
  }

  /** A bearer token for the Defender API, waiting at most `remainingMs` for Key Vault and Entra ID. */
  async getToken(options: Pick<AttemptOptions, 'remainingMs'> = {}): Promise<string> {
    if (this.token && this.options.now() < this.token.renewAt && this.secrets.fresh() !== undefined) {
      return this.token.value;
    }
    const deadline = deadlineIn(options.remainingMs);
    const started = { phase: 'secrets' as Phase };
    const shared = this.tokenFlight.join((flight) => this.fetchToken(flight, started), deadline);
    // `started` is the phase of the flight this call started; a flight it joined has its own already.
    const progress = this.phases.get(shared) ?? started;
    this.phases.set(shared, progress);
    return within(shared, deadline, () => this.outOfTime(progress.phase));
  }

  /** Forgets secrets and token: the next call re-reads Key Vault and asks Entra for a new token. */
  async refresh(options: Pick<AttemptOptions, 'remainingMs'> = {}): Promise<void> {
    this.token = undefined;
    const deadline = deadlineIn(options.remainingMs);
    await within(this.loadSecrets(deadline, true), deadline, () => this.outOfTime('secrets'));
  }

  /** The transient error of a wait cut short by the caller's budget. */
  private outOfTime(phase: Phase): UnisolateError {
    return phase === 'secrets'
      ? vaultOutOfTime('the MDE app credentials were not read')
      : new UnisolateError(
          'TokenUnavailable',
          'Entra ID did not answer within the time this request had left (MDE_RETRY_BUDGET_MS); no token for the Defender API. Retry later.',
          { retryAfterMs: 30_000 },
        );
  }

  private async fetchToken(flight: FlightContext, progress: { phase: Phase }): Promise<string> {
    progress.phase = 'secrets';
    await abortable(this.loadSecrets(this.secretsDeadline(flight)), flight.signal, () =>
      this.outOfTime('secrets'),
    );
    // Re-reading unchanged secrets (TTL) keeps the token; changed secrets cleared it.
    if (this.token && this.options.now() < this.token.renewAt) return this.token.value;
    progress.phase = 'token';
    let access: AccessToken;
    try {
      access = await this.requestToken(flight.signal);
    } catch (error) {
      if (!(error instanceof UnisolateError) || error.code !== 'CredentialsRejected') throw error;
      // The secret may have been rotated in Key Vault since we read it: read once more, then give up.
      progress.phase = 'secrets';
      await abortable(this.loadSecrets(flight.deadline, true), flight.signal, () =>
        this.outOfTime('secrets'),
      );
      progress.phase = 'token';
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
    if (!this.secrets.loaded) return flight.deadline;
    const now = Date.now();
    const until = flight.deadline();
    const half = until === Infinity ? Infinity : now + (until - now) / 2;
    return () => half;
  }

  /** What to check when Entra ID rejects the credential: which credential, and where it is set. */
  private rejection(
    credential: MdeAppCredential,
    code: string | undefined,
    assertion: AssertionRecord,
  ): string {
    const { secretNames, ids } = this.options;
    const where = (what: 'tenant' | 'client') =>
      what === 'tenant'
        ? ids?.tenantId !== undefined
          ? 'MDE_TENANT_ID'
          : `Key Vault secret ${secretNames.tenantId}`
        : ids?.clientId !== undefined
          ? 'MDE_CLIENT_ID'
          : `Key Vault secret ${secretNames.clientId}`;
    const app = `the MDE app registration ${credential.clientId} (${where('client')}) in tenant ${credential.tenantId} (${where('tenant')})`;
    switch (credential.kind) {
      case 'secret':
        return `Entra ID rejected the MDE app's client secret (${code}). Check the Key Vault secrets ${secretNames.tenantId}, ${secretNames.clientId} and ${secretNames.clientSecret} (is the client secret expired or rotated?) and MDE_CLOUD.`;
      case 'certificate':
        return `Entra ID rejected the MDE app's certificate (${code}): Key Vault certificate ${this.options.certificateName}, version ${credential.version}, thumbprint ${credential.thumbprint}. Check that ${app} has this certificate's public part among its credentials (az ad app credential reset --id <app id> --cert @cert.pem --append), that it has not expired, that the host clock is right, and MDE_CLOUD.`;
      case 'federated': {
        const { iss, sub, aud } = assertion.claims ?? {};
        const audience = aud ?? this.options.tokenExchangeAudience;
        return `Entra ID rejected the federated credential (${code}): ${app} needs a federated identity credential with issuer ${iss ?? '<issuer>'}, subject ${sub ?? '<principal id of AZURE_CLIENT_ID>'} (the user-assigned managed identity's principal id) and audience ${audience}. Create it: az ad app federated-credential create --id ${credential.clientId} --parameters '{"name":"mde-unisolate","issuer":"${iss ?? '<issuer>'}","subject":"${sub ?? '<principal id>'}","audiences":["${audience}"]}'. Check MDE_CLOUD (or MDE_TOKEN_EXCHANGE_AUDIENCE) too.`;
      }
    }
  }

  /** The federated mode's client assertion: the managed identity's token for the exchange audience. */
  private async getAssertion(): Promise<string> {
    const { assertionIdentity: identity, tokenExchangeAudience: audience } = this.options;
    if (!identity) throw new Error('no managed identity for the federated credential');
    // The record of the token request this assertion is for (none when the SDK calls outside one).
    const record = this.assertions.getStore() ?? {};
    try {
      const access = await identity.getToken(`${audience}/.default`);
      if (!access) throw new Error('empty token response');
      record.claims = identifyingClaims(access.token);
      delete record.failure;
      return access.token;
    } catch (error) {
      record.failure = error;
      throw error;
    }
  }

  private async requestToken(signal: AbortSignal): Promise<AccessToken> {
    const current = this.client;
    if (!current) throw new UnisolateError('SecretUnavailable', 'The MDE app credentials were not loaded.');
    this.stats.tokenRequests += 1;
    const assertion: AssertionRecord = {};
    try {
      const access = await abortable(
        this.assertions.run(assertion, () =>
          current.credential.getToken(this.options.scope, { abortSignal: signal }),
        ),
        signal,
        () => this.outOfTime('token'),
      );
      if (!access) throw new Error('empty token response');
      return access;
    } catch (error) {
      if (error instanceof UnisolateError) throw error;
      if (isAbortError(error)) throw this.outOfTime('token');
      const code = aadstsCode(error);
      // MSAL reports a refused client secret as AuthenticationRequiredError or AuthenticationError depending on
      // the path; what identifies it is the OAuth error / AADSTS code, not the class.
      const text = error instanceof Error ? error.message : '';
      const rejected =
        /\b(invalid_client|unauthorized_client|invalid_tenant)\b/.test(text) ||
        (code !== undefined && REJECTED_CREDENTIALS.has(code));
      if (rejected) {
        throw new UnisolateError('CredentialsRejected', this.rejection(current.value, code, assertion), {
          cause: error,
        });
      }
      if (assertion.failure !== undefined) {
        throw new UnisolateError(
          'TokenUnavailable',
          `The managed identity (AZURE_CLIENT_ID) could not issue its token for ${this.options.tokenExchangeAudience}, the assertion of the federated credential (${errorName(assertion.failure)}): check that this user-assigned identity is attached to the function app. Retry later.`,
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

  private loadSecrets(deadline: Deadline, force = false): Promise<MdeAppCredential> {
    return this.secrets.load((signal) => this.readSecrets(signal), deadline, force);
  }

  /** Reads the credential (ids, secret or certificate) and builds its SDK credential when it changed. */
  private async readSecrets(signal: AbortSignal): Promise<MdeAppCredential> {
    const { ids, mode } = this.options;
    const items = this.items;
    if (this.vaultItems().length > 0) this.stats.secretReads += 1;
    const tenantId = ids?.tenantId ?? (await this.readSecret(items.tenantId!, signal));
    const clientId = ids?.clientId ?? (await this.readSecret(items.clientId!, signal));
    const material =
      mode === 'secret'
        ? await this.readSecret(items.material!, signal)
        : mode === 'certificate'
          ? await this.readCertificate(items.material!, signal)
          : undefined;
    let value: MdeAppCredential;
    if (mode === 'secret') value = { kind: 'secret', tenantId, clientId, clientSecret: material as string };
    else if (mode === 'certificate') {
      value = {
        kind: 'certificate',
        tenantId,
        clientId,
        ...(material as { certificate: string; version: string; thumbprint: string }),
      };
    } else value = { kind: 'federated', tenantId, clientId };
    const previous = this.client;
    if (previous === undefined || !sameCredential(previous.value, value)) {
      this.client = {
        value,
        credential: this.createCredential(value, {
          authorityHost: this.options.authorityHost,
          sendCertificateChain: this.options.sendCertificateChain ?? false,
          getAssertion: () => this.getAssertion(),
        }),
      };
      this.token = undefined;
    }
    return value;
  }

  /**
   * The certificate's private key and certificate, from the secret Key Vault keeps for every certificate:
   * PEM (`application/x-pem-file`) or base64 PKCS#12 (`application/x-pkcs12`), as the certificate policy's
   * content type says. https://learn.microsoft.com/azure/key-vault/certificates/about-certificates
   */
  private async readCertificate(
    item: VaultItem,
    signal: AbortSignal,
  ): Promise<{ certificate: string; version: string; thumbprint: string }> {
    const { name } = item;
    const secret = await this.options.vault.read(item, signal, () => this.outOfTime('secrets'));
    const contentType = secret.properties.contentType ?? '';
    const version = secret.properties.version ?? 'unknown';
    const raw = secret.value ?? '';
    let certificate: string;
    try {
      certificate =
        contentType === 'application/x-pkcs12' || !raw.includes('-----BEGIN')
          ? pkcs12ToPem(Buffer.from(raw, 'base64'))
          : raw;
      // Both parts must be there: a certificate whose key is not exportable has no private key in its secret.
      if (!/-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/.test(certificate))
        throw new Error('no private key');
      const thumbprint = new X509Certificate(certificate).fingerprint.replace(/:/g, '');
      return { certificate, version, thumbprint };
    } catch (error) {
      throw new UnisolateError(
        'ConfigurationError',
        `Key Vault certificate ${name} (version ${version}, ${contentType || 'no content type'}) could not be used as the MDE app's credential (${error instanceof Error ? error.message.slice(0, 100) : 'unreadable'}). It needs an RSA key that is exportable (certificate policy keyProperties.exportable: true) and content type application/x-pem-file or application/x-pkcs12.`,
      );
    }
  }

  private async readSecret(item: VaultItem, signal: AbortSignal): Promise<string> {
    const secret = await this.options.vault.read(item, signal, () => this.outOfTime('secrets'));
    const value = secret.value?.trim();
    if (!value) {
      throw new UnisolateError(
        'ConfigurationError',
        `Key Vault secret ${item.name} (${item.setting}) is empty: set it with az keyvault secret set.`,
      );
    }
    return value;
  }
}
