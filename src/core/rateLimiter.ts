/**
 * A per-instance sliding-window limiter: one pool of the Defender API budget on this instance (see
 * `budget.ts`; MDE allows 100 calls per minute and 1500 per hour per API, app and tenant).
 *
 * A sliding log keeps every window within both limits. Each call is logged when its response arrives (an
 * upper bound of when MDE counted it), and calls still in flight count as "now": so however late a request
 * reaches MDE, this instance never makes MDE see more than the limit in any window, and never causes a
 * 429 by itself. A caller that must wait sleeps and asks again.
 */
import type { Acquisition } from './budget';

/** One limit: at most `limit` calls in any `windowMs`. */
export interface RateWindow {
  limit: number;
  windowMs: number;
}

/** Sliding-window rate limiter over several windows. Time comes from an injected clock. */
export class RateLimiter {
  /** Completion times of finished calls, ascending. */
  private readonly completed: number[] = [];
  private inFlight = 0;
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

  /** Earliest time (ms since epoch) at which one more call fits every window. */
  nextSlot(): number {
    const now = this.now();
    let at = Math.max(now, this.blockedUntil);
    const total = this.completed.length + this.inFlight;
    for (const { limit, windowMs } of this.windows) {
      if (total < limit) continue;
      // The call that must leave the window first; calls in flight are the newest and count as now.
      const index = total - limit;
      const leaving = index < this.completed.length ? this.completed[index]! : now;
      at = Math.max(at, leaving + windowMs);
    }
    return at;
  }

  /**
   * Asks to make one call now: a slot when it fits every window right now (release it `used` when the call
   * was sent, so it is counted from that moment; unused, it is given back), else how long to wait.
   */
  tryAcquire(): Acquisition {
    const now = this.now();
    const waitMs = this.nextSlot() - now;
    if (waitMs > 0) return { granted: false, waitMs };
    this.inFlight += 1;
    let finished = false;
    return {
      granted: true,
      slot: {
        // Counted when its answer arrives, however late it is sent.
        validUntil: Number.POSITIVE_INFINITY,
        release: (used) => {
          if (finished) return;
          finished = true;
          this.inFlight -= 1;
          if (used) this.record(this.now());
        },
      },
    };
  }

  /** Holds every call until `until` (MDE answered 429 with Retry-After: other instances share the quota). */
  blockUntil(until: number): void {
    this.blockedUntil = Math.max(this.blockedUntil, until);
  }

  private record(at: number): void {
    // Completion times arrive almost in order: insert from the end.
    let i = this.completed.length;
    while (i > 0 && this.completed[i - 1]! > at) i -= 1;
    this.completed.splice(i, 0, at);
    // Keep what any window can still see, and never fewer than the largest limit needs.
    let drop = 0;
    while (
      this.completed.length - drop > this.largestLimit &&
      this.completed[drop]! <= at - this.longestWindowMs
    ) {
      drop += 1;
    }
    if (drop > 0) this.completed.splice(0, drop);
  }
}
