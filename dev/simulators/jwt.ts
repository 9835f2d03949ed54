/**
 * Minimal JWS (compact JWT) signing and verification with node:crypto, for the identity simulators: the
 * managed identity simulator signs tokens for the token exchange audience, the Entra ID simulator signs its
 * access tokens and verifies client assertions (RS256, and PS256 which MSAL uses with `x5t#S256`).
 * https://www.rfc-editor.org/rfc/rfc7515, https://www.rfc-editor.org/rfc/rfc7518#section-3
 */
import {
  constants,
  createHash,
  createPublicKey,
  generateKeyPairSync,
  randomUUID,
  sign,
  verify,
  KeyObject,
  X509Certificate,
  type JsonWebKey,
} from 'node:crypto';

/** A JWT split into its parts. */
export interface DecodedJwt {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
  /** `<header>.<payload>`, the bytes the signature covers. */
  signingInput: string;
  signature: Buffer;
}

/** An RSA signing key with its key id and public JWK (what a JWKS endpoint would publish). */
export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  jwk: JsonWebKey & { kid: string; use: 'sig'; alg: 'RS256' };
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

/** A fresh 2048-bit RSA key (about 50 ms). */
export function newSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomUUID();
  return {
    kid,
    privateKey,
    publicKey,
    jwk: { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' },
  };
}

function signatureOptions(alg: string, key: KeyObject) {
  if (alg === 'RS256') return { key, padding: constants.RSA_PKCS1_PADDING };
  if (alg === 'PS256') return { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 };
  throw new Error(`unsupported alg ${alg}`);
}

/** Signs `payload` (RS256 unless the header says PS256). */
export function signJwt(
  payload: Record<string, unknown>,
  key: KeyObject,
  header: Record<string, unknown> = {},
): string {
  const fullHeader = { typ: 'JWT', alg: 'RS256', ...header };
  const signingInput = `${b64url(JSON.stringify(fullHeader))}.${b64url(JSON.stringify(payload))}`;
  const signature = sign('sha256', Buffer.from(signingInput), signatureOptions(String(fullHeader.alg), key));
  return `${signingInput}.${b64url(signature)}`;
}

/** Splits and parses a compact JWT; undefined when it is not one. */
export function decodeJwt(token: string): DecodedJwt | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as unknown;
    const payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as unknown;
    if (typeof header !== 'object' || header === null || typeof payload !== 'object' || payload === null) {
      return undefined;
    }
    return {
      header: header as Record<string, unknown>,
      payload: payload as Record<string, unknown>,
      signingInput: `${parts[0]}.${parts[1]}`,
      signature: Buffer.from(parts[2]!, 'base64url'),
    };
  } catch {
    return undefined;
  }
}

/** Whether the JWT's signature verifies with `key` under its header's `alg` (RS256 or PS256 only). */
export function verifyJwt(jwt: DecodedJwt, key: KeyObject | JsonWebKey): boolean {
  const alg = jwt.header.alg;
  if (alg !== 'RS256' && alg !== 'PS256') return false;
  const publicKey = key instanceof KeyObject ? key : createPublicKey({ key, format: 'jwk' });
  return verify('sha256', Buffer.from(jwt.signingInput), signatureOptions(alg, publicKey), jwt.signature);
}

/** A certificate's SHA-1 and SHA-256 thumbprints as JWT `x5t` / `x5t#S256` (base64url of the DER digest). */
export function certificateThumbprints(pem: string): { x5t: string; x5tS256: string; sha1Hex: string } {
  const der = new X509Certificate(pem).raw;
  const sha1 = createHash('sha1').update(der).digest();
  return {
    x5t: sha1.toString('base64url'),
    x5tS256: createHash('sha256').update(der).digest('base64url'),
    sha1Hex: sha1.toString('hex').toUpperCase(),
  };
}
