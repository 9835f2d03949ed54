/**
 * Signed webhooks: HMAC-SHA256 over `"<timestamp>.<raw body>"`, carried in two headers.
 *
 * ```
 * X-Unisolate-Timestamp: 1795860000                    (Unix seconds)
 * X-Unisolate-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">
 * ```
 *
 * The scheme follows the well-known GitHub / Stripe webhook pattern: the timestamp is inside the signed text,
 * so it cannot be changed without breaking the signature, and a window of +-300 s plus a per-instance cache
 * of signatures already seen stops replays. The digest may also be sent base64-encoded (ServiceNow's
 * `GlideCertificateEncryption.generateMac` returns base64). Digests are compared with
 * `crypto.timingSafeEqual` so the comparison time says nothing about how much of a guess was right.
 * See https://nodejs.org/api/crypto.html#cryptotimingsafeequala-b
 *
 * Pure apart from `node:crypto`: time comes in through `now`, the secret(s) through the call.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** Header carrying the Unix time (seconds) the sender signed at. */
export const TIMESTAMP_HEADER = 'x-unisolate-timestamp';
/** Header carrying `sha256=<digest>`. */
export const SIGNATURE_HEADER = 'x-unisolate-signature';
/** How far (seconds) the signed timestamp may be from this instance's clock, either way. */
export const SIGNATURE_TOLERANCE_SECONDS = 300;
/** Default bound of the replay cache (entries); far above what MDE's 1500 calls/hour allow in a window. */
export const DEFAULT_REPLAY_CACHE_SIZE = 10_000;

const DIGEST_BYTES = 32;
const HEX_DIGEST = /^[0-9a-fA-F]{64}$/;
const BASE64_DIGEST = /^[A-Za-z0-9+/]{43}=$/;
const TIMESTAMP = /^\d{1,12}$/;

/** Computes the signature header value for a timestamp and raw body (for senders, docs and tests). */
export function computeSignature(
  secret: string,
  timestamp: string | number,
  rawBody: string | Uint8Array,
): string {
  return `sha256=${hmac(secret, String(timestamp), rawBody).toString('hex')}`;
}

function hmac(secret: string, timestamp: string, rawBody: string | Uint8Array): Buffer {
  return createHmac('sha256', secret)
    .update(`${timestamp}.`, 'utf8')
    .update(typeof rawBody === 'string' ? Buffer.from(rawBody, 'utf8') : rawBody)
    .digest();
}

/** Result of {@link SignatureVerifier.verify}: accepted, or why not (a message safe to return to the caller). */
export type SignatureCheck = { ok: true } | { ok: false; reason: string };

/** Options of {@link SignatureVerifier}. */
export interface SignatureVerifierOptions {
  /** Current time in milliseconds. */
  now: () => number;
  /** Accepted clock skew either way, in seconds (default {@link SIGNATURE_TOLERANCE_SECONDS}). */
  toleranceSeconds?: number;
  /** Most signatures remembered at once (default {@link DEFAULT_REPLAY_CACHE_SIZE}). */
  maxEntries?: number;
}

/** What the verifier is given for one request. */
export interface SignedRequest {
  /** Raw `X-Unisolate-Timestamp` header value (null when absent). */
  timestamp: string | null;
  /** Raw `X-Unisolate-Signature` header value (null when absent). */
  signature: string | null;
  /** The raw body exactly as received (bytes, before any decoding or JSON parsing). */
  rawBody: string | Uint8Array;
}

function decodeDigest(text: string): Buffer | undefined {
  if (HEX_DIGEST.test(text)) return Buffer.from(text, 'hex');
  if (BASE64_DIGEST.test(text)) {
    const bytes = Buffer.from(text, 'base64');
    return bytes.length === DIGEST_BYTES ? bytes : undefined;
  }
  return undefined;
}

/**
 * Verifies signed requests and remembers accepted signatures until their timestamp leaves the window, so
 * the same signed request is accepted once per instance. Memory is bounded: expired entries are dropped on
 * every call, and when `maxEntries` live signatures are held new ones are refused (fail closed) rather than
 * forgetting one that could then be replayed. Only correctly signed requests enter the cache, so only a
 * holder of the secret can fill it.
 */
export class SignatureVerifier {
  private readonly seen = new Map<string, number>();
  private readonly toleranceMs: number;
  private readonly maxEntries: number;

  constructor(private readonly options: SignatureVerifierOptions) {
    this.toleranceMs = (options.toleranceSeconds ?? SIGNATURE_TOLERANCE_SECONDS) * 1000;
    this.maxEntries = options.maxEntries ?? DEFAULT_REPLAY_CACHE_SIZE;
  }

  /** Signatures currently remembered (for tests and diagnostics). */
  get size(): number {
    return this.seen.size;
  }

  /**
   * Checks one request against the current secret(s): several are accepted during a rotation.
   * Never throws for any input.
   */
  verify(request: SignedRequest, secrets: readonly string[]): SignatureCheck {
    const now = this.options.now();
    this.prune(now);
    const timestamp = request.timestamp?.trim() ?? '';
    const signature = request.signature?.trim() ?? '';
    if (timestamp === '' || signature === '') {
      return {
        ok: false,
        reason:
          'the request is not signed: send X-Unisolate-Timestamp (Unix seconds) and X-Unisolate-Signature ' +
          '(sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">)',
      };
    }
    if (!TIMESTAMP.test(timestamp)) {
      return { ok: false, reason: 'X-Unisolate-Timestamp must be the Unix time in whole seconds' };
    }
    const signedAtMs = Number(timestamp) * 1000;
    if (Math.abs(now - signedAtMs) > this.toleranceMs) {
      return {
        ok: false,
        reason: `X-Unisolate-Timestamp is more than ${this.toleranceMs / 1000} seconds from the current time: sign each request when sending it, and check the sender's clock`,
      };
    }
    const separator = signature.indexOf('=');
    const scheme = separator > 0 ? signature.slice(0, separator).toLowerCase() : '';
    if (scheme !== 'sha256') {
      return { ok: false, reason: 'X-Unisolate-Signature must start with sha256= (HMAC-SHA256)' };
    }
    const given = decodeDigest(signature.slice(separator + 1));
    if (!given) {
      return {
        ok: false,
        reason:
          'X-Unisolate-Signature must be sha256= followed by 64 hex characters (or 44 base64 characters)',
      };
    }
    let matched = false;
    // Check every secret (no early exit), so timing does not reveal which one matched.
    for (const secret of secrets) {
      const expected = hmac(secret, timestamp, request.rawBody);
      if (timingSafeEqual(expected, given)) matched = true;
    }
    if (!matched) {
      return {
        ok: false,
        reason:
          'X-Unisolate-Signature does not match: sign "<timestamp>.<raw body>" with the shared secret, and send the body byte for byte as signed',
      };
    }
    const key = given.toString('hex');
    if (this.seen.has(key)) {
      return {
        ok: false,
        reason:
          'this signed request was already received (replay): sign every request with a fresh timestamp',
      };
    }
    if (this.seen.size >= this.maxEntries) {
      return {
        ok: false,
        reason: 'too many signed requests in the replay window on this instance; retry in a few minutes',
      };
    }
    this.seen.set(key, signedAtMs + this.toleranceMs);
    return { ok: true };
  }

  private prune(now: number): void {
    for (const [key, expiresAt] of this.seen) if (expiresAt < now) this.seen.delete(key);
  }
}
