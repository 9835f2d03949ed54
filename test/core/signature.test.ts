/**
 * Signed webhooks: HMAC-SHA256 of "<timestamp>.<raw body>", +-300 s, replay cache, constant-time compare.
 */
import { createHmac } from 'node:crypto';
import { computeSignature, SignatureVerifier, type SignedRequest } from '../../src/core/signature';

const SECRET = 'a'.repeat(16) + 'webhook-signing-secret-for-tests';
const OTHER = 'b'.repeat(48);
const NOW_S = 1_795_860_000;
const BODY = '{"machineId":"1e5bc9d7e413ddd7902c2932e418702b84d0cc07","comment":"clean"}';

function setup(maxEntries?: number) {
  const clock = { ms: NOW_S * 1000 };
  const verifier = new SignatureVerifier({ now: () => clock.ms, maxEntries });
  return { clock, verifier };
}

function signed(body = BODY, timestamp: number | string = NOW_S, secret = SECRET): SignedRequest {
  return {
    timestamp: String(timestamp),
    signature: computeSignature(secret, timestamp, body),
    rawBody: body,
  };
}

describe('computeSignature', () => {
  it('is sha256= and the hex HMAC-SHA256 of "<timestamp>.<raw body>" (as a sender computes it)', () => {
    const expected = createHmac('sha256', SECRET).update(`${NOW_S}.${BODY}`).digest('hex');
    expect(computeSignature(SECRET, NOW_S, BODY)).toBe(`sha256=${expected}`);
    expect(computeSignature(SECRET, NOW_S, Buffer.from(BODY))).toBe(`sha256=${expected}`);
  });
});

describe('SignatureVerifier', () => {
  it('accepts a valid signature (hex, upper-case hex, or base64 as ServiceNow produces)', () => {
    const { verifier } = setup();
    expect(verifier.verify(signed(), [SECRET])).toEqual({ ok: true });
    const upper = signed(BODY, NOW_S + 1);
    expect(verifier.verify({ ...upper, signature: upper.signature!.toUpperCase() }, [SECRET])).toEqual({
      ok: true,
    });
    const base64 = createHmac('sha256', SECRET)
      .update(`${NOW_S + 2}.${BODY}`)
      .digest('base64');
    expect(
      verifier.verify({ timestamp: String(NOW_S + 2), signature: `sha256=${base64}`, rawBody: BODY }, [
        SECRET,
      ]),
    ).toEqual({ ok: true });
  });

  it('accepts any of several keys (rotation) and rejects a key not in the list', () => {
    const { verifier } = setup();
    expect(verifier.verify(signed(BODY, NOW_S, OTHER), [SECRET, OTHER])).toEqual({ ok: true });
    expect(verifier.verify(signed(BODY, NOW_S + 5, OTHER), [SECRET])).toMatchObject({ ok: false });
  });

  it('signs the raw bytes: a multi-byte body verifies the same as a string or a Buffer', () => {
    const { verifier } = setup();
    const body = '{"comment":"Gerät freigegeben ✓"}';
    const request = signed(body);
    expect(verifier.verify({ ...request, rawBody: Buffer.from(body, 'utf8') }, [SECRET])).toEqual({
      ok: true,
    });
  });

  it.each<[string, (r: SignedRequest) => SignedRequest, RegExp]>([
    [
      'a tampered body',
      (r) => ({ ...r, rawBody: r.rawBody.toString().replace('clean', 'cleam') }),
      /does not match/,
    ],
    ['a body with an extra space', (r) => ({ ...r, rawBody: `${r.rawBody.toString()} ` }), /does not match/],
    ['a tampered timestamp', (r) => ({ ...r, timestamp: String(NOW_S - 1) }), /does not match/],
    [
      'a wrong algorithm prefix',
      (r) => ({ ...r, signature: r.signature!.replace('sha256=', 'sha1=') }),
      /sha256=/,
    ],
    ['no algorithm prefix', (r) => ({ ...r, signature: r.signature!.slice(7) }), /sha256=/],
    ['a truncated digest', (r) => ({ ...r, signature: r.signature!.slice(0, -2) }), /64 hex/],
    ['a non-hex digest', (r) => ({ ...r, signature: `sha256=${'z'.repeat(64)}` }), /64 hex/],
    ['an empty signature', (r) => ({ ...r, signature: '' }), /not signed/],
    ['a missing signature', (r) => ({ ...r, signature: null }), /not signed/],
    ['a missing timestamp', (r) => ({ ...r, timestamp: null }), /not signed/],
    ['an empty timestamp', (r) => ({ ...r, timestamp: '' }), /not signed/],
    ['a timestamp in milliseconds', (r) => ({ ...r, timestamp: String(NOW_S * 1000) }), /seconds/],
    ['a fractional timestamp', (r) => ({ ...r, timestamp: `${NOW_S}.5` }), /whole seconds/],
    ['a negative timestamp', (r) => ({ ...r, timestamp: `-${NOW_S}` }), /whole seconds/],
    ['a date string timestamp', (r) => ({ ...r, timestamp: new Date().toUTCString() }), /whole seconds/],
  ])('rejects %s', (_name, tamper, reason) => {
    const { verifier } = setup();
    const result = verifier.verify(tamper(signed()), [SECRET]);
    expect(result).toEqual({ ok: false, reason: expect.stringMatching(reason) });
    expect(verifier.size).toBe(0);
  });

  it('rejects a wrong secret', () => {
    const { verifier } = setup();
    expect(verifier.verify(signed(BODY, NOW_S, OTHER), [SECRET])).toEqual({
      ok: false,
      reason: expect.stringMatching(/does not match/),
    });
  });

  it('accepts timestamps up to 300 s either way and rejects stale or future ones beyond', () => {
    const { verifier } = setup();
    expect(verifier.verify(signed(BODY, NOW_S - 300), [SECRET])).toEqual({ ok: true });
    expect(verifier.verify(signed(BODY, NOW_S + 300), [SECRET])).toEqual({ ok: true });
    for (const ts of [NOW_S - 301, NOW_S + 301, NOW_S - 86_400, 0]) {
      expect(verifier.verify(signed(BODY, ts), [SECRET])).toEqual({
        ok: false,
        reason: expect.stringMatching(/300 seconds/),
      });
    }
  });

  it('rejects a replay of a signature already accepted, also re-encoded, while it is in the window', () => {
    const { verifier, clock } = setup();
    const request = signed();
    expect(verifier.verify(request, [SECRET])).toEqual({ ok: true });
    expect(verifier.verify(request, [SECRET])).toEqual({
      ok: false,
      reason: expect.stringMatching(/replay/),
    });
    const hex = request.signature!.slice(7);
    const base64 = `sha256=${Buffer.from(hex, 'hex').toString('base64')}`;
    expect(verifier.verify({ ...request, signature: base64 }, [SECRET])).toMatchObject({ ok: false });
    clock.ms += 299_000;
    expect(verifier.verify(request, [SECRET])).toEqual({
      ok: false,
      reason: expect.stringMatching(/replay/),
    });
    // Once the timestamp is out of the window the entry is dropped: the request is refused as stale instead.
    clock.ms += 2_000;
    expect(verifier.verify(request, [SECRET])).toEqual({ ok: false, reason: expect.stringMatching(/300 s/) });
    expect(verifier.size).toBe(0);
  });

  it('does not record a rejected signature (a forged one cannot block the genuine request)', () => {
    const { verifier } = setup();
    const genuine = signed();
    verifier.verify({ ...genuine, rawBody: 'forged' }, [SECRET]);
    expect(verifier.verify(genuine, [SECRET])).toEqual({ ok: true });
  });

  it('keeps memory bounded: refuses new signatures when full, accepts again once entries expire', () => {
    const { verifier, clock } = setup(3);
    for (let i = 0; i < 3; i += 1)
      expect(verifier.verify(signed(`{"n":${i}}`), [SECRET])).toEqual({ ok: true });
    expect(verifier.verify(signed('{"n":3}'), [SECRET])).toEqual({
      ok: false,
      reason: expect.stringMatching(/too many/),
    });
    expect(verifier.size).toBe(3);
    clock.ms += 301_000;
    expect(verifier.verify(signed('{"n":3}', NOW_S + 301), [SECRET])).toEqual({ ok: true });
    expect(verifier.size).toBe(1);
  });

  it('compares digests with crypto.timingSafeEqual, once per key (no early exit)', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const crypto = require('node:crypto') as typeof import('node:crypto');
    const spy = jest.spyOn(crypto, 'timingSafeEqual');
    try {
      const { verifier } = setup();
      verifier.verify(signed(BODY, NOW_S, SECRET), [SECRET, OTHER]);
      expect(spy).toHaveBeenCalledTimes(2);
    } finally {
      spy.mockRestore();
    }
  });

  it('never throws for hostile header values', () => {
    const { verifier } = setup();
    const hostile = [
      '',
      ' ',
      '=',
      'sha256=',
      'sha256==',
      '\u0000',
      'a'.repeat(10_000),
      'sha256=\u2028',
      '🙂',
    ];
    for (const timestamp of [...hostile, String(NOW_S)]) {
      for (const signature of hostile) {
        expect(verifier.verify({ timestamp, signature, rawBody: BODY }, [SECRET]).ok).toBe(false);
      }
    }
  });
});
