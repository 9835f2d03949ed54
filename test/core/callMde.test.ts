/**
 * callMde and the shared budget: a call is sent only on a slot whose lease still covers it (a slot reserved
 * before the look-ups and checks may have run out by the time the release is sent), and the bearer token is
 * at hand before the slot is taken.
 */
import { reserve, type BudgetLimits, type Slot } from '../../src/core/budget';
import { callMde, type CallContext } from '../../src/core/callMde';
import type { AttemptOptions, ApiResponse, Clock } from '../../src/core/ports';
import { UnisolateError } from '../../src/core/errors';
import { SharedBudget, type LedgerStore } from '../../src/core/sharedBudget';
import { FakeClock, FakeDefender, MACHINE_ID, memoryStore, recordingLogger } from '../support/fakes';

const LIMITS: BudgetLimits = {
  perApi: { perMinute: 100, perHour: 1500 },
  tracker: { perMinute: 2, perHour: 60 },
};

/** A Defender API that notes when each release arrives, and (optionally) takes a while to get its token. */
class TimedDefender extends FakeDefender {
  readonly sent: number[] = [];
  private tokenReady = false;
  constructor(
    private readonly clock: Clock,
    private readonly tokenDelayMs = 0,
  ) {
    super();
  }

  private async token(): Promise<void> {
    if (this.tokenReady) return;
    await this.clock.sleep(this.tokenDelayMs);
    this.tokenReady = true;
  }

  override async ensureCredentials(): Promise<void> {
    await this.token();
  }

  override async unisolate(
    machineId: string,
    comment: string,
    options: AttemptOptions,
  ): Promise<ApiResponse> {
    await this.token();
    this.sent.push(this.clock.now());
    return super.unisolate(machineId, comment, options);
  }
}

function context(
  defender: TimedDefender,
  budget: SharedBudget,
  clock: Clock,
  reserved?: Map<'unisolate', Slot>,
  deadlineMs = 30_000,
): CallContext {
  return {
    defender,
    budget,
    spender: 'release',
    reserved,
    clock,
    random: () => 0.5,
    deadline: clock.now() + deadlineMs,
    requestTimeoutMs: 10_000,
  };
}

const release = (ctx: CallContext) =>
  callMde(ctx, 'unisolate', 'the release', (o) => ctx.defender.unisolate(MACHINE_ID, 'clean', o));

/** The latest time the ledger counted a granted call of `pool` as possibly sent (see `Ledger`). */
async function coveredUntil(store: LedgerStore, pool: string): Promise<{ calls: number; until: number }> {
  const ledger = await store.readLedger(pool);
  const grants = ledger?.value.grants ?? [];
  return {
    calls: grants.reduce((sum, [, calls]) => sum + calls, 0),
    until: Math.max(...grants.map(([at]) => at)),
  };
}

describe('callMde on the shared budget', () => {
  it('sends on a fresh slot when the reserved one outlived its lease', async () => {
    const { store } = memoryStore();
    const clock = new FakeClock();
    const budget = new SharedBudget({ store, limits: LIMITS, now: clock.now, log: recordingLogger() });
    const defender = new TimedDefender(clock);
    const reserved = await reserve(budget, ['unisolate'], 'release');
    if (!reserved.granted) throw new Error('expected a reservation');
    // The look-up, the isolation check and the device claim took a while.
    clock.time += 5_000;
    await release(context(defender, budget, clock, new Map(reserved.slots) as Map<'unisolate', Slot>));
    expect(defender.sent).toHaveLength(1);
    const ledger = await coveredUntil(store, 'unisolate');
    // The expired reservation and the fresh slot the call went out on.
    expect(ledger.calls).toBe(2);
    expect(ledger.until).toBeGreaterThanOrEqual(defender.sent[0]!);
  });

  it('gets the bearer token before it takes the slot, so a slow token does not outlast the lease', async () => {
    const { store } = memoryStore();
    const clock = new FakeClock();
    const budget = new SharedBudget({ store, limits: LIMITS, now: clock.now, log: recordingLogger() });
    // Key Vault and Entra ID take 4 s on a cold start.
    const defender = new TimedDefender(clock, 4_000);
    await release(context(defender, budget, clock));
    const ledger = await coveredUntil(store, 'unisolate');
    expect(ledger.calls).toBe(1);
    expect(ledger.until).toBeGreaterThanOrEqual(defender.sent[0]!);
  });

  it('never lets MDE see more than the per-minute limit, however long reserved slots are held', async () => {
    const { store } = memoryStore();
    const clock = new FakeClock();
    const instances = [0, 1, 2].map(
      () => new SharedBudget({ store, limits: LIMITS, now: clock.now, log: recordingLogger() }),
    );
    const defender = new TimedDefender(clock);
    let seed = 11;
    const random = (): number => {
      seed = (seed * 48271) % 2147483647;
      return seed / 2147483647;
    };
    // Releases holding their reservation until `sendAt` (their look-ups and checks take that long).
    const held: { sendAt: number; budget: SharedBudget; slots: Map<'unisolate', Slot> }[] = [];
    const end = clock.time + 5 * 60_000;
    while (clock.time < end) {
      for (const budget of instances) {
        for (let i = 0; i < 8; i += 1) {
          const answer = await reserve(budget, ['unisolate'], 'release');
          if (!answer.granted) break;
          // Half are sent at once, half after a minute of checks and retries.
          const holdMs = random() < 0.5 ? 0 : 60_000 + random() * 3_000;
          held.push({
            sendAt: clock.time + holdMs,
            budget,
            slots: new Map(answer.slots) as Map<'unisolate', Slot>,
          });
        }
      }
      for (const call of held.filter((h) => h.sendAt <= clock.time)) {
        held.splice(held.indexOf(call), 1);
        // No waiting for budget: a call that has none is not sent (it would be parked).
        await release(context(defender, call.budget, clock, call.slots, 1)).catch((error: unknown) => {
          if (!(error instanceof UnisolateError && error.code === 'MdeThrottled')) throw error;
          for (const slot of call.slots.values()) slot.release(false);
        });
      }
      clock.time += 250;
    }
    const arrivals = [...defender.sent].sort((a, b) => a - b);
    let from = 0;
    let most = 0;
    for (let j = 0; j < arrivals.length; j += 1) {
      while (arrivals[from]! <= arrivals[j]! - 60_000) from += 1;
      most = Math.max(most, j - from + 1);
    }
    expect(most).toBeLessThanOrEqual(LIMITS.perApi.perMinute);
    // The budget was used, not just refused.
    expect(arrivals.length).toBeGreaterThan(200);
  });
});
