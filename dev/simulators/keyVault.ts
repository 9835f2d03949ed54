/**
 * Simulator of the Azure Key Vault secrets data plane (HTTPS), enough for `SecretClient.getSecret` and
 * `SecretClient.setSecret` from `@azure/keyvault-secrets` 4.x, including the challenge-based auth handshake:
 *
 * 1. The SDK's `keyVaultAuthenticationPolicy` first sends the request WITHOUT a token (and without body).
 * 2. Key Vault answers `401` with
 *    `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"`.
 * 3. The SDK asks its credential for `<resource>/.default` (tenant from the `authorization` URL) and retries.
 *
 * https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses
 * The SDK by default checks that the challenge `resource` host is a suffix of the vault host, which
 * 127.0.0.1 is not, so clients must pass `{ disableChallengeResourceVerification: true }` (as the app does for
 * loopback vaults).
 *
 * Certificates: Key Vault keeps a certificate's private key and certificate in a secret of the same name
 * (`managed: true`, `kid` pointing at its key), as PEM (`application/x-pem-file`: private key, then
 * certificate) or as base64 PKCS#12 without a password (`application/x-pkcs12`), per the certificate
 * policy's content type; each new certificate version is a new secret version.
 * https://learn.microsoft.com/azure/key-vault/certificates/about-certificates#composition-of-a-certificate
 */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  SimServer,
  type CommonSimOptions,
  type SimRequest,
  type SimResponse,
  type SimulatorHandle,
} from './server';
import { TokenRegistry, bearerToken, defaultTokenRegistry } from './tokens';

/** Audience Key Vault tokens are issued for. */
export const KEY_VAULT_RESOURCE = 'https://vault.azure.net';

/** Options for {@link startKeyVault}. */
export interface KeyVaultSimOptions extends CommonSimOptions {
  /** Initial secrets (name → value); each gets one version. */
  secrets?: Record<string, string>;
  /**
   * Decides whether a bearer token is accepted. Default: the token is in `registry`, unexpired, and was issued
   * for `https://vault.azure.net` (i.e. it came from a managed-identity/Entra simulator).
   */
  acceptToken?: (token: string) => boolean;
  /** Registry consulted by the default `acceptToken`. Default: {@link defaultTokenRegistry}. */
  registry?: TokenRegistry;
  /** Tenant advertised in the 401 challenge. */
  tenantId?: string;
}

/** One stored version of a secret. */
export interface SecretVersion {
  version: string;
  value: string;
  contentType?: string;
  /** Set on the secret of a certificate (Key Vault manages it). */
  managed?: boolean;
  tags?: Record<string, string>;
  enabled: boolean;
  /** Epoch seconds, as Key Vault reports them. */
  created: number;
  updated: number;
}

/** Handle returned by {@link startKeyVault}. */
export interface KeyVaultSimulator extends SimulatorHandle {
  /** Creates a new version of `name` (rotation); returns the version id. */
  setSecret(
    name: string,
    value: string,
    opts?: { tags?: Record<string, string>; contentType?: string },
  ): string;
  /**
   * Creates (or rotates: a new version of) a certificate, served through its secret: `pem` (private key and
   * certificate) as `application/x-pem-file`, or `pfx` (PKCS#12 bytes) as base64 `application/x-pkcs12`.
   * Returns the version id.
   */
  setCertificate(name: string, content: { pem: string } | { pfx: Buffer }): string;
  /** Deletes a secret (all versions); later reads get 404 SecretNotFound. */
  deleteSecret(name: string): void;
  /** All versions of a secret, oldest first (empty if unknown). */
  versions(name: string): SecretVersion[];
  /** Successful secret reads (200 on GET /secrets/...) since start/reset. */
  readonly secretReads: number;
  /** Requests rejected with 401 (challenge or bad token) since start/reset. */
  readonly unauthorizedCount: number;
  /** Tenant advertised in the challenge. */
  readonly tenantId: string;
}

function kvError(
  status: number,
  code: string,
  message: string,
  extraHeaders?: Record<string, string>,
): SimResponse {
  return {
    status,
    headers: { ...extraHeaders, 'x-ms-request-id': randomUUID() },
    body: { error: { code, message } },
  };
}

/** Starts the Key Vault simulator (HTTPS, test certificate) on 127.0.0.1. */
export async function startKeyVault(options: KeyVaultSimOptions = {}): Promise<KeyVaultSimulator> {
  const registry = options.registry ?? defaultTokenRegistry;
  const tenantId = options.tenantId ?? '11111111-1111-1111-1111-111111111111';
  const acceptToken =
    options.acceptToken ?? ((token: string) => registry.validate(token, KEY_VAULT_RESOURCE) !== undefined);
  // Key Vault secret names are case-insensitive; keep the first spelling for the `id` it reports.
  const store = new Map<string, { name: string; versions: SecretVersion[] }>();
  let secretReads = 0;
  let unauthorizedCount = 0;

  const challenge = `Bearer authorization="https://login.microsoftonline.com/${tenantId}", resource="${KEY_VAULT_RESOURCE}"`;
  const nowSeconds = (): number => Math.floor(Date.now() / 1000);

  const setSecret = (
    name: string,
    value: string,
    opts: { tags?: Record<string, string>; contentType?: string; managed?: boolean } = {},
  ): string => {
    const version = randomBytes(16).toString('hex');
    const ts = nowSeconds();
    const entry = store.get(name.toLowerCase()) ?? { name, versions: [] };
    entry.versions.push({
      version,
      value,
      enabled: true,
      created: ts,
      updated: ts,
      tags: opts.tags,
      contentType: opts.contentType,
      managed: opts.managed,
    });
    store.set(name.toLowerCase(), entry);
    return version;
  };
  for (const [name, value] of Object.entries(options.secrets ?? {})) setSecret(name, value);

  const bundle = (name: string, v: SecretVersion): Record<string, unknown> => ({
    value: v.value,
    id: `${server.url}/secrets/${name}/${v.version}`,
    ...(v.contentType !== undefined ? { contentType: v.contentType } : {}),
    ...(v.managed ? { managed: true, kid: `${server.url}/keys/${name}/${v.version}` } : {}),
    attributes: {
      enabled: v.enabled,
      created: v.created,
      updated: v.updated,
      recoveryLevel: 'Recoverable+Purgeable',
      recoverableDays: 90,
    },
    ...(v.tags !== undefined ? { tags: v.tags } : {}),
  });

  const notFound = (id: string): SimResponse =>
    kvError(
      404,
      'SecretNotFound',
      `A secret with (name/id) ${id} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`,
    );

  const handler = (req: SimRequest): SimResponse => {
    const m = /^\/secrets\/([^/]+)(?:\/([^/]*))?\/?$/.exec(req.pathname);
    if (!m) return kvError(404, 'NotFound', 'Not found');
    if (!req.query.get('api-version')) {
      return kvError(
        400,
        'BadParameter',
        'The request URI contains an invalid or missing api-version parameter.',
      );
    }
    const auth = req.headers.authorization;
    if (auth === undefined) {
      unauthorizedCount++;
      return kvError(401, 'Unauthorized', 'AKV10000: Request is missing a Bearer or PoP token.', {
        'www-authenticate': challenge,
      });
    }
    const token = bearerToken(auth);
    if (token === undefined || !acceptToken(token)) {
      unauthorizedCount++;
      return kvError(
        401,
        'Unauthorized',
        'AKV10022: Invalid audience, issuer or expired token (simulator).',
        {
          'www-authenticate': challenge,
        },
      );
    }

    const name = decodeURIComponent(m[1]!);
    const version = m[2] ? decodeURIComponent(m[2]) : '';
    if (req.method === 'PUT' && version === '') {
      let parsed: unknown;
      try {
        parsed = JSON.parse(req.body);
      } catch {
        return kvError(400, 'BadParameter', 'Request body is not valid JSON.');
      }
      const p = parsed as { value?: unknown; tags?: Record<string, string>; contentType?: string } | null;
      if (typeof p?.value !== 'string') return kvError(400, 'BadParameter', 'Property value is required.');
      setSecret(name, p.value, { tags: p.tags, contentType: p.contentType });
      const entry = store.get(name.toLowerCase())!;
      return { status: 200, body: bundle(entry.name, entry.versions[entry.versions.length - 1]!) };
    }
    if (req.method !== 'GET') return kvError(405, 'MethodNotAllowed', `${req.method} is not supported here.`);

    const entry = store.get(name.toLowerCase());
    if (!entry || entry.versions.length === 0) return notFound(name);
    const list = entry.versions;
    const found =
      version === '' ? list[list.length - 1] : list.find((x) => x.version === version.toLowerCase());
    if (!found) return notFound(`${name}/${version}`);
    if (!found.enabled)
      return kvError(403, 'Forbidden', `Operation get is not allowed on a disabled secret.`);
    secretReads++;
    return { status: 200, headers: { 'x-ms-request-id': randomUUID() }, body: bundle(entry.name, found) };
  };

  const server = new SimServer({
    port: options.port,
    tls: true,
    handler,
    onReset: () => {
      secretReads = 0;
      unauthorizedCount = 0;
    },
  });
  await server.start();

  return Object.defineProperties(server.handle as KeyVaultSimulator, {
    setSecret: { value: setSecret },
    setCertificate: {
      value: (name: string, content: { pem: string } | { pfx: Buffer }) =>
        'pem' in content
          ? setSecret(name, content.pem, { contentType: 'application/x-pem-file', managed: true })
          : setSecret(name, content.pfx.toString('base64'), {
              contentType: 'application/x-pkcs12',
              managed: true,
            }),
    },
    deleteSecret: { value: (name: string) => void store.delete(name.toLowerCase()) },
    versions: { value: (name: string) => [...(store.get(name.toLowerCase())?.versions ?? [])] },
    secretReads: { enumerable: true, get: () => secretReads },
    unauthorizedCount: { enumerable: true, get: () => unauthorizedCount },
    tenantId: { enumerable: true, value: tenantId },
  });
}
