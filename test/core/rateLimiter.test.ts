/**
 * RateLimiter: the sliding per-minute and per-hour windows that keep one instance under its share.
 */
import { HOUR_MS, MINUTE_MS } from '../../src/core/budget';
import { RateLimiter } from '../../src/core/rateLimiter';

/** A limiter with MDE's two windows. */
function mdeLimiter(perMinute: number, perHour: number, now: () => number): RateLimiter {
  return new RateLimiter(
    [
      { limit: perMinute, windowMs: MINUTE_MS },
      { limit: perHour, windowMs: HOUR_MS },
    ],
    now,
  );
}

/** Makes one call through the limiter at the current time, taking `latencyMs` to answer. */
function call(limiter: RateLimiter, clock: { now: number }, latencyMs = 0): boolean {
  const slot = limiter.tryAcquire();
  if (!slot.granted) return false;
  clock.now += latencyMs;
  slot.slot.release(true);
  return true;
}

describe('RateLimiter', () => {
  it('grants 100 calls per minute, then says how long until the oldest leaves the window', () => {
    const clock = { now: 0 };
    const limiter = mdeLimiter(100, 1500, () => clock.now);
    for (let i = 0; i < 100; i += 1) expect(call(limiter, clock)).toBe(true);
    expect(limiter.tryAcquire()).toEqual({ granted: false, waitMs: 60_000 });
    clock.now = 10_000;
    expect(limiter.tryAcquire()).toEqual({ granted: false, waitMs: 50_000 });
    clock.now = 60_000;
    expect(limiter.tryAcquire().granted).toBe(true);
  });

  it('counts calls in flight as happening now', () => {
    const clock = { now: 0 };
    const limiter = mdeLimiter(2, 1500, () => clock.now);
    const a = limiter.tryAcquire();
    const b = limiter.tryAcquire();
    expect([a.granted, b.granted]).toEqual([true, true]);
    clock.now = 5000;
    expect(limiter.tryAcquire()).toMatchObject({ granted: false, waitMs: 60_000 });
    if (a.granted) a.slot.release(true);
    // The window now starts from when the first call answered (5 s), not when it was sent.
    expect(limiter.tryAcquire()).toMatchObject({ granted: false, waitMs: 60_000 });
    clock.now = 65_000;
    expect(limiter.tryAcquire().granted).toBe(true);
  });

  it('never lets any sliding minute hold more than 100 calls nor any hour more than 1500, and uses them all', () => {
    const clock = { now: 0 };
    const limiter = mdeLimiter(100, 1500, () => clock.now);
    const calls: number[] = [];
    // Offer 3000 calls as fast as the limiter allows (10 ms latency each), walking the clock to each slot.
    for (let i = 0; i < 3000; i += 1) {
      for (;;) {
        const slot = limiter.tryAcquire();
        if (slot.granted) {
          calls.push(clock.now);
          clock.now += 10;
          slot.slot.release(true);
          break;
        }
        clock.now += slot.waitMs;
      }
    }
    let i0 = 0;
    let j0 = 0;
    for (let j = 0; j < calls.length; j += 1) {
      while (calls[i0]! <= calls[j]! - 60_000) i0 += 1;
      while (calls[j0]! <= calls[j]! - 3_600_000) j0 += 1;
      expect(j - i0 + 1).toBeLessThanOrEqual(100);
      expect(j - j0 + 1).toBeLessThanOrEqual(1500);
    }
    // 1500 in the first hour (100 a minute for 15 minutes), the next one when the first leaves the hour.
    expect(calls.filter((t) => t < 3_600_000)).toHaveLength(1500);
    expect(calls[1500]).toBe(3_600_000 + 10);
  });

  it('gives an unused slot back without counting it', () => {
    const clock = { now: 0 };
    const limiter = mdeLimiter(1, 1500, () => clock.now);
    const slot = limiter.tryAcquire();
    expect(slot.granted).toBe(true);
    expect(limiter.tryAcquire().granted).toBe(false);
    if (slot.granted) slot.slot.release(false);
    expect(limiter.tryAcquire().granted).toBe(true);
  });

  it("holds every call until MDE's Retry-After after a 429", () => {
    const limiter = mdeLimiter(100, 1500, () => 1000);
    limiter.blockUntil(6000);
    expect(limiter.tryAcquire()).toEqual({ granted: false, waitMs: 5000 });
  });
});
