/**
 * How the Defender client reports transport failures, and that the retry decision's list of transient
 * network codes holds only codes that can reach it (a code the client maps to a timeout never arrives as a
 * network failure, so listing it there would only mislead a reader).
 */
import { toTransportError } from '../../src/adapters/defenderClient';
import { decideRetry, TRANSIENT_NETWORK_CODES } from '../../src/core/retry';

describe('toTransportError', () => {
  it.each(['ETIMEDOUT', 'ECONNABORTED', 'ERR_CANCELED'])(
    'maps %s (axios timeouts and aborts) to a timeout',
    (code) => {
      expect(toTransportError({ code })).toMatchObject({ kind: 'timeout' });
    },
  );

  it('passes every other code on as a network failure, and an unknown error as UNKNOWN', () => {
    expect(toTransportError({ code: 'ECONNRESET' })).toMatchObject({ kind: 'network', code: 'ECONNRESET' });
    expect(toTransportError(new Error('x'))).toMatchObject({ kind: 'network', code: 'UNKNOWN' });
  });

  it('every transient network code of the retry decision can reach it as a network failure', () => {
    for (const code of TRANSIENT_NETWORK_CODES) {
      const failure = toTransportError({ code });
      expect({ code, kind: failure.kind }).toEqual({ code, kind: 'network' });
      const decision = decideRetry({
        attempt: 1,
        failure: { kind: 'network', code: failure.code },
        remainingMs: 60_000,
        now: 0,
        random: 0.5,
        credentialsRefreshed: false,
      });
      expect(decision.retry).toBe(true);
    }
  });
});
