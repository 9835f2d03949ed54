/**
 * Retry decisions: parsing Retry-After and choosing whether, and when, to retry a Defender call.
 */
import { backoffDelay, decideRetry, parseRetryAfter, type RetryInput } from '../../src/core/retry';

const now = Date.parse('2026-11-28T10:00:00Z');
const input = (over: Partial<RetryInput>): RetryInput => ({
  attempt: 1,
  failure: { kind: 'status', status: 500 },
  remainingMs: 60_000,
  now,
  random: 0.5,
  credentialsRefreshed: false,
  ...over,
});

describe('parseRetryAfter', () => {
  it('reads delta-seconds and HTTP dates', () => {
    expect(parseRetryAfter('2', now)).toBe(2000);
    expect(parseRetryAfter('Sat, 28 Nov 2026 10:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Sat, 28 Nov 2026 09:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});

describe('decideRetry', () => {
  it('honours Retry-After on 429 and 503', () => {
    expect(decideRetry(input({ failure: { kind: 'status', status: 429, retryAfter: '2' } }))).toEqual({
      retry: true,
      delayMs: 2000,
      refreshCredentials: false,
    });
    expect(decideRetry(input({ failure: { kind: 'status', status: 503, retryAfter: '7' } }))).toMatchObject({
      delayMs: 7000,
    });
  });

  it('gives up when Retry-After exceeds the remaining budget, and says how long to wait', () => {
    expect(
      decideRetry(input({ failure: { kind: 'status', status: 429, retryAfter: '90' }, remainingMs: 20_000 })),
    ).toEqual({ retry: false, reason: 'budget-spent', waitMs: 90_000 });
  });

  it('backs off exponentially with full jitter for 5xx, network errors and timeouts', () => {
    for (const failure of [
      { kind: 'status', status: 500 },
      { kind: 'status', status: 502 },
      { kind: 'status', status: 504 },
      { kind: 'network', code: 'ECONNRESET' },
      { kind: 'network', code: 'ECONNREFUSED' },
      { kind: 'network', code: 'ENOTFOUND' },
      { kind: 'timeout' },
    ] as const) {
      expect(decideRetry(input({ failure, attempt: 3, random: 0.5 }))).toEqual({
        retry: true,
        delayMs: 2000, // 0.5 * min(16 s, 1 s * 2^2)
        refreshCredentials: false,
      });
    }
    expect(backoffDelay(10, 0.999)).toBeLessThan(16_000);
    expect(backoffDelay(1, 0)).toBe(0);
  });

  it.each([400, 403, 404, 409, 422])('never retries %i', (status) => {
    expect(decideRetry(input({ failure: { kind: 'status', status } }))).toEqual({
      retry: false,
      reason: 'not-retriable',
    });
  });

  it('retries a 401 once, immediately, with fresh credentials', () => {
    expect(decideRetry(input({ failure: { kind: 'status', status: 401 } }))).toEqual({
      retry: true,
      delayMs: 0,
      refreshCredentials: true,
    });
    expect(
      decideRetry(input({ failure: { kind: 'status', status: 401 }, credentialsRefreshed: true })),
    ).toMatchObject({ retry: false });
  });

  it('stops after the maximum number of attempts', () => {
    expect(decideRetry(input({ attempt: 8 }))).toMatchObject({ retry: false, reason: 'attempts-spent' });
  });
});
