/**
 * Simulator of the App Service / Azure Functions managed identity endpoint (plain HTTP, like the real local
 * endpoint behind `IDENTITY_ENDPOINT`).
 *
 * Protocol (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference),
 * as MSAL Node's `AppService` source (used by `@azure/identity` 4.x `ManagedIdentityCredential`) sends it:
 * `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<scope without /.default>[&client_id=<uami>]`
 * with header `X-IDENTITY-HEADER: {IDENTITY_HEADER}`. The answer is
 * `{ access_token, expires_on: "<epoch seconds as a string>", resource, token_type: "Bearer", client_id }`.
 *
 * MSAL Node caches the managed identity source — including IDENTITY_ENDPOINT and IDENTITY_HEADER as read on
 * the first token request — in a static field for the life of the process (per jest test file, as each has
 * its own module registry). So use ONE simulator per test file (or restart it on the same `port` with the
 * same `identityHeader`); pointing `process.env` at a second simulator later has no effect.
 *
 * Note MSAL retries 404/408/429/500/503/504 from this endpoint up to 3 times, 1 s apart (or `Retry-After`),
 * so a fault here costs seconds in a test; prefer 400-class faults unless the retry is what is tested.
 *
 * Tokens for the token exchange audience (`api://AzureADTokenExchange`, `...USGov`, `...China`: workload
 * identity federation, the identity as a federated credential of an app registration) are real RS256 JWTs
 * like Entra ID issues for a managed identity: `iss` `https://login.microsoftonline.com/<tenant>/v2.0` (the
 * `issuer` option, e.g. `login.microsoftonline.us` for US Government), `sub` and `oid` the identity's
 * principal (object) id, `aud` the resource, `azp`/`appid` its client id, `xms_mirid` its resource id. The
 * Entra ID simulator verifies them with {@link ManagedIdentitySimulator.jwks}. Other resources get opaque
 * tokens (see tokens.ts).
 * https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity
 */
import { randomBytes, randomUUID, type JsonWebKey } from 'node:crypto';
import {
  SimServer,
  type CommonSimOptions,
  type SimRequest,
  type SimResponse,
  type SimulatorHandle,
} from './server';
import { newSigningKey, signJwt } from './jwt';
import { TokenRegistry, audienceOf, defaultTokenRegistry, opaqueToken } from './tokens';

/** Resources that get a JWT (the token exchange audiences of the public and sovereign clouds). */
const EXCHANGE_AUDIENCE = /^api:\/\/AzureADTokenExchange/i;

/** The App Service managed identity protocol version MSAL Node uses (the 2017-09-01 one used `secret`). */
export const APP_SERVICE_MI_API_VERSION = '2019-08-01';

/** Options for {@link startManagedIdentity}. */
export interface ManagedIdentitySimOptions extends CommonSimOptions {
  /** Value expected in `X-IDENTITY-HEADER`. Default: random. */
  identityHeader?: string;
  /** Client id reported for the system-assigned identity. Default: a random GUID. */
  systemAssignedClientId?: string;
  /**
   * User-assigned identities attached to the app (client ids). Asking for another `client_id` fails like the
   * real endpoint (400). Default: none, i.e. only the system-assigned identity exists.
   */
  userAssignedClientIds?: string[];
  /** Token lifetime in seconds. Default 86399 (App Service MI tokens live ~24 h). */
  tokenLifetimeSeconds?: number;
  /** Where issued tokens are registered. Default: {@link defaultTokenRegistry}. */
  registry?: TokenRegistry;
  /** Tenant of the identities (`tid`, and the default issuer). Default: a random GUID. */
  tenantId?: string;
  /** `iss` of exchange tokens. Default `https://login.microsoftonline.com/<tenantId>/v2.0`. */
  issuer?: string;
  /** Principal (object) ids by client id (`system` for the system-assigned one). Default: random GUIDs. */
  principalIds?: Record<string, string>;
}

/** One token request as the simulator understood it. */
export interface ManagedIdentityTokenRequest {
  resource: string | undefined;
  /** `client_id` query parameter (user-assigned identity), undefined for system-assigned. */
  clientId: string | undefined;
  /** Other user-assigned selectors, if the SDK used them. */
  objectId: string | undefined;
  miResId: string | undefined;
  /** Whether a token was issued. */
  ok: boolean;
}

/** Handle returned by {@link startManagedIdentity}. */
export interface ManagedIdentitySimulator extends SimulatorHandle {
  /**
   * Environment to give the app: `IDENTITY_ENDPOINT` (`<url>/msi/token`) and `IDENTITY_HEADER`. Set these in
   * `process.env` BEFORE constructing `ManagedIdentityCredential`, which reads them in its constructor.
   */
  readonly env: { IDENTITY_ENDPOINT: string; IDENTITY_HEADER: string };
  /** Number of tokens issued since start/reset. */
  readonly tokensIssued: number;
  /** Every token request (valid header) since start/reset, with the identity asked for. */
  readonly tokenRequests: ManagedIdentityTokenRequest[];
  /** `client_id` of the most recent token request (undefined = system-assigned). */
  readonly lastClientId: string | undefined;
  /** The registry tokens are recorded in. */
  readonly registry: TokenRegistry;
  /**
   * Changes the expected `X-IDENTITY-HEADER` (old value stops working). Note MSAL caches the endpoint and
   * header process-wide on first use, so a credential in the same process keeps sending the old value.
   */
  setIdentityHeader(value: string): void;
  /** Attaches a user-assigned identity (client id) to the app. */
  addUserAssignedIdentity(clientId: string): void;
  /** `iss` of the exchange tokens (what a federated identity credential registers as issuer). */
  readonly issuer: string;
  /** Tenant of the identities. */
  readonly tenantId: string;
  /** Principal (object) id of an identity: the `sub` a federated identity credential registers. */
  principalIdOf(clientId?: string): string;
  /** The public keys exchange tokens are signed with (a JWKS, as the issuer's discovery would serve). */
  readonly jwks: { keys: JsonWebKey[] };
}

function miError(status: number, message: string): SimResponse {
  // Shape the App Service endpoint uses for errors; MSAL reads `message` and `correlationId`.
  return { status, body: { statusCode: status, message, correlationId: randomUUID() } };
}

/**
 * Starts the managed identity endpoint simulator on 127.0.0.1 (plain HTTP).
 *
 * @example
 * const mi = await startManagedIdentity();
 * Object.assign(process.env, mi.env);
 * const credential = new ManagedIdentityCredential();
 */
export async function startManagedIdentity(
  options: ManagedIdentitySimOptions = {},
): Promise<ManagedIdentitySimulator> {
  const registry = options.registry ?? defaultTokenRegistry;
  const lifetime = options.tokenLifetimeSeconds ?? 86399;
  const systemClientId = options.systemAssignedClientId ?? randomUUID();
  const userAssigned = new Set((options.userAssignedClientIds ?? []).map((id) => id.toLowerCase()));
  let identityHeader = options.identityHeader ?? randomBytes(16).toString('hex');
  let tokensIssued = 0;
  const tokenRequests: ManagedIdentityTokenRequest[] = [];
  const tenantId = options.tenantId ?? randomUUID();
  const issuer = options.issuer ?? `https://login.microsoftonline.com/${tenantId}/v2.0`;
  const principalIds = new Map(
    Object.entries(options.principalIds ?? {}).map(([id, principal]) => [id.toLowerCase(), principal]),
  );
  const principalIdOf = (clientId?: string): string => {
    const key = (clientId ?? 'system').toLowerCase();
    let principal = principalIds.get(key);
    if (!principal) principalIds.set(key, (principal = randomUUID()));
    return principal;
  };
  const signingKey = newSigningKey();

  /** An exchange token, as Entra ID issues one for a managed identity. */
  const exchangeToken = (resource: string, clientId: string, userAssignedId: boolean, expiresAt: number) => {
    const now = Math.floor(Date.now() / 1000);
    const principal = principalIdOf(userAssignedId ? clientId : undefined);
    const resourceGroup =
      '/subscriptions/00000000-0000-4000-8000-000000000000/resourcegroups/rg-sim/providers';
    return signJwt(
      {
        aud: resource,
        iss: issuer,
        iat: now,
        nbf: now,
        exp: Math.floor(expiresAt / 1000),
        sub: principal,
        oid: principal,
        tid: tenantId,
        azp: clientId,
        appid: clientId,
        idtyp: 'app',
        ver: '2.0',
        xms_mirid: userAssignedId
          ? `${resourceGroup}/Microsoft.ManagedIdentity/userAssignedIdentities/id-sim-${clientId.slice(0, 8)}`
          : `${resourceGroup}/Microsoft.Web/sites/func-sim`,
      },
      signingKey.privateKey,
      { kid: signingKey.kid },
    );
  };

  const handler = (req: SimRequest): SimResponse => {
    if (req.method !== 'GET' || !/^\/msi\/token\/?$/i.test(req.pathname)) {
      return { status: 404, body: { statusCode: 404, message: 'Not found' } };
    }
    const header = req.headers['x-identity-header'];
    if (header === undefined) return miError(400, 'The X-IDENTITY-HEADER header is missing.');
    if (header !== identityHeader) return miError(401, 'The X-IDENTITY-HEADER header value is invalid.');

    const resource = req.query.get('resource') ?? undefined;
    const request: ManagedIdentityTokenRequest = {
      resource,
      clientId: req.query.get('client_id') ?? undefined,
      objectId: req.query.get('object_id') ?? req.query.get('principal_id') ?? undefined,
      miResId: req.query.get('mi_res_id') ?? undefined,
      ok: false,
    };
    tokenRequests.push(request);

    const apiVersion = req.query.get('api-version');
    if (apiVersion !== APP_SERVICE_MI_API_VERSION) {
      return miError(
        400,
        `The api-version '${apiVersion ?? ''}' is not supported; use ${APP_SERVICE_MI_API_VERSION}.`,
      );
    }
    if (!resource) return miError(400, 'The resource parameter is required.');
    if (request.objectId !== undefined || request.miResId !== undefined) {
      return miError(400, 'Unable to load the proper Managed Identity.');
    }
    if (request.clientId !== undefined && !userAssigned.has(request.clientId.toLowerCase())) {
      return miError(400, 'Unable to load the proper Managed Identity.');
    }

    const now = Date.now();
    const clientId = request.clientId ?? systemClientId;
    const expiresAt = now + lifetime * 1000;
    const issued = registry.register({
      token: EXCHANGE_AUDIENCE.test(resource)
        ? exchangeToken(resource, clientId, request.clientId !== undefined, expiresAt)
        : opaqueToken('mi-'),
      issuer: 'managed-identity',
      audience: audienceOf(resource),
      scope: resource,
      clientId,
      issuedAt: now,
      expiresAt,
    });
    tokensIssued++;
    request.ok = true;
    return {
      status: 200,
      body: {
        access_token: issued.token,
        // The real endpoint sends epoch seconds as a STRING; MSAL copes with that (and with ISO 8601).
        expires_on: String(Math.floor(issued.expiresAt / 1000)),
        resource,
        token_type: 'Bearer',
        client_id: clientId,
      },
    };
  };

  const server = new SimServer({
    port: options.port,
    tls: false,
    handler,
    defaultFaultBody: (status) => ({
      statusCode: status,
      message: 'Simulated fault',
      correlationId: randomUUID(),
    }),
    onReset: () => {
      tokensIssued = 0;
      tokenRequests.length = 0;
    },
  });
  await server.start();

  const base = server.handle;
  return Object.defineProperties(base as ManagedIdentitySimulator, {
    env: {
      enumerable: true,
      get: () => ({ IDENTITY_ENDPOINT: `${server.url}/msi/token`, IDENTITY_HEADER: identityHeader }),
    },
    tokensIssued: { enumerable: true, get: () => tokensIssued },
    tokenRequests: { enumerable: true, value: tokenRequests },
    lastClientId: { enumerable: true, get: () => tokenRequests[tokenRequests.length - 1]?.clientId },
    registry: { enumerable: true, value: registry },
    issuer: { enumerable: true, value: issuer },
    tenantId: { enumerable: true, value: tenantId },
    principalIdOf: { value: principalIdOf },
    jwks: { enumerable: true, value: { keys: [signingKey.jwk] } },
    addUserAssignedIdentity: {
      value: (clientId: string) => void userAssigned.add(clientId.toLowerCase()),
    },
    setIdentityHeader: {
      value: (value: string) => {
        identityHeader = value;
      },
    },
  });
}
