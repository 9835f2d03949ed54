import { RateLimiter } from '../../src/core/rateLimiter';

describe('RateLimiter', () => {
  it('grants 100 calls per minute, then schedules the next one when the oldest leaves the window', () => {
    let now = 0;
    const limiter = RateLimiter.forMde(100, 1500, () => now);
    for (let i = 0; i < 100; i += 1) expect(limiter.reserve(0)).toEqual({ granted: true, waitMs: 0 });
    expect(limiter.reserve(0)).toEqual({ granted: false, waitMs: 60_000 });
    now = 10_000;
    expect(limiter.reserve(60_000)).toEqual({ granted: true, waitMs: 50_000 });
  });

  it('never lets any sliding minute hold more than 100 calls nor any hour more than 1500', () => {
    let now = 0;
    const limiter = RateLimiter.forMde(100, 1500, () => now);
    const calls: number[] = [];
    // Offer 3000 calls as fast as the limiter allows, walking the clock to each granted slot.
    for (let i = 0; i < 3000; i += 1) {
      const slot = limiter.reserve(Infinity);
      now += slot.waitMs;
      calls.push(now);
    }
    let i0 = 0;
    let j0 = 0;
    for (let j = 0; j < calls.length; j += 1) {
      while (calls[i0]! <= calls[j]! - 60_000) i0 += 1;
      while (calls[j0]! <= calls[j]! - 3_600_000) j0 += 1;
      expect(j - i0 + 1).toBeLessThanOrEqual(100);
      expect(j - j0 + 1).toBeLessThanOrEqual(1500);
    }
    // And it uses the budget fully: 1500 calls within the first hour.
    expect(calls.filter((t) => t < 3_600_000)).toHaveLength(1500);
  });

  it('refuses without reserving when the wait exceeds what the caller can afford', () => {
    let now = 0;
    const limiter = RateLimiter.forMde(1, 1500, () => now);
    expect(limiter.reserve(0).granted).toBe(true);
    expect(limiter.reserve(1000).granted).toBe(false);
    now = 60_000;
    expect(limiter.reserve(0)).toEqual({ granted: true, waitMs: 0 });
  });

  it("holds every call until MDE's Retry-After after a 429", () => {
    const now = 1000;
    const limiter = RateLimiter.forMde(100, 1500, () => now);
    limiter.blockUntil(6000);
    expect(limiter.reserve(10_000)).toEqual({ granted: true, waitMs: 5000 });
  });
});
