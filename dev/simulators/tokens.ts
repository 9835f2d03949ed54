/**
 * Registry of the opaque access tokens the identity simulators issue, so the resource simulators (Key Vault,
 * Defender) can check that a bearer token really came out of the credential chain under test, for the right
 * audience, and has not expired.
 *
 * Real tokens are JWTs the resource validates by signature; the simulators use random opaque strings plus
 * this lookup instead, which proves the same thing (the SDK obtained and forwarded the token) without a key
 * pair. Code under test must therefore treat tokens as opaque, which it should anyway.
 */
import { randomBytes } from 'node:crypto';

/** What was recorded when a token was issued. */
export interface IssuedToken {
  /** The opaque token string (what goes after `Bearer `). */
  token: string;
  /** Which simulator issued it. */
  issuer: 'managed-identity' | 'entra';
  /**
   * Audience: the resource without `/.default` and without trailing slash,
   * e.g. `https://vault.azure.net` or `https://api.securitycenter.microsoft.com`.
   */
  audience: string;
  /** Scope as requested (`https://…/.default` for Entra, the `resource` query value for managed identity). */
  scope: string;
  /** Tenant the token was issued in (Entra only). */
  tenantId?: string;
  /** App (client) id: the Entra app registration, or the user-assigned identity's client id if one was asked. */
  clientId?: string;
  /** Issue time, ms since epoch (wall clock, like the real STS). */
  issuedAt: number;
  /** Expiry, ms since epoch (wall clock: the SDKs cache tokens by wall-clock time). */
  expiresAt: number;
}

/** Normalises a scope or resource to an audience: drops `/.default` and trailing slashes, lower-cases. */
export function audienceOf(scopeOrResource: string): string {
  return scopeOrResource
    .trim()
    .replace(/\/\.default$/i, '')
    .replace(/\/+$/, '')
    .toLowerCase();
}

/** Creates an opaque random token string with the given prefix (e.g. `mi-`, `mde-`). */
export function opaqueToken(prefix: string): string {
  return `${prefix}${randomBytes(24).toString('base64url')}`;
}

/** Issued-token store shared by issuing and validating simulators. */
export class TokenRegistry {
  private readonly tokens = new Map<string, IssuedToken>();

  /** Records a token. */
  register(token: IssuedToken): IssuedToken {
    this.tokens.set(token.token, token);
    return token;
  }

  /** The recorded token, or undefined if this registry never issued it. */
  lookup(token: string): IssuedToken | undefined {
    return this.tokens.get(token);
  }

  /**
   * The recorded token if it exists, is unexpired at `now` (default wall clock) and, when `audience` is
   * given, was issued for that audience; otherwise undefined.
   */
  validate(token: string, audience?: string, now: number = Date.now()): IssuedToken | undefined {
    const t = this.tokens.get(token);
    if (!t || t.expiresAt <= now) return undefined;
    if (audience !== undefined && t.audience !== audienceOf(audience)) return undefined;
    return t;
  }

  /** Makes an issued token invalid immediately (e.g. to test a 401 on a revoked/expired token). */
  revoke(token: string): boolean {
    return this.tokens.delete(token);
  }

  /** Marks every token as expired (keeps them so lookups still explain what they were). */
  expireAll(now: number = Date.now()): void {
    for (const t of this.tokens.values()) t.expiresAt = Math.min(t.expiresAt, now);
  }

  /** Every token registered (and not revoked), oldest first. */
  entries(): IssuedToken[] {
    return [...this.tokens.values()];
  }

  /** Number of tokens ever registered (and not revoked). */
  get size(): number {
    return this.tokens.size;
  }

  /** Forgets every token. */
  clear(): void {
    this.tokens.clear();
  }
}

/**
 * Process-wide default registry: simulators started without an explicit `registry` option share it, so a
 * Key Vault simulator accepts tokens from any managed-identity simulator in the same test file by default.
 */
export const defaultTokenRegistry = new TokenRegistry();

/** Extracts the token from an `Authorization: Bearer <token>` header value, else undefined. */
export function bearerToken(authorization: string | undefined): string | undefined {
  if (!authorization) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return m?.[1];
}
