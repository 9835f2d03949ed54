/**
 * Simulator of the Microsoft Entra ID (Azure AD) v2.0 endpoints that MSAL Node uses for the client
 * credentials flow, i.e. what `ClientSecretCredential` from `@azure/identity` 4.x talks to (HTTPS: MSAL
 * rejects `http://` authorities).
 *
 * Use it as `new ClientSecretCredential(tenantId, clientId, secret, { authorityHost: entra.url,
 * disableInstanceDiscovery: true })`. With `disableInstanceDiscovery` the SDK treats the host as a known
 * authority and MSAL then:
 * 1. `GET /{tenant}/v2.0/.well-known/openid-configuration` (OIDC discovery); MSAL requires
 *    `authorization_endpoint`, `token_endpoint`, `issuer`, `jwks_uri`, and validates that `issuer` has the
 *    authority's scheme+host+port;
 * 2. `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials&client_id&client_secret&scope`.
 *
 * https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
 * https://learn.microsoft.com/entra/identity-platform/reference-error-codes
 * Instance discovery (`/common/discovery/instance`) is served too, for clients that do not disable it.
 *
 * Besides client secrets, the token endpoint takes `client_assertion_type=urn:ietf:params:oauth:client-
 * assertion-type:jwt-bearer` with a `client_assertion` JWT, and verifies it as Entra ID does:
 * - a certificate credential (`ClientCertificateCredential`; `iss` = `sub` = the client id): the certificate
 *   named by `x5t#S256` or `x5t` must be registered on the app (else AADSTS700027), the RS256/PS256
 *   signature must verify with it (AADSTS700027), `aud` must be the token endpoint and `nbf`/`exp` current
 *   (AADSTS700024);
 *   https://learn.microsoft.com/entra/identity-platform/certificate-credentials
 * - a federated credential (`ClientAssertionCredential`, e.g. a managed identity's token): a federated
 *   identity credential of the app must match `iss` (else AADSTS700211), `sub` (AADSTS700213) and `aud`
 *   (AADSTS700212); the signature must verify with a key of a trusted issuer (AADSTS700027) and the token
 *   must be current (AADSTS700024).
 *   https://learn.microsoft.com/entra/workload-id/workload-identity-federation
 * Access tokens are RS256 JWTs with the app's `roles` (application permissions granted), like the real ones.
 */
import { randomUUID, X509Certificate, type JsonWebKey } from 'node:crypto';
import { certificateThumbprints, decodeJwt, newSigningKey, signJwt, verifyJwt, type DecodedJwt } from './jwt';
import {
  SimServer,
  type CommonSimOptions,
  type SimRequest,
  type SimResponse,
  type SimulatorHandle,
} from './server';
import { TokenRegistry, audienceOf, defaultTokenRegistry, type IssuedToken } from './tokens';

/** Scope the app requests for the Defender for Endpoint API. */
export const MDE_SCOPE = 'https://api.securitycenter.microsoft.com/.default';

/** Options for {@link startEntra}. */
export interface EntraSimOptions extends CommonSimOptions {
  /** The tenant (directory) id served. */
  tenantId: string;
  /** App registrations with a client secret: client id → client secret. */
  clients: Record<string, string>;
  /** Certificates (PEM, public part) registered on apps: client id → certificates. */
  certificates?: Record<string, string[]>;
  /** Federated identity credentials of apps: client id → credentials. */
  federatedCredentials?: Record<string, FederatedIdentityCredential[]>;
  /** Issuers whose tokens federated credentials accept, with their signing keys (JWKS). */
  trustedIssuers?: Record<string, { keys: JsonWebKey[] }>;
  /** Application permissions granted to apps (the access token's `roles`): client id → role values. */
  roles?: Record<string, string[]>;
  /** `expires_in` of issued tokens. Default 3599 (what Entra typically returns). */
  tokenLifetimeSeconds?: number;
  /** Where issued tokens are registered. Default: {@link defaultTokenRegistry}. */
  registry?: TokenRegistry;
}

/** A federated identity credential on an app registration. */
export interface FederatedIdentityCredential {
  issuer: string;
  subject: string;
  audiences: string[];
}

/** The `client_assertion_type` of a JWT client assertion (RFC 7523). */
export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** Handle returned by {@link startEntra}. */
export interface EntraSimulator extends SimulatorHandle {
  /** The tenant id served. */
  readonly tenantId: string;
  /** Value for the credential's `authorityHost` option (same as `url`). */
  readonly authorityHost: string;
  /** Rotates (or adds) a client's secret; the previous secret stops working immediately. */
  setClientSecret(clientId: string, secret: string): void;
  /** Deletes an app registration; its token requests then fail with AADSTS700016. */
  removeClient(clientId: string): void;
  /** Uploads a certificate's public part (PEM) to an app registration. */
  addCertificate(clientId: string, pem: string): void;
  /** Removes a certificate from an app registration. */
  removeCertificate(clientId: string, pem: string): void;
  /** Adds a federated identity credential to an app registration. */
  addFederatedCredential(clientId: string, credential: FederatedIdentityCredential): void;
  /** Trusts an issuer's signing keys for federated credentials. */
  trustIssuer(issuer: string, jwks: { keys: JsonWebKey[] }): void;
  /** Sets the application permissions granted to an app (the `roles` of its next tokens). */
  setRoles(clientId: string, roles: string[]): void;
  /** Tokens issued since start/reset. */
  readonly tokensIssued: number;
  /** Scope of the most recent successful token request. */
  readonly lastScope: string | undefined;
  /** Every token issued since start/reset. */
  readonly issued: IssuedToken[];
  /** Token requests that failed (any AADSTS error) since start/reset. */
  readonly failedTokenRequests: number;
  /** The registry tokens are recorded in. */
  readonly registry: TokenRegistry;
}

function formatTimestamp(d: Date): string {
  return d
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
}

/** Starts the Entra ID token endpoint simulator (HTTPS, test certificate) on 127.0.0.1. */
export async function startEntra(options: EntraSimOptions): Promise<EntraSimulator> {
  const registry = options.registry ?? defaultTokenRegistry;
  const lifetime = options.tokenLifetimeSeconds ?? 3599;
  const tenantId = options.tenantId;
  const clients = new Map<string, string>(
    Object.entries(options.clients).map(([id, s]) => [id.toLowerCase(), s]),
  );
  const lower = <T>(record: Record<string, T> | undefined): Map<string, T> =>
    new Map(Object.entries(record ?? {}).map(([id, value]) => [id.toLowerCase(), value]));
  const certificates = new Map(
    [...lower(options.certificates)].map(([id, pems]) => [id, new Set(pems)] as const),
  );
  const federated = lower(options.federatedCredentials);
  const trustedIssuers = new Map(Object.entries(options.trustedIssuers ?? {}));
  const roles = lower(options.roles);
  const signingKey = newSigningKey();
  const issued: IssuedToken[] = [];
  let lastScope: string | undefined;
  let failedTokenRequests = 0;

  /** Entra's OAuth error body (https://learn.microsoft.com/entra/identity-platform/reference-error-codes). */
  const aadError = (
    status: number,
    error: string,
    code: number,
    description: string,
    correlationId: string,
  ): SimResponse => {
    failedTokenRequests++;
    const traceId = randomUUID();
    const now = new Date();
    return {
      status,
      headers: {
        'x-ms-request-id': traceId,
        'client-request-id': correlationId,
        'cache-control': 'no-store, no-cache',
      },
      body: {
        error,
        error_description: `AADSTS${code}: ${description} Trace ID: ${traceId} Correlation ID: ${correlationId} Timestamp: ${formatTimestamp(now)}`,
        error_codes: [code],
        timestamp: formatTimestamp(now),
        trace_id: traceId,
        correlation_id: correlationId,
        error_uri: `${server.url}/error?code=${code}`,
      },
    };
  };

  const openIdConfiguration = (tenant: string, v2: boolean): Record<string, unknown> => {
    const base = `${server.url}/${tenant}`;
    return {
      token_endpoint: `${base}/oauth2${v2 ? '/v2.0' : ''}/token`,
      token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
      jwks_uri: `${base}/discovery${v2 ? '/v2.0' : ''}/keys`,
      response_modes_supported: ['query', 'fragment', 'form_post'],
      subject_types_supported: ['pairwise'],
      id_token_signing_alg_values_supported: ['RS256'],
      response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
      scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
      // MSAL validates that the issuer has the same origin as the authority.
      issuer: v2 ? `${base}/v2.0` : `${server.url}/${tenant}/`,
      request_uri_parameter_supported: false,
      userinfo_endpoint: `${server.url}/oidc/userinfo`,
      authorization_endpoint: `${base}/oauth2${v2 ? '/v2.0' : ''}/authorize`,
      device_authorization_endpoint: `${base}/oauth2${v2 ? '/v2.0' : ''}/devicecode`,
      http_logout_supported: true,
      frontchannel_logout_supported: true,
      end_session_endpoint: `${base}/oauth2${v2 ? '/v2.0' : ''}/logout`,
      claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'tid', 'oid'],
      kerberos_endpoint: `${base}/kerberos`,
      tenant_region_scope: 'EU',
      cloud_instance_name: 'microsoftonline.com',
      cloud_graph_host_name: 'graph.windows.net',
      msgraph_host: 'graph.microsoft.com',
      rbac_url: 'https://pas.windows.net',
    };
  };

  /** Whether `now` is within the JWT's `nbf`..`exp` (5 minutes of clock skew, as Entra allows). */
  const current = (jwt: DecodedJwt): boolean => {
    const now = Date.now() / 1000;
    const { nbf, exp } = jwt.payload;
    return typeof exp === 'number' && exp + 300 > now && (typeof nbf !== 'number' || nbf - 300 <= now);
  };
  const timeRange = (jwt: DecodedJwt): string => {
    const iso = (v: unknown) => (typeof v === 'number' ? new Date(v * 1000).toISOString() : 'unknown');
    return `Current time: ${new Date().toISOString()}, assertion valid from ${iso(jwt.payload.nbf)}, expiry time of assertion ${iso(jwt.payload.exp)}.`;
  };

  /** Verifies a client assertion; undefined when valid, else the AADSTS error to answer with. */
  const checkAssertion = (
    jwt: DecodedJwt,
    clientId: string,
    tokenEndpoint: string,
    correlationId: string,
  ): SimResponse | undefined => {
    const { header, payload } = jwt;
    const invalid = (code: number, message: string) =>
      aadError(401, 'invalid_client', code, message, correlationId);
    if (payload.iss === clientId && payload.sub === clientId) {
      // Certificate credential (private_key_jwt).
      const registered = [...(certificates.get(clientId.toLowerCase()) ?? [])].map((pem) => ({
        pem,
        ...certificateThumbprints(pem),
      }));
      const named = header['x5t#S256'] ?? header.x5t;
      const certificate = registered.find((c) => c.x5tS256 === named || c.x5t === named);
      if (!certificate) {
        const thumbprint =
          typeof named === 'string' ? Buffer.from(named, 'base64url').toString('hex').toUpperCase() : '';
        return invalid(
          700027,
          `The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '${thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '${clientId}'.]`,
        );
      }
      if (!verifyJwt(jwt, new X509Certificate(certificate.pem).publicKey)) {
        return invalid(700027, 'Client assertion failed signature validation.');
      }
      if (payload.aud !== tokenEndpoint) {
        return invalid(
          700027,
          `Client assertion audience claim does not match Realm issuer. Expected '${tokenEndpoint}'.`,
        );
      }
      if (!current(jwt)) {
        return invalid(700024, `Client assertion is not within its valid time range. ${timeRange(jwt)}`);
      }
      return undefined;
    }
    // Federated credential: another issuer's token.
    const candidates = federated.get(clientId.toLowerCase()) ?? [];
    const sameIssuer = candidates.filter((c) => c.issuer === payload.iss);
    if (sameIssuer.length === 0) {
      return invalid(
        700211,
        `No matching federated identity record found for presented assertion issuer '${String(payload.iss)}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation`,
      );
    }
    const sameSubject = sameIssuer.filter((c) => c.subject === payload.sub);
    if (sameSubject.length === 0) {
      return invalid(
        700213,
        `No matching federated identity record found for presented assertion subject '${String(payload.sub)}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation`,
      );
    }
    if (!sameSubject.some((c) => c.audiences.includes(String(payload.aud)))) {
      return invalid(
        700212,
        `No matching federated identity record found for presented assertion audience '${String(payload.aud)}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation`,
      );
    }
    const keys = trustedIssuers.get(String(payload.iss))?.keys ?? [];
    const key = keys.find((k) => (k as { kid?: string }).kid === header.kid) ?? keys[0];
    if (!key || !verifyJwt(jwt, key)) {
      return invalid(700027, 'Client assertion failed signature validation.');
    }
    if (!current(jwt)) {
      return invalid(700024, `Client assertion is not within its valid time range. ${timeRange(jwt)}`);
    }
    return undefined;
  };

  const tokenRequest = (req: SimRequest, tenant: string): SimResponse => {
    // MSAL Node sends its correlation id as a `client-request-id` query parameter (and some clients as a header).
    const correlationId =
      req.headers['client-request-id'] ?? req.query.get('client-request-id') ?? randomUUID();
    const form = new URLSearchParams(req.body);
    const grantType = form.get('grant_type');
    const clientId = form.get('client_id') ?? '';
    const scope = form.get('scope') ?? '';
    if (tenant.toLowerCase() !== tenantId.toLowerCase()) {
      return aadError(
        400,
        'invalid_request',
        90002,
        `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`,
        correlationId,
      );
    }
    if (grantType !== 'client_credentials') {
      return aadError(
        400,
        'unsupported_grant_type',
        70003,
        `The app requested an unsupported grant type '${grantType ?? ''}'.`,
        correlationId,
      );
    }
    const known =
      clients.has(clientId.toLowerCase()) ||
      certificates.has(clientId.toLowerCase()) ||
      federated.has(clientId.toLowerCase());
    if (!known) {
      return aadError(
        400,
        'unauthorized_client',
        700016,
        `Application with identifier '${clientId}' was not found in the directory '${tenantId}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`,
        correlationId,
      );
    }
    const secret = form.get('client_secret');
    const assertion = form.get('client_assertion');
    if (secret === null && assertion === null) {
      return aadError(
        401,
        'invalid_client',
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        correlationId,
      );
    }
    if (assertion !== null) {
      if (form.get('client_assertion_type') !== JWT_BEARER) {
        return aadError(
          400,
          'invalid_request',
          50027,
          `The client_assertion_type must be ${JWT_BEARER}.`,
          correlationId,
        );
      }
      const jwt = decodeJwt(assertion);
      if (!jwt) {
        return aadError(400, 'invalid_request', 50027, 'JWT token is invalid or malformed.', correlationId);
      }
      const refused = checkAssertion(
        jwt,
        clientId,
        `${server.url}/${tenant}/oauth2/v2.0/token`,
        correlationId,
      );
      if (refused) return refused;
    } else if (secret !== clients.get(clientId.toLowerCase())) {
      return aadError(
        401,
        'invalid_client',
        7000215,
        `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`,
        correlationId,
      );
    }
    // Client credentials need exactly one resource with /.default; MSAL may add nothing else for this flow.
    const scopes = scope.split(/\s+/).filter((s) => s !== '');
    const resourceScope = scopes.find((s) => /\/\.default$/i.test(s));
    if (!resourceScope) {
      return aadError(
        400,
        'invalid_scope',
        1002012,
        `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`,
        correlationId,
      );
    }
    const now = Date.now();
    const granted = roles.get(clientId.toLowerCase()) ?? [];
    const accessToken = signJwt(
      {
        aud: audienceOf(resourceScope),
        iss: `https://sts.windows.net/${tenantId}/`,
        iat: Math.floor(now / 1000),
        nbf: Math.floor(now / 1000),
        exp: Math.floor(now / 1000) + lifetime,
        appid: clientId,
        idtyp: 'app',
        oid: servicePrincipalOf(clientId),
        sub: servicePrincipalOf(clientId),
        tid: tenantId,
        ...(granted.length > 0 ? { roles: granted } : {}),
        uti: randomUUID(),
        ver: '1.0',
      },
      signingKey.privateKey,
      { kid: signingKey.kid },
    );
    const token = registry.register({
      token: accessToken,
      issuer: 'entra',
      audience: audienceOf(resourceScope),
      scope: resourceScope,
      tenantId,
      clientId,
      issuedAt: now,
      expiresAt: now + lifetime * 1000,
    });
    issued.push(token);
    lastScope = resourceScope;
    return {
      status: 200,
      headers: {
        'client-request-id': correlationId,
        'cache-control': 'no-store, no-cache',
        pragma: 'no-cache',
      },
      body: {
        token_type: 'Bearer',
        expires_in: lifetime,
        ext_expires_in: lifetime,
        access_token: token.token,
      },
    };
  };

  const servicePrincipals = new Map<string, string>();
  const servicePrincipalOf = (clientId: string): string => {
    let id = servicePrincipals.get(clientId.toLowerCase());
    if (!id) servicePrincipals.set(clientId.toLowerCase(), (id = randomUUID()));
    return id;
  };

  const handler = (req: SimRequest): SimResponse => {
    const segments = req.pathname.split('/').filter((s) => s !== '');
    const tenant = decodeURIComponent(segments[0] ?? '');
    const rest = segments.slice(1).join('/').toLowerCase();

    if (req.method === 'GET' && tenant === 'common' && rest === 'discovery/instance') {
      const host = server.url.replace(/^https:\/\//, '');
      return {
        status: 200,
        body: {
          tenant_discovery_endpoint: `${server.url}/${tenantId}/v2.0/.well-known/openid-configuration`,
          'api-version': '1.1',
          metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
        },
      };
    }
    if (
      req.method === 'GET' &&
      (rest === 'v2.0/.well-known/openid-configuration' || rest === '.well-known/openid-configuration')
    ) {
      if (tenant.toLowerCase() !== tenantId.toLowerCase() && !['common', 'organizations'].includes(tenant)) {
        return {
          status: 400,
          body: {
            error: 'invalid_tenant',
            error_description: `AADSTS90002: Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`,
            error_codes: [90002],
          },
        };
      }
      return { status: 200, body: openIdConfiguration(tenantId, rest.startsWith('v2.0')) };
    }
    if (req.method === 'GET' && (rest === 'discovery/v2.0/keys' || rest === 'discovery/keys')) {
      return { status: 200, body: { keys: [signingKey.jwk] } };
    }
    if (rest === 'oauth2/v2.0/token' || rest === 'oauth2/token') {
      if (req.method !== 'POST') {
        return aadError(
          405,
          'invalid_request',
          900561,
          'The endpoint only accepts POST requests.',
          randomUUID(),
        );
      }
      return tokenRequest(req, tenant);
    }
    return {
      status: 404,
      body: { error: 'not_found', error_description: `No simulator route for ${req.method} ${req.pathname}` },
    };
  };

  const server = new SimServer({
    port: options.port,
    tls: true,
    handler,
    defaultFaultBody: (status) => ({
      error: status === 429 ? 'temporarily_unavailable' : 'server_error',
      error_description: `AADSTS90033: Simulated fault (${status}).`,
      error_codes: [90033],
    }),
    onReset: () => {
      issued.length = 0;
      lastScope = undefined;
      failedTokenRequests = 0;
    },
  });
  await server.start();

  return Object.defineProperties(server.handle as EntraSimulator, {
    tenantId: { enumerable: true, value: tenantId },
    authorityHost: { enumerable: true, get: () => server.url },
    setClientSecret: {
      value: (clientId: string, secret: string) => void clients.set(clientId.toLowerCase(), secret),
    },
    removeClient: {
      value: (clientId: string) => {
        for (const apps of [clients, certificates, federated]) apps.delete(clientId.toLowerCase());
      },
    },
    addCertificate: {
      value: (clientId: string, pem: string) => {
        const key = clientId.toLowerCase();
        certificates.set(key, new Set([...(certificates.get(key) ?? []), pem]));
      },
    },
    removeCertificate: {
      value: (clientId: string, pem: string) => void certificates.get(clientId.toLowerCase())?.delete(pem),
    },
    addFederatedCredential: {
      value: (clientId: string, credential: FederatedIdentityCredential) => {
        const key = clientId.toLowerCase();
        federated.set(key, [...(federated.get(key) ?? []), credential]);
      },
    },
    trustIssuer: {
      value: (issuer: string, jwks: { keys: JsonWebKey[] }) => void trustedIssuers.set(issuer, jwks),
    },
    setRoles: {
      value: (clientId: string, values: string[]) => void roles.set(clientId.toLowerCase(), [...values]),
    },
    tokensIssued: { enumerable: true, get: () => issued.length },
    lastScope: { enumerable: true, get: () => lastScope },
    issued: { enumerable: true, value: issued },
    failedTokenRequests: { enumerable: true, get: () => failedTokenRequests },
    registry: { enumerable: true, value: registry },
  });
}
