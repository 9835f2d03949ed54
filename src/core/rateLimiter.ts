/**
 * Per-instance limiter for Defender API calls: MDE allows 100 calls per minute and 1500 per hour per app
 * and tenant (https://learn.microsoft.com/en-us/defender-endpoint/api/unisolate-machine#limitations).
 * A sliding log of granted call times keeps every window, sliding or fixed, within both limits, so one
 * instance never causes a 429 by itself.
 */

/** One limit: at most `limit` calls in any `windowMs`. */
export interface RateWindow {
  limit: number;
  windowMs: number;
}

/** Result of a reservation. */
export type Reservation = { granted: true; waitMs: number } | { granted: false; waitMs: number };

/** Sliding-window rate limiter over several windows. Time comes from an injected clock. */
export class RateLimiter {
  private readonly grants: number[] = [];
  private blockedUntil = 0;
  private readonly longestWindowMs: number;
  private readonly largestLimit: number;

  constructor(
    private readonly windows: readonly RateWindow[],
    private readonly now: () => number,
  ) {
    this.longestWindowMs = Math.max(...windows.map((w) => w.windowMs));
    this.largestLimit = Math.max(...windows.map((w) => w.limit));
  }

  /** MDE's own limits. */
  static forMde(perMinute: number, perHour: number, now: () => number): RateLimiter {
    return new RateLimiter(
      [
        { limit: perMinute, windowMs: 60_000 },
        { limit: perHour, windowMs: 3_600_000 },
      ],
      now,
    );
  }

  /** Earliest time (ms since epoch) at which one more call fits every window. */
  nextSlot(): number {
    const now = this.now();
    let at = Math.max(now, this.blockedUntil);
    for (const { limit, windowMs } of this.windows) {
      const index = this.grants.length - limit;
      const oldestInWindow = index >= 0 ? this.grants[index] : undefined;
      if (oldestInWindow !== undefined) at = Math.max(at, oldestInWindow + windowMs);
    }
    return at;
  }

  /**
   * Reserves a slot for one call if it is available within `maxWaitMs`; the caller then waits `waitMs`
   * and calls. A refused reservation reserves nothing and says how long the caller would have to wait.
   */
  reserve(maxWaitMs: number): Reservation {
    const now = this.now();
    const at = this.nextSlot();
    const waitMs = at - now;
    if (waitMs > maxWaitMs) return { granted: false, waitMs };
    this.grants.push(at);
    this.prune(now);
    return { granted: true, waitMs };
  }

  /** Holds every call until `until` (MDE answered 429 with Retry-After: other instances share the quota). */
  blockUntil(until: number): void {
    this.blockedUntil = Math.max(this.blockedUntil, until);
  }

  /** Calls granted in the last `windowMs` (for tests and diagnostics). */
  countInLast(windowMs: number): number {
    const since = this.now() - windowMs;
    return this.grants.filter((t) => t > since).length;
  }

  private prune(now: number): void {
    // Keep what any window can still see, and never fewer than the largest limit needs.
    let drop = 0;
    while (
      this.grants.length - drop > this.largestLimit &&
      (this.grants[drop] ?? Infinity) <= now - this.longestWindowMs
    ) {
      drop += 1;
    }
    if (drop > 0) this.grants.splice(0, drop);
  }
}
