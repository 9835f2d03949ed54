/**
 * The tracker over fakes and the store on an in-memory table: one list call polls every tracked release, one
 * completion per release, expiry, racing trackers, its own budget share, polling less as releases age.
 */
import type { Outcome } from '../../src/core/outcome';
import { handleRequest, type PipelineDeps } from '../../src/core/pipeline';
import { nextPollDelayMs, trackReleases, type TrackerDeps } from '../../src/core/tracking';
import { FakeDefender, fakeDeps, localBudget, MACHINE_ID, memoryStore, stateDeps } from '../support/fakes';

const HOUR = 3_600_000;
const noChecks = { checkIsolationState: false, releasePolicy: null };

/** `count` accepted releases (distinct devices), and a tracker over the same store and clock. */
async function accepted(count = 1, defender = new FakeDefender()) {
  const fake = fakeDeps(defender);
  const { store } = memoryStore();
  const deps: PipelineDeps = { ...fake.deps, safety: noChecks, state: stateDeps(store) };
  const outcomes = [];
  for (let i = 0; i < count; i += 1) {
    const machineId = i === 0 ? MACHINE_ID : i.toString(16).padStart(40, 'f');
    const answer = await handleRequest(
      {
        body: { machineId, comment: 'clean', correlationId: `INC7-${i}` },
        trigger: 'http',
        canRedeliver: false,
        caller: null,
      },
      deps,
    );
    outcomes.push(answer.outcomes[0]!);
  }
  const tracker: TrackerDeps = { ...fake.deps, store, trackMaxMs: 24 * HOUR, send: () => undefined };
  return { ...fake, store, outcomes, outcome: outcomes[0]!, tracker };
}

function list(...actions: { id: string; status: string; machineId?: string; created?: string }[]) {
  return {
    status: 200,
    body: {
      value: actions.map((a) => ({
        id: a.id,
        type: 'Unisolate',
        status: a.status,
        machineId: a.machineId ?? MACHINE_ID,
        creationDateTimeUtc: a.created ?? '2026-11-28T10:00:00Z',
        lastUpdateDateTimeUtc: '2026-11-28T10:03:00Z',
      })),
    },
  };
}

describe('trackReleases', () => {
  it('follows Pending -> InProgress -> Succeeded and sends one Released completion', async () => {
    const { store, outcome, tracker, defender, telemetry, clock } = await accepted();
    const id = outcome.machineAction!.id;
    defender.listScript = [
      list({ id, status: 'Pending' }),
      list({ id, status: 'InProgress' }),
      list({ id, status: 'Succeeded' }),
    ];
    expect(await trackReleases(tracker)).toEqual([]);
    clock.time += 60_000;
    expect(await trackReleases(tracker)).toEqual([]);
    clock.time += 60_000;
    const completions = await trackReleases(tracker);
    expect(completions).toEqual([
      expect.objectContaining({
        correlationId: 'INC7-0',
        machineId: MACHINE_ID,
        status: 'Released',
        phase: 'completed',
        error: null,
        trigger: 'http',
        receivedAt: outcome.receivedAt,
        machineAction: expect.objectContaining({ id, status: 'Succeeded' }),
      }),
    ]);
    expect(defender.listCalls[0]).toMatch(
      /^type eq 'Unisolate' and creationDateTimeUtc ge 2026-11-28T09:55:00\.000Z$/,
    );
    expect(telemetry.completions).toHaveLength(1);
    const [record] = await store.readReleases('INC7-0');
    expect(record?.value).toMatchObject({ state: 'completed', completion: { status: 'Released' } });
    expect(await store.listTracked(10)).toEqual([]);
    clock.time += 60_000;
    expect(await trackReleases(tracker)).toEqual([]);
  });

  it('polls every tracked release with one call', async () => {
    const { outcomes, tracker, defender } = await accepted(50);
    defender.listScript = [
      list(
        ...outcomes.map((o) => ({ id: o.machineAction!.id, status: 'Succeeded', machineId: o.machineId! })),
      ),
    ];
    const completions = await trackReleases(tracker);
    expect(completions).toHaveLength(50);
    expect(defender.listCalls).toHaveLength(1);
  });

  it.each(['Failed', 'TimeOut', 'Cancelled'])(
    'reports ReleaseFailed when the action ends %s',
    async (end) => {
      const { outcome, tracker, defender } = await accepted();
      defender.listScript = [list({ id: outcome.machineAction!.id, status: end })];
      const [completion] = await trackReleases(tracker);
      expect(completion).toMatchObject({
        status: 'ReleaseFailed',
        error: { code: 'ReleaseActionFailed', message: expect.stringMatching(/still isolated/) },
      });
    },
  );

  it('sends TrackingExpired after TRACK_MAX_HOURS without polling again', async () => {
    const { tracker, defender, clock } = await accepted();
    clock.time += 24 * HOUR;
    const [completion] = await trackReleases(tracker);
    expect(completion).toMatchObject({ status: 'TrackingExpired', error: { code: 'TrackingExpired' } });
    expect(defender.listCalls).toHaveLength(0);
  });

  it('lets only one of two racing trackers send the completion', async () => {
    const { outcome, tracker, defender } = await accepted();
    const id = outcome.machineAction!.id;
    defender.listScript = [list({ id, status: 'Succeeded' }), list({ id, status: 'Succeeded' })];
    const [a, b] = await Promise.all([trackReleases(tracker), trackReleases(tracker)]);
    expect([...a, ...b]).toHaveLength(1);
  });

  it('finds the action of an AlreadyInProgress release recorded without it', async () => {
    const defender = new FakeDefender([
      { status: 400, body: { error: { code: 'ActiveRequestAlreadyExists', message: 'busy' } } },
    ]);
    // The look-up of the pending action fails, so the release is recorded without it.
    defender.listScript = [
      { status: 500, body: {} },
      { status: 500, body: {} },
      { status: 500, body: {} },
    ];
    const { outcome, tracker } = await accepted(1, defender);
    expect(outcome).toMatchObject({ status: 'AlreadyInProgress', machineAction: null });
    defender.listScript = [list({ id: 'found', status: 'Succeeded', created: '2026-11-28T09:58:00Z' })];
    const [completion] = await trackReleases(tracker);
    expect(completion).toMatchObject({ status: 'Released', machineAction: { id: 'found' } });
  });

  it("polls within its own share of the budget: none left, no call, and the releases' share untouched", async () => {
    const { tracker, defender, clock } = await accepted();
    const budget = localBudget(100, 1500, clock.now);
    for (let i = 0; i < 2; i += 1) {
      const slot = await budget.acquire('listMachineActions', 'tracker');
      if (slot.granted) slot.slot.release(true);
    }
    expect(await trackReleases({ ...tracker, budget, pollBudgetMs: 1000 })).toEqual([]);
    expect(defender.listCalls).toHaveLength(0);
    expect((await budget.acquire('listMachineActions', 'release')).granted).toBe(true);
  });

  it('sends a completion again on the next run when sending it failed', async () => {
    const { store, outcome, tracker, defender, telemetry, clock } = await accepted();
    defender.listScript = [list({ id: outcome.machineAction!.id, status: 'Succeeded' })];
    const sent: Outcome[][] = [];
    let failures = 1;
    const send = (completions: Outcome[]): void => {
      if (failures-- > 0) throw new Error('Service Bus unavailable');
      sent.push(completions);
    };
    await trackReleases({ ...tracker, send });
    expect(sent).toEqual([]);
    clock.time += 60_000;
    await trackReleases({ ...tracker, send });
    clock.time += 60_000;
    await trackReleases({ ...tracker, send });
    expect(sent).toEqual([
      [expect.objectContaining({ correlationId: 'INC7-0', status: 'Released', phase: 'completed' })],
    ]);
    expect(telemetry.completions).toHaveLength(1);
    const [record] = await store.readReleases('INC7-0');
    expect(record?.value).toMatchObject({ state: 'completed', completion: { status: 'Released' } });
    expect(await store.listTracked(10)).toEqual([]);
  });

  it('sends the completion of a run that stopped before sending it, once its claim has run out', async () => {
    const { outcome, tracker, defender, clock } = await accepted();
    defender.listScript = [list({ id: outcome.machineAction!.id, status: 'Succeeded' })];
    const sent: Outcome[][] = [];
    // The first run's instance stops while sending (it never returns).
    void trackReleases({ ...tracker, send: () => new Promise<void>(() => undefined) });
    await new Promise((resolve) => setTimeout(resolve, 10));
    const send = (completions: Outcome[]): void => void sent.push(completions);
    clock.time += 60_000;
    // Still claimed by the stopped run: another run leaves it to that one for now.
    await trackReleases({ ...tracker, send });
    expect(sent).toEqual([]);
    clock.time += 10 * 60_000;
    await trackReleases({ ...tracker, send });
    expect(sent).toEqual([[expect.objectContaining({ status: 'Released', phase: 'completed' })]]);
  });

  it('polls less often as releases age', async () => {
    const { tracker, defender, clock } = await accepted();
    clock.time += 3 * HOUR;
    await trackReleases(tracker);
    expect(defender.listCalls).toHaveLength(1);
    clock.time += 5 * 60_000;
    await trackReleases(tracker);
    expect(defender.listCalls).toHaveLength(1);
    clock.time += 10 * 60_000;
    await trackReleases(tracker);
    expect(defender.listCalls).toHaveLength(2);
    expect(nextPollDelayMs(60_000)).toBe(0);
    expect(nextPollDelayMs(30 * 60_000)).toBe(5 * 60_000);
    expect(nextPollDelayMs(3 * HOUR)).toBe(15 * 60_000);
  });
});
