/**
 * The Defender API call budget. MDE limits every API separately (each API's page states its own limit) to
 * 100 calls per minute and 1500 per hour per app and tenant, e.g.
 * https://learn.microsoft.com/defender-endpoint/api/unisolate-machine#limitations and
 * https://learn.microsoft.com/defender-endpoint/api/get-machineactions-collection#limitations.
 *
 * So the budget is a set of **pools**, one per API, and for the one API the tracker shares with releases
 * (list machine actions) one pool per spender: the tracker's small share and the releases' rest, so polling
 * never takes what releases need. A caller asks a pool for one call ({@link Budget.acquire}) and gets a slot or
 * the time until one frees; the loops that wait are elsewhere (`callMde.ts`, the release pipeline).
 *
 * Two implementations: {@link LocalBudget} (this instance only: sliding windows counted at each call's answer)
 * and `SharedBudget` (`sharedBudget.ts`: every instance and trigger of the app, through a ledger in the state
 * table). This module also holds the ledger's arithmetic, as pure functions.
 */
import { RateLimiter } from './rateLimiter';

/** The Defender APIs this app calls, each with its own limit. */
export type MdeApi = 'unisolate' | 'listMachineActions' | 'listMachines' | 'getMachine' | 'getMachineAlerts';

/** Who spends a call: a release (including its look-ups and checks), or the tracker's polls. */
export type Spender = 'release' | 'tracker';

/** Calls allowed per sliding minute and per sliding hour. */
export interface WindowLimits {
  perMinute: number;
  perHour: number;
}

/** The limits the budget enforces. */
export interface BudgetLimits {
  /** Per API (MDE: 100 / 1500; lower when another tool shares the app registration). */
  perApi: WindowLimits;
  /** The tracker's share of the APIs it polls (taken out of the per-API limit). */
  tracker: WindowLimits;
}

/** MDE's documented limits per API and app. */
export const MDE_LIMITS: Readonly<WindowLimits> = { perMinute: 100, perHour: 1500 };

export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;

/** A pool: one API, and for APIs the tracker polls, one spender. */
export interface Pool {
  api: MdeApi;
  spender: Spender;
  /** Stable name (ledger row key): the API, `.tracker` for the tracker's share. */
  name: string;
  limits: WindowLimits;
}

/** APIs the tracker polls; its share of them is its own pool. */
const TRACKED_APIS: ReadonlySet<MdeApi> = new Set(['listMachineActions']);

/** The pool a call of `api` by `spender` draws from. */
export function poolOf(api: MdeApi, spender: Spender, limits: BudgetLimits): Pool {
  if (!TRACKED_APIS.has(api)) return { api, spender: 'release', name: api, limits: limits.perApi };
  if (spender === 'tracker') return { api, spender, name: `${api}.tracker`, limits: limits.tracker };
  return {
    api,
    spender,
    name: api,
    limits: {
      perMinute: Math.max(1, limits.perApi.perMinute - limits.tracker.perMinute),
      perHour: Math.max(1, limits.perApi.perHour - limits.tracker.perHour),
    },
  };
}

/** A granted call. Give it back once: `used` when the call was sent, not used when it was never sent. */
export interface Slot {
  /**
   * The call may be sent on this slot until this time (ms since epoch): a shared lease's end less the time to
   * send it (see `Ledger`), `Infinity` for this instance's limiter (it counts a call when its answer arrives).
   * A slot held past it is given back unused and a fresh one taken.
   */
  readonly validUntil: number;
  release(used: boolean): void;
}

/** Answer of {@link Budget.acquire}: a slot now, or how long until one frees. */
export type Acquisition = { granted: true; slot: Slot } | { granted: false; waitMs: number };

/** The budget of Defender API calls. Implementations never throw: a store outage degrades, it never fails. */
export interface Budget {
  /** One call of `api` now, or the time until one frees. Never waits for that time itself. */
  acquire(api: MdeApi, spender: Spender): Promise<Acquisition>;
  /** MDE answered 429 with `Retry-After`: no call of `api` until `until` (ms since epoch), on any instance. */
  pause(api: MdeApi, until: number): void;
}

/** Slots held together: one per API a release will call. */
export type Reservation = ReadonlyMap<MdeApi, Slot>;

/**
 * Reserves one call of each of `apis` together, all or none: a release takes what it needs (look-up, check,
 * release) before it starts, so that it never spends a look-up and then finds no budget for the release
 * itself. The pools are asked at once (each may need a ledger write). Returns the slots, or the longest wait
 * among the APIs that had none; nothing is then held, and nothing is held either when an acquire throws.
 */
export async function reserve(
  budget: Budget,
  apis: readonly MdeApi[],
  spender: Spender,
): Promise<{ granted: true; slots: Reservation } | { granted: false; waitMs: number }> {
  const wanted = [...new Set(apis)];
  const answers = await Promise.allSettled(wanted.map((api) => budget.acquire(api, spender)));
  const slots = new Map<MdeApi, Slot>();
  let waitMs = 0;
  let failed: PromiseRejectedResult | undefined;
  for (const [i, answer] of answers.entries()) {
    if (answer.status === 'rejected') failed ??= answer;
    else if (answer.value.granted) slots.set(wanted[i]!, answer.value.slot);
    else waitMs = Math.max(waitMs, answer.value.waitMs, 1);
  }
  if (!failed && waitMs === 0) return { granted: true, slots };
  for (const slot of slots.values()) slot.release(false);
  if (failed) throw failed.reason;
  return { granted: false, waitMs };
}

/**
 * This instance's budget: one sliding-window limiter per pool, each call counted when its answer arrives
 * (see `rateLimiter.ts`). Used without durable state (a single instance), and by `SharedBudget` while the
 * state table is unreachable.
 */
export class LocalBudget implements Budget {
  private readonly limiters = new Map<string, RateLimiter>();

  constructor(
    private readonly limits: BudgetLimits,
    private readonly now: () => number,
  ) {}

  private limiter(api: MdeApi, spender: Spender): RateLimiter {
    const pool = poolOf(api, spender, this.limits);
    let limiter = this.limiters.get(pool.name);
    if (!limiter) {
      limiter = new RateLimiter(
        [
          { limit: pool.limits.perMinute, windowMs: MINUTE_MS },
          { limit: pool.limits.perHour, windowMs: HOUR_MS },
        ],
        this.now,
      );
      this.limiters.set(pool.name, limiter);
    }
    return limiter;
  }

  acquire(api: MdeApi, spender: Spender): Promise<Acquisition> {
    return Promise.resolve(this.limiter(api, spender).tryAcquire());
  }

  pause(api: MdeApi, until: number): void {
    this.limiter(api, 'release').blockUntil(until);
    if (TRACKED_APIS.has(api)) this.limiter(api, 'tracker').blockUntil(until);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The shared ledger (pure). One ledger per pool lives in the state table; instances lease calls from it.
// ---------------------------------------------------------------------------------------------------------

/**
 * A pool's ledger: the calls granted (leased) by any instance, and a pause after a 429.
 *
 * A lease granted at `g` may be used (sent) until `g + leaseMs`; it is recorded at `r = g + leaseMs`, the
 * latest moment its calls can start. MDE counts a call when it arrives, somewhere in `[g, r + marginMs]`
 * (`marginMs` covers network latency and clock skew between instances). A new grant at `t` therefore counts
 * every grant with `r >= t - window - marginMs`: then no window of MDE's, wherever it lies, can hold more than
 * the limit (the grant that is latest within any window saw all the others in it).
 */
export interface Ledger {
  /** `[r, calls]`, ascending by `r`. Recent grants exact; older ones folded into whole minutes (rounded up). */
  grants: [number, number][];
  /** No grant before this time (ms since epoch): MDE answered 429 with this `Retry-After`. */
  pausedUntil: number;
}

/** How leases are recorded; see {@link Ledger}. */
export interface LeaseTiming {
  /** How long a leased call may wait before it is sent. */
  leaseMs: number;
  /** Allowance for latency and clock skew between instances. */
  marginMs: number;
}

/** The empty ledger. */
export const EMPTY_LEDGER: Ledger = { grants: [], pausedUntil: 0 };

function windowUsage(grants: readonly [number, number][], from: number): number {
  let used = 0;
  for (let i = grants.length - 1; i >= 0; i -= 1) {
    const [at, calls] = grants[i]!;
    if (at < from) break;
    used += calls;
  }
  return used;
}

/** When enough of the counted grants have left a window that `limit - 1` remain (one more then fits). */
function windowFrees(
  grants: readonly [number, number][],
  from: number,
  used: number,
  limit: number,
  windowMs: number,
  marginMs: number,
): number {
  let excess = used - (limit - 1);
  for (const [at, calls] of grants) {
    if (at < from) continue;
    excess -= calls;
    if (excess <= 0) return at + windowMs + marginMs + 1;
  }
  return Number.POSITIVE_INFINITY;
}

/**
 * How many calls can be granted at `now`, and (when none) the earliest time one more fits. Pure.
 */
export function grantable(
  ledger: Ledger,
  limits: WindowLimits,
  now: number,
  timing: LeaseTiming,
): { calls: number; nextAt: number } {
  const minuteFrom = now - MINUTE_MS - timing.marginMs;
  const hourFrom = now - HOUR_MS - timing.marginMs;
  const inMinute = windowUsage(ledger.grants, minuteFrom);
  const inHour = windowUsage(ledger.grants, hourFrom);
  const calls = Math.max(0, Math.min(limits.perMinute - inMinute, limits.perHour - inHour));
  if (now < ledger.pausedUntil) return { calls: 0, nextAt: ledger.pausedUntil };
  if (calls > 0) return { calls, nextAt: now };
  const minuteAt =
    inMinute >= limits.perMinute
      ? windowFrees(ledger.grants, minuteFrom, inMinute, limits.perMinute, MINUTE_MS, timing.marginMs)
      : now;
  const hourAt =
    inHour >= limits.perHour
      ? windowFrees(ledger.grants, hourFrom, inHour, limits.perHour, HOUR_MS, timing.marginMs)
      : now;
  return { calls: 0, nextAt: Math.max(minuteAt, hourAt, now + 1) };
}

/**
 * The ledger with `calls` more granted at `now` (recorded at `now + leaseMs`), old grants folded into minutes
 * and grants no window can see any more dropped. Pure.
 */
export function recordGrant(ledger: Ledger, calls: number, now: number, timing: LeaseTiming): Ledger {
  const at = now + timing.leaseMs;
  // Folding rounds a grant up to its minute's end; only grants a minute past the minute window are folded,
  // so a folded grant is never counted in a minute window again.
  const foldBefore = now - 2 * MINUTE_MS - timing.marginMs;
  const dropBefore = now - HOUR_MS - timing.marginMs - MINUTE_MS;
  const kept: [number, number][] = [];
  for (const [time, count] of ledger.grants) {
    if (time < dropBefore) continue;
    kept.push([time < foldBefore ? Math.ceil(time / MINUTE_MS) * MINUTE_MS : time, count]);
  }
  kept.push([at, calls]);
  kept.sort((a, b) => a[0] - b[0]);
  const grants: [number, number][] = [];
  for (const [time, count] of kept) {
    const last = grants[grants.length - 1];
    if (last && last[0] === time) last[1] += count;
    else grants.push([time, count]);
  }
  return { grants, pausedUntil: ledger.pausedUntil };
}

/** Whether `value` is a well-formed ledger (what the state table holds is re-checked when read). */
export function isLedger(value: unknown): value is Ledger {
  if (typeof value !== 'object' || value === null) return false;
  const { grants, pausedUntil } = value as Partial<Ledger>;
  return (
    typeof pausedUntil === 'number' &&
    Array.isArray(grants) &&
    grants.every(
      (g) => Array.isArray(g) && g.length === 2 && typeof g[0] === 'number' && typeof g[1] === 'number',
    )
  );
}
