/**
 * Entra ID callers, as App Service Authentication ("Easy Auth") presents them: after validating the caller's
 * token, the platform passes its claims in `X-MS-CLIENT-PRINCIPAL`, base64-encoded JSON of the shape
 * `{"auth_typ": "aad", "claims": [{"typ": "...", "val": "..."}], "name_typ": "...", "role_typ": "..."}`.
 * External requests cannot set this header when the feature is on: the platform strips it.
 * See https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities
 *
 * When the feature is off, any caller with a function key could send the header, so it is trusted only
 * when `WEBSITE_AUTH_ENABLED` says the platform put it there (the same check as Microsoft.Identity.Web's
 * `AppServicesAuthenticationInformation`).
 */
import { UnisolateError } from './errors';

/** The header App Service Authentication sets. */
export const CLIENT_PRINCIPAL_HEADER = 'x-ms-client-principal';

/** Largest header accepted: a principal with many group claims is a few KiB; anything bigger is not ours. */
const MAX_HEADER_CHARS = 32 * 1024;
const MAX_CLAIMS = 1000;
const MAX_TEXT = 256;

/** Claim types that carry app roles (Entra's short name, and the WS-Federation URI after claim mapping). */
const ROLE_CLAIM_TYPES = ['roles', 'http://schemas.microsoft.com/ws/2008/06/identity/claims/role'];
/** Claim types naming a user, most specific first. */
const NAME_CLAIM_TYPES = [
  'preferred_username',
  'upn',
  'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn',
  'name',
  'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name',
];
/** Claim types of the calling client application: `appid` (v1 tokens), `azp` (v2 tokens). */
const APP_ID_CLAIM_TYPES = ['appid', 'azp'];

/** The authenticated caller. */
export interface CallerPrincipal {
  /** Identity provider (`aad`). */
  authType: string;
  /** User name (UPN / preferred_username / name); null for an app-only token. */
  name: string | null;
  /** Client id of the calling application, when the token carries one. */
  appId: string | null;
  /** App roles granted to the caller. */
  roles: string[];
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001F\u007F-\u009F\u2028\u2029]/g;

/** Removes control characters and bounds the length: claims end up in outcomes and log lines. */
function clean(value: string): string {
  return value.replace(CONTROL, ' ').trim().slice(0, MAX_TEXT);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Decodes `X-MS-CLIENT-PRINCIPAL`. Returns the principal, or an error message for a header that is not
 * base64 JSON of the documented shape. Never throws.
 */
export function decodeClientPrincipal(header: string): { principal: CallerPrincipal } | { problem: string } {
  const text = header.trim();
  if (text.length === 0 || text.length > MAX_HEADER_CHARS || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) {
    return { problem: 'X-MS-CLIENT-PRINCIPAL is not base64' };
  }
  let decoded: unknown;
  try {
    decoded = JSON.parse(Buffer.from(text, 'base64').toString('utf8'));
  } catch {
    return { problem: 'X-MS-CLIENT-PRINCIPAL is not base64-encoded JSON' };
  }
  if (!isRecord(decoded) || !Array.isArray(decoded.claims) || decoded.claims.length > MAX_CLAIMS) {
    return { problem: 'X-MS-CLIENT-PRINCIPAL has no claims array' };
  }
  const claims: { typ: string; val: string }[] = [];
  for (const claim of decoded.claims as unknown[]) {
    if (isRecord(claim) && typeof claim.typ === 'string' && typeof claim.val === 'string') {
      claims.push({ typ: claim.typ, val: claim.val });
    }
  }
  const valuesOf = (types: readonly string[]): string[] =>
    claims
      .filter((c) => types.some((t) => t.toLowerCase() === c.typ.toLowerCase()))
      .map((c) => clean(c.val))
      .filter((v) => v.length > 0);
  const first = (types: readonly string[]): string | null => {
    for (const type of types) {
      const value = valuesOf([type])[0];
      if (value !== undefined) return value;
    }
    return null;
  };
  const roleTypes = [...ROLE_CLAIM_TYPES];
  if (typeof decoded.role_typ === 'string' && decoded.role_typ) roleTypes.push(decoded.role_typ);
  const nameTypes = [...NAME_CLAIM_TYPES];
  if (typeof decoded.name_typ === 'string' && decoded.name_typ) nameTypes.push(decoded.name_typ);
  return {
    principal: {
      authType: typeof decoded.auth_typ === 'string' ? clean(decoded.auth_typ) : '',
      name: first(nameTypes),
      appId: first(APP_ID_CLAIM_TYPES),
      roles: [...new Set(valuesOf(roleTypes))],
    },
  };
}

/** How to treat callers, from the settings. */
export interface CallerPolicy {
  /** Whether App Service Authentication is on (`WEBSITE_AUTH_ENABLED`): only then is the header trusted. */
  platformAuthEnabled: boolean;
  /** App roles of which a caller must hold one; empty: no role check. */
  allowedRoles: readonly string[];
}

/** Result of {@link authorizeCaller}. */
export type CallerDecision =
  | { ok: true; principal: CallerPrincipal | null }
  | { ok: false; error: UnisolateError; principal: CallerPrincipal | null };

/**
 * Decides whether a caller may release devices, from `X-MS-CLIENT-PRINCIPAL` (null when absent).
 * - No roles required: allowed; a trusted, well-formed principal is returned for the audit trail.
 * - Roles required: the platform must be on (else `ConfigurationError`: fail closed), the header present and
 *   well formed (else `CallerUnauthenticated`, 401) and one of the roles granted (else `CallerNotAllowed`, 403).
 * Never throws.
 */
export function authorizeCaller(header: string | null, policy: CallerPolicy): CallerDecision {
  const decoded = policy.platformAuthEnabled && header !== null ? decodeClientPrincipal(header) : undefined;
  const principal = decoded && 'principal' in decoded ? decoded.principal : null;
  if (policy.allowedRoles.length === 0) return { ok: true, principal };

  if (!policy.platformAuthEnabled) {
    return {
      ok: false,
      principal: null,
      error: new UnisolateError(
        'ConfigurationError',
        'ALLOWED_CALLER_ROLES is set but App Service Authentication is not enabled on the function app, so callers cannot be identified. Enable it (infra parameter enableAppServiceAuth) or clear ALLOWED_CALLER_ROLES.',
      ),
    };
  }
  if (!decoded) {
    return {
      ok: false,
      principal: null,
      error: new UnisolateError(
        'CallerUnauthenticated',
        'The caller is not authenticated: call with an Entra ID access token for the function app (Authorization: Bearer ...).',
      ),
    };
  }
  if ('problem' in decoded) {
    return {
      ok: false,
      principal: null,
      error: new UnisolateError(
        'CallerUnauthenticated',
        `The caller's identity could not be read (${decoded.problem}): call with an Entra ID access token for the function app.`,
      ),
    };
  }
  const wanted = new Set(policy.allowedRoles.map((r) => r.toLowerCase()));
  if (decoded.principal.roles.some((role) => wanted.has(role.toLowerCase()))) {
    return { ok: true, principal: decoded.principal };
  }
  return {
    ok: false,
    principal: decoded.principal,
    error: new UnisolateError(
      'CallerNotAllowed',
      `The caller is authenticated but holds none of the app roles allowed to release devices (${policy.allowedRoles.join(', ')}). Ask an administrator to assign one in Entra ID (Enterprise applications > the function app > Users and groups, or an app role assignment for an application).`,
    ),
  };
}

/**
 * The audit text for `requestedBy`: the authenticated caller, and what the request itself declared when
 * that adds something, e.g. `analyst@contoso.com (via app 1b2c...)` or `app 1b2c... for "analyst@contoso.com"`.
 */
export function describeRequester(principal: CallerPrincipal | null, declared: string | null): string | null {
  if (!principal || (principal.name === null && principal.appId === null)) return declared;
  const who =
    principal.name !== null
      ? principal.appId !== null
        ? `${principal.name} (via app ${principal.appId})`
        : principal.name
      : `app ${principal.appId}`;
  if (declared === null || declared.toLowerCase() === principal.name?.toLowerCase()) return who;
  return `${who} for ${JSON.stringify(declared)}`;
}

/** Parses `ALLOWED_CALLER_ROLES` (comma- or space-separated). */
export function parseRoleList(value: string | undefined): string[] {
  return [
    ...new Set(
      (value ?? '')
        .split(/[,\s]+/)
        .map((r) => r.trim())
        .filter(Boolean),
    ),
  ];
}
