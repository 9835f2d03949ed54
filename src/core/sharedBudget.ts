/**
 * The Defender API budget shared by every instance and trigger of the app, through one ledger per pool in
 * the state table (see {@link Ledger} in `budget.ts` for why it is safe).
 *
 * The table is not written per call: an instance leases a small batch (as many calls as it has waiting, up to
 * {@link SharedBudgetOptions.maxLease}) with one ETag-conditional write, then hands the leased calls out from
 * memory until they expire. A 429 from MDE writes the pool's `pausedUntil`: the instance that got it hands out
 * nothing more until then (not even calls it leased before or that are given back meanwhile), and every other
 * instance does the same from its next lease. When the table cannot be reached, the pool falls back to this
 * instance's own limiter ({@link LocalBudget}) for a while and says so once in the log: MDE's 429 stays the
 * guard.
 */
import {
  EMPTY_LEDGER,
  grantable,
  LocalBudget,
  poolOf,
  recordGrant,
  type Acquisition,
  type Budget,
  type BudgetLimits,
  type LeaseTiming,
  type Ledger,
  type MdeApi,
  type Pool,
  type Spender,
} from './budget';
import type { Logger, Versioned } from './ports';

/** Where the ledgers live (the state table). */
export interface LedgerStore {
  readLedger(pool: string): Promise<Versioned<Ledger> | undefined>;
  /**
   * Writes the ledger if it is unchanged since `etag` was read (or, with `etag` undefined, if it does not exist
   * yet). Returns the new ETag, or undefined when another instance wrote first.
   */
  writeLedger(pool: string, ledger: Ledger, etag: string | undefined): Promise<string | undefined>;
}

/** Options of {@link SharedBudget}. */
export interface SharedBudgetOptions {
  store: LedgerStore;
  limits: BudgetLimits;
  now: () => number;
  log: Logger;
  /** Lease timing (default: a lease is used within 1.5 s; 0.5 s margin for latency and clock skew). */
  timing?: LeaseTiming;
  /** Most calls one lease takes (default 10): small, so instances share fairly. */
  maxLease?: number;
  /** How long a pool uses the local limiter after the table failed (default 30 s). */
  fallbackMs?: number;
}

/** Default lease timing: see {@link Ledger}. */
export const DEFAULT_LEASE_TIMING: LeaseTiming = { leaseMs: 1500, marginMs: 500 };

/** Leased calls are handed out only this long before their lease ends (time to actually send them). */
const SEND_MARGIN_MS = 100;
/** Conditional writes tried per lease before giving up for this round (others are leasing too). */
const WRITE_ATTEMPTS = 4;

class SharedPool {
  /** End times of leased calls not handed out yet. */
  private leased: number[] = [];
  private waiting = 0;
  private leasing: Promise<void> | undefined;
  private cached: Versioned<Ledger> | undefined;
  /** No lease before this time (the ledger has no call free before it). */
  private notBefore = 0;
  /**
   * No call at all before this time: MDE answered 429 with this `Retry-After` (here, or on another instance:
   * read from the ledger). Checked before anything is handed out, leased calls included.
   */
  private pausedUntil = 0;
  /** Until this time the table is not asked (it failed): the local limiter decides. */
  private fallbackUntil = 0;

  constructor(
    private readonly pool: Pool,
    private readonly options: Required<Omit<SharedBudgetOptions, 'limits'>>,
    private readonly local: LocalBudget,
  ) {}

  async acquire(): Promise<Acquisition> {
    const now = this.options.now();
    if (now < this.pausedUntil) return { granted: false, waitMs: this.pausedUntil - now };
    if (now < this.fallbackUntil) return this.local.acquire(this.pool.api, this.pool.spender);
    const leased = this.takeLeased(now);
    if (leased) return leased;
    if (now < this.notBefore) return { granted: false, waitMs: this.notBefore - now };
    this.waiting += 1;
    try {
      this.leasing ??= this.lease().finally(() => (this.leasing = undefined));
      await this.leasing;
    } finally {
      this.waiting -= 1;
    }
    const later = this.options.now();
    // A 429 may have come while the lease was being written: what it leased waits for the pause to end.
    if (later < this.pausedUntil) return { granted: false, waitMs: this.pausedUntil - later };
    if (later < this.fallbackUntil) return this.local.acquire(this.pool.api, this.pool.spender);
    return this.takeLeased(later) ?? { granted: false, waitMs: Math.max(1, this.notBefore - later) };
  }

  /** Holds every call of this pool until `until`; `record`: write it to the ledger for every instance. */
  pause(until: number, record = true): void {
    if (until <= this.pausedUntil) return;
    this.pausedUntil = until;
    this.leased = [];
    if (!record) return;
    void this.writePause(until).catch((error: unknown) => this.failed('recording a 429 pause', error));
  }

  private takeLeased(now: number): Acquisition | undefined {
    while (this.leased.length > 0 && this.leased[0]! - SEND_MARGIN_MS <= now) this.leased.shift();
    const end = this.leased.shift();
    if (end === undefined) return undefined;
    let released = false;
    return {
      granted: true,
      slot: {
        validUntil: end - SEND_MARGIN_MS,
        // An unused call goes back to the pool while its lease lasts and no pause holds the API; a used one was
        // counted when leased. Given back twice, it still counts once.
        release: (used) => {
          if (released) return;
          released = true;
          const now = this.options.now();
          if (!used && now >= this.pausedUntil && end - SEND_MARGIN_MS > now) {
            this.leased.push(end);
            this.leased.sort((a, b) => a - b);
          }
        },
      },
    };
  }

  private async read(): Promise<Versioned<Ledger> | { value: Ledger; etag: undefined }> {
    return (await this.options.store.readLedger(this.pool.name)) ?? { value: EMPTY_LEDGER, etag: undefined };
  }

  /** Leases as many calls as are waiting (at least one, at most `maxLease`), or learns when one frees. */
  private async lease(): Promise<void> {
    // Let the callers that woke up with this one register first: one lease then serves them all.
    await new Promise<void>((resolve) => setImmediate(resolve));
    try {
      let current: Versioned<Ledger> | { value: Ledger; etag: undefined } =
        this.cached ?? (await this.read());
      for (let attempt = 0; attempt < WRITE_ATTEMPTS; attempt += 1) {
        const now = this.options.now();
        // Another instance's 429: hold what this one leased before it, too.
        if (current.value.pausedUntil > now) this.pause(current.value.pausedUntil, false);
        const { calls, nextAt } = grantable(current.value, this.pool.limits, now, this.options.timing);
        if (calls === 0) {
          this.cached = current.etag === undefined ? undefined : current;
          this.notBefore = Math.max(this.notBefore, nextAt);
          return;
        }
        const want = Math.min(calls, this.options.maxLease, Math.max(1, this.waiting));
        const next = recordGrant(current.value, want, now, this.options.timing);
        const etag = await this.options.store.writeLedger(this.pool.name, next, current.etag);
        if (etag !== undefined) {
          this.cached = { value: next, etag };
          const end = now + this.options.timing.leaseMs;
          for (let i = 0; i < want; i += 1) this.leased.push(end);
          return;
        }
        // Another instance leased first: read what it wrote and decide again.
        this.cached = undefined;
        current = await this.read();
      }
      // Heavy contention: let the others have this round; ask again shortly.
      this.notBefore = Math.max(this.notBefore, this.options.now() + 50);
    } catch (error) {
      this.cached = undefined;
      this.failed('leasing calls', error);
    }
  }

  private async writePause(until: number): Promise<void> {
    for (let attempt = 0; attempt < WRITE_ATTEMPTS; attempt += 1) {
      const current = await this.read();
      if (current.value.pausedUntil >= until) return;
      const next: Ledger = { ...current.value, pausedUntil: until };
      const etag = await this.options.store.writeLedger(this.pool.name, next, current.etag);
      if (etag !== undefined) {
        this.cached = { value: next, etag };
        return;
      }
    }
  }

  private failed(what: string, error: unknown): void {
    const now = this.options.now();
    if (now >= this.fallbackUntil) {
      this.options.log.warn(
        'Shared Defender API budget unavailable; this instance limits its own calls until the state table answers',
        {
          pool: this.pool.name,
          while: what,
          error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
        },
      );
    }
    this.fallbackUntil = now + this.options.fallbackMs;
  }
}

/** {@link Budget} shared by every instance through the state table. */
export class SharedBudget implements Budget {
  private readonly pools = new Map<string, SharedPool>();
  private readonly local: LocalBudget;
  private readonly options: Required<Omit<SharedBudgetOptions, 'limits'>>;

  constructor(private readonly settings: SharedBudgetOptions) {
    this.local = new LocalBudget(settings.limits, settings.now);
    this.options = {
      store: settings.store,
      now: settings.now,
      log: settings.log,
      timing: settings.timing ?? DEFAULT_LEASE_TIMING,
      maxLease: settings.maxLease ?? 10,
      fallbackMs: settings.fallbackMs ?? 30_000,
    };
  }

  private pool(api: MdeApi, spender: Spender): SharedPool {
    const pool = poolOf(api, spender, this.settings.limits);
    let shared = this.pools.get(pool.name);
    if (!shared) {
      shared = new SharedPool(pool, this.options, this.local);
      this.pools.set(pool.name, shared);
    }
    return shared;
  }

  acquire(api: MdeApi, spender: Spender): Promise<Acquisition> {
    return this.pool(api, spender).acquire();
  }

  pause(api: MdeApi, until: number): void {
    this.local.pause(api, until);
    this.pool(api, 'release').pause(until);
    if (poolOf(api, 'tracker', this.settings.limits).spender === 'tracker')
      this.pool(api, 'tracker').pause(until);
  }
}
