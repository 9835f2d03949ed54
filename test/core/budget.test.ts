/**
 * The Defender call budget: pools per API, the ledger arithmetic, the shared (table) budget across
 * instances, and reserving calls ahead of a run.
 */
import {
  EMPTY_LEDGER,
  grantable,
  LocalBudget,
  poolOf,
  recordGrant,
  reserve,
  type Acquisition,
  type Budget,
  type BudgetLimits,
  type Ledger,
  type MdeApi,
} from '../../src/core/budget';
import { DEFAULT_LEASE_TIMING, SharedBudget, type LedgerStore } from '../../src/core/sharedBudget';
import { memoryStore, recordingLogger } from '../support/fakes';

const timing = DEFAULT_LEASE_TIMING;
/** One release call a minute per API, nothing for the tracker: the second call of a minute is refused. */
const ONE_PER_MINUTE: BudgetLimits = {
  perApi: { perMinute: 1, perHour: 10 },
  tracker: { perMinute: 0, perHour: 0 },
};
/** A shared budget of {@link ONE_PER_MINUTE} over an in-memory table. */
function oneCallPerMinute(): SharedBudget {
  return new SharedBudget({
    store: memoryStore().store,
    limits: ONE_PER_MINUTE,
    now: manualClock().now,
    log: recordingLogger(),
  });
}
const LIMITS: BudgetLimits = {
  perApi: { perMinute: 100, perHour: 1500 },
  tracker: { perMinute: 2, perHour: 60 },
};

describe('pools', () => {
  it('gives each API its own pool, and the tracker its share of the actions it polls', () => {
    expect(poolOf('unisolate', 'release', LIMITS)).toMatchObject({
      name: 'unisolate',
      limits: LIMITS.perApi,
    });
    expect(poolOf('unisolate', 'tracker', LIMITS)).toMatchObject({ name: 'unisolate', spender: 'release' });
    expect(poolOf('listMachineActions', 'tracker', LIMITS)).toMatchObject({
      name: 'listMachineActions.tracker',
      limits: { perMinute: 2, perHour: 60 },
    });
    expect(poolOf('listMachineActions', 'release', LIMITS).limits).toEqual({ perMinute: 98, perHour: 1440 });
  });
});

describe('ledger arithmetic', () => {
  const t0 = 1_000_000_000;

  it('grants the whole minute at first, then nothing until the lease has left the window', () => {
    expect(grantable(EMPTY_LEDGER, LIMITS.perApi, t0, timing)).toEqual({ calls: 100, nextAt: t0 });
    const ledger = recordGrant(EMPTY_LEDGER, 100, t0, timing);
    expect(ledger.grants).toEqual([[t0 + timing.leaseMs, 100]]);
    const full = grantable(ledger, LIMITS.perApi, t0 + 1000, timing);
    expect(full.calls).toBe(0);
    // Counted from the end of the lease, plus the margin for latency and clock skew.
    expect(full.nextAt).toBe(t0 + timing.leaseMs + 60_000 + timing.marginMs + 1);
    expect(grantable(ledger, LIMITS.perApi, full.nextAt, timing).calls).toBe(100);
  });

  it('keeps the hour: 1500 calls, then none until the first lease is an hour old', () => {
    let ledger: Ledger = EMPTY_LEDGER;
    let now = t0;
    for (let minute = 0; minute < 15; minute += 1) {
      ledger = recordGrant(ledger, 100, now, timing);
      now += 62_100;
    }
    const answer = grantable(ledger, LIMITS.perApi, now, timing);
    expect(answer.calls).toBe(0);
    expect(answer.nextAt).toBeGreaterThanOrEqual(t0 + timing.leaseMs + 3_600_000);
    expect(answer.nextAt).toBeLessThan(t0 + timing.leaseMs + 3_600_000 + 61_000);
    // Old grants are folded into minutes: the ledger stays small.
    expect(ledger.grants.length).toBeLessThanOrEqual(15);
  });

  it('honours a pause after a 429', () => {
    const paused: Ledger = { grants: [], pausedUntil: t0 + 30_000 };
    expect(grantable(paused, LIMITS.perApi, t0, timing)).toEqual({ calls: 0, nextAt: t0 + 30_000 });
  });
});

/** A manual clock shared by several instances. */
function manualClock(start = 1_700_000_000_000) {
  const clock = { time: start, now: () => clock.time };
  return clock;
}

describe('SharedBudget', () => {
  it('several instances never let MDE see more than a pool allows in any minute or hour, and use ~all of it', async () => {
    const store = memoryStore().store;
    const clock = manualClock();
    const limits: BudgetLimits = { perApi: { perMinute: 100, perHour: 400 }, tracker: LIMITS.tracker };
    const instances = [0, 1, 2].map(
      () => new SharedBudget({ store, limits, now: clock.now, log: recordingLogger() }),
    );
    const arrivals: number[] = [];
    const perInstance = [0, 0, 0];
    let random = 7;
    const nextRandom = (): number => {
      random = (random * 48271) % 2147483647;
      return random / 2147483647;
    };
    const end = clock.time + 10 * 60_000;
    while (clock.time < end) {
      for (const [n, budget] of instances.entries()) {
        // Eight releases waiting on each instance, as with maxConcurrentCalls 8.
        for (let i = 0; i < 8; i += 1) {
          const answer = await budget.acquire('unisolate', 'release');
          if (!answer.granted) break;
          // A leased call is sent some time within its lease; MDE counts it when it arrives.
          // Adversarial: each call is sent at once or at the last moment of its lease.
          arrivals.push(clock.time + (nextRandom() < 0.5 ? 0 : timing.leaseMs - 150));
          answer.slot.release(true);
          perInstance[n]! += 1;
        }
      }
      clock.time += 100;
    }
    arrivals.sort((a, b) => a - b);
    let minuteStart = 0;
    let maxInMinute = 0;
    for (let j = 0; j < arrivals.length; j += 1) {
      while (arrivals[minuteStart]! <= arrivals[j]! - 60_000) minuteStart += 1;
      maxInMinute = Math.max(maxInMinute, j - minuteStart + 1);
    }
    expect(maxInMinute).toBeLessThanOrEqual(100);
    // 10 minutes against 400/hour: the hour caps it.
    expect(arrivals.length).toBe(400);
    // Every instance got its turn.
    for (const count of perInstance) expect(count).toBeGreaterThan(50);
    // The first 4 minutes carry the whole hour's budget, each minute close to its limit.
    expect(arrivals.filter((t) => t < arrivals[0]! + 4 * 62_000).length).toBe(400);
  });

  it('a 429 on one instance pauses that API on every instance', async () => {
    const store = memoryStore().store;
    const clock = manualClock();
    const [a, b] = [0, 1].map(
      () => new SharedBudget({ store, limits: LIMITS, now: clock.now, log: recordingLogger() }),
    );
    a!.pause('unisolate', clock.time + 30_000);
    await new Promise((resolve) => setImmediate(resolve));
    const answer = await b!.acquire('unisolate', 'release');
    expect(answer).toEqual({ granted: false, waitMs: 30_000 });
    // Other APIs are not paused.
    expect((await b!.acquire('listMachines', 'release')).granted).toBe(true);
  });

  it('falls back to its own limits when the state table is down, and says so once', async () => {
    const { store, table } = memoryStore();
    table.down = true;
    const clock = manualClock();
    const log = recordingLogger();
    const budget = new SharedBudget({ store, limits: LIMITS, now: clock.now, log });
    for (let i = 0; i < 100; i += 1) {
      const answer = await budget.acquire('unisolate', 'release');
      expect(answer.granted).toBe(true);
      if (answer.granted) answer.slot.release(true);
    }
    expect((await budget.acquire('unisolate', 'release')).granted).toBe(false);
    expect(log.lines.filter((l) => l.includes('Shared Defender API budget unavailable'))).toHaveLength(1);
  });

  it('gives an unused call back while its lease lasts', async () => {
    const budget = oneCallPerMinute();
    const first = await budget.acquire('unisolate', 'release');
    expect(first.granted).toBe(true);
    if (first.granted) first.slot.release(false);
    expect((await budget.acquire('unisolate', 'release')).granted).toBe(true);
  });
});

describe('SharedBudget after a 429', () => {
  const tick = () => new Promise((resolve) => setImmediate(resolve));

  it('grants nothing until the pause ends, not even calls leased before it or given back during it', async () => {
    const store = memoryStore().store;
    const clock = manualClock();
    const budget = new SharedBudget({ store, limits: LIMITS, now: clock.now, log: recordingLogger() });
    // One lease of three calls, all handed out before the 429.
    const held = await Promise.all([0, 1, 2].map(() => budget.acquire('unisolate', 'release')));
    expect(held.every((answer) => answer.granted)).toBe(true);
    budget.pause('unisolate', clock.time + 30_000);
    await tick();
    // Two of them were never sent: given back while the pause lasts.
    for (const answer of held.slice(1)) if (answer.granted) answer.slot.release(false);
    expect(await budget.acquire('unisolate', 'release')).toEqual({ granted: false, waitMs: 30_000 });
    clock.time += 1_000;
    expect(await budget.acquire('unisolate', 'release')).toEqual({ granted: false, waitMs: 29_000 });
    clock.time += 29_000;
    expect((await budget.acquire('unisolate', 'release')).granted).toBe(true);
  });

  it('does not hand out calls whose lease was being written when the 429 came', async () => {
    const { store } = memoryStore();
    const clock = manualClock();
    let open = (): void => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    // A state table slow to answer: the lease write is still in flight when MDE answers 429.
    const slow: LedgerStore = {
      readLedger: (pool) => store.readLedger(pool),
      writeLedger: async (pool, ledger, etag) => {
        await gate;
        return store.writeLedger(pool, ledger, etag);
      },
    };
    const budget = new SharedBudget({ store: slow, limits: LIMITS, now: clock.now, log: recordingLogger() });
    const pending = budget.acquire('unisolate', 'release');
    await tick();
    await tick();
    budget.pause('unisolate', clock.time + 30_000);
    open();
    expect(await pending).toEqual({ granted: false, waitMs: 30_000 });
    expect(await budget.acquire('unisolate', 'release')).toEqual({ granted: false, waitMs: 30_000 });
  });

  it('takes a leased call back once however often it is given back', async () => {
    const budget = oneCallPerMinute();
    const first = await budget.acquire('unisolate', 'release');
    if (!first.granted) throw new Error('expected a call');
    first.slot.release(false);
    first.slot.release(false);
    expect((await budget.acquire('unisolate', 'release')).granted).toBe(true);
    expect((await budget.acquire('unisolate', 'release')).granted).toBe(false);
  });
});

describe('reserve', () => {
  it('takes one call of each API or none', async () => {
    const clock = manualClock();
    const budget = new LocalBudget(ONE_PER_MINUTE, clock.now);
    const held = await budget.acquire('unisolate', 'release');
    expect(held.granted).toBe(true);
    const refused = await reserve(budget, ['listMachineActions', 'unisolate'], 'release');
    expect(refused).toEqual({ granted: false, waitMs: expect.any(Number) });
    // The list-actions call it could have had was given back, not spent.
    const reserved = await reserve(budget, ['listMachineActions'], 'release');
    expect(reserved.granted).toBe(true);
  });

  /** A budget whose answers the test gives: every acquire waits until `answer(api, ...)`. */
  function scriptedBudget() {
    const pending = new Map<MdeApi, (answer: Acquisition | Error) => void>();
    const released: [MdeApi, boolean][] = [];
    const budget: Budget = {
      acquire: (api) =>
        new Promise<Acquisition>((resolve, reject) =>
          pending.set(api, (answer) => (answer instanceof Error ? reject(answer) : resolve(answer))),
        ),
      pause: () => undefined,
    };
    const slot = (api: MdeApi): Acquisition => ({
      granted: true,
      slot: { validUntil: Infinity, release: (used) => released.push([api, used]) },
    });
    return { budget, pending, released, slot };
  }

  it('asks for every API at once', async () => {
    const { budget, pending, slot } = scriptedBudget();
    const reserving = reserve(budget, ['listMachines', 'listMachineActions', 'unisolate'], 'release');
    await new Promise((resolve) => setImmediate(resolve));
    expect([...pending.keys()]).toEqual(['listMachines', 'listMachineActions', 'unisolate']);
    for (const [api, answer] of pending) answer(slot(api));
    expect((await reserving).granted).toBe(true);
  });

  it('gives back the calls it got when another could not be had', async () => {
    const { budget, released, slot } = scriptedBudget();
    // The unisolate pool's store read fails; the look-up's pool answers.
    budget.acquire = (api) =>
      api === 'unisolate' ? Promise.reject(new Error('budget unavailable')) : Promise.resolve(slot(api));
    await expect(reserve(budget, ['listMachines', 'unisolate'], 'release')).rejects.toThrow(
      'budget unavailable',
    );
    await new Promise((resolve) => setImmediate(resolve));
    expect(released).toEqual([['listMachines', false]]);
  });
});
