/**
 * The tracker over an in-memory store: polls until the MachineAction ends, one completion per release,
 * expiry, racing trackers, the rate budget.
 */
import { processReleaseOnce, type StateDeps } from '../../src/core/idempotency';
import { nextPollDelayMs, trackReleases, type TrackerDeps } from '../../src/core/tracking';
import { FakeDefender, fakeDeps, FakeReleaseStore, localBudget, MACHINE_ID } from '../support/fakes';

const HOUR = 3_600_000;

async function accepted(defender = new FakeDefender()) {
  const fake = fakeDeps(defender);
  const store = new FakeReleaseStore();
  const state: StateDeps = { store, idempotencyWindowMs: 24 * HOUR, trackMaxMs: 24 * HOUR };
  const result = await processReleaseOnce(
    {
      body: { machineId: MACHINE_ID, comment: 'clean', correlationId: 'INC7' },
      trigger: 'http',
      canRedeliver: false,
    },
    undefined,
    fake.deps,
    state,
  );
  if (result.kind !== 'single') throw new Error('expected a single outcome');
  const tracker: TrackerDeps = { ...fake.deps, store, trackMaxMs: 24 * HOUR };
  return { ...fake, store, outcome: result.outcome, tracker };
}

function action(id: string, status: string, updated = '2026-11-28T10:03:00Z') {
  return {
    status: 200,
    body: { id, type: 'Unisolate', status, machineId: MACHINE_ID, lastUpdateDateTimeUtc: updated },
  };
}

describe('trackReleases', () => {
  it('follows Pending -> InProgress -> Succeeded and sends one Released completion', async () => {
    const { store, outcome, tracker, defender, telemetry, clock } = await accepted();
    const id = outcome.machineAction!.id;
    defender.actionScript = [action(id, 'Pending'), action(id, 'InProgress'), action(id, 'Succeeded')];

    expect(await trackReleases(tracker)).toEqual([]);
    clock.time += 60_000;
    expect(await trackReleases(tracker)).toEqual([]);
    expect(await store.readRelease('INC7')).toMatchObject({
      phase: 'accepted',
      outcome: { machineAction: { status: 'InProgress' } },
    });
    clock.time += 60_000;
    const completions = await trackReleases(tracker);
    expect(completions).toHaveLength(1);
    expect(completions[0]).toMatchObject({
      correlationId: 'INC7',
      machineId: MACHINE_ID,
      status: 'Released',
      phase: 'completed',
      error: null,
      trigger: 'http',
      receivedAt: outcome.receivedAt,
      machineAction: { id, status: 'Succeeded' },
    });
    expect(defender.actionCalls).toEqual([id, id, id]);
    expect(await store.readRelease('INC7')).toMatchObject({
      phase: 'completed',
      outcome: { status: 'Released' },
    });
    // Time to completion: from receipt to the action's last update (10:03 - 10:00).
    expect(telemetry.completions).toEqual([{ outcome: completions[0], timeToCompletionMs: 3 * 60_000 }]);
    clock.time += 60_000;
    expect(await trackReleases(tracker)).toEqual([]);
    expect(defender.actionCalls).toHaveLength(3);
  });

  it.each(['Failed', 'TimeOut', 'Cancelled'])(
    'reports ReleaseFailed when the action ends %s',
    async (status) => {
      const { outcome, tracker, defender } = await accepted();
      const id = outcome.machineAction!.id;
      defender.actionScript = [action(id, status)];
      const [completion] = await trackReleases(tracker);
      expect(completion).toMatchObject({
        status: 'ReleaseFailed',
        phase: 'completed',
        machineAction: { status },
        error: { code: 'ReleaseActionFailed' },
      });
      expect(completion!.error!.message).toContain(status);
    },
  );

  it('sends TrackingExpired after TRACK_MAX_HOURS without polling again', async () => {
    const { tracker, defender, clock, store } = await accepted();
    clock.time += 24 * HOUR;
    const [completion] = await trackReleases(tracker);
    expect(completion).toMatchObject({
      status: 'TrackingExpired',
      phase: 'completed',
      error: { code: 'TrackingExpired' },
    });
    expect(defender.actionCalls).toHaveLength(0);
    expect(store.open.size).toBe(0);
  });

  it('lets only one of two racing trackers send the completion', async () => {
    const { outcome, tracker, defender } = await accepted();
    const id = outcome.machineAction!.id;
    defender.actionScript = [action(id, 'Succeeded'), action(id, 'Succeeded')];
    const runs = await Promise.all([trackReleases(tracker), trackReleases({ ...tracker })]);
    expect(runs.flat()).toHaveLength(1);
    expect(runs.flat()[0]).toMatchObject({ status: 'Released' });
  });

  it('finds the action of an AlreadyInProgress release recorded without it', async () => {
    const defender = new FakeDefender([
      { status: 400, body: { error: { code: 'ActiveRequestAlreadyExists', message: 'in progress' } } },
    ]);
    // The release's own look-up finds nothing; the tracker's finds the action.
    defender.listScript = [
      { status: 200, body: { value: [] } },
      {
        status: 200,
        body: { value: [{ ...action('a-1', 'InProgress').body, creationDateTimeUtc: '2026' }] },
      },
    ];
    const { outcome, tracker, store } = await accepted(defender);
    expect(outcome).toMatchObject({ status: 'AlreadyInProgress', machineAction: null });
    defender.actionScript = [action('a-1', 'Succeeded')];
    const [completion] = await trackReleases(tracker);
    expect(completion).toMatchObject({ status: 'Released', machineAction: { id: 'a-1' } });
    expect(store.open.size).toBe(0);
  });

  it('stays within the shared rate budget: no poll when the limiter has no slot', async () => {
    const { tracker, defender, clock } = await accepted();
    const budget = localBudget(100, 1500, clock.now);
    // The tracker's own share (2 calls a minute) is spent; the releases' share is untouched.
    for (let i = 0; i < 2; i += 1) {
      const slot = await budget.acquire('getMachineAction', 'tracker');
      if (slot.granted) slot.slot.release(true);
    }
    const completions = await trackReleases({ ...tracker, budget, pollBudgetMs: 1000 });
    expect(completions).toEqual([]);
    expect(defender.actionCalls).toHaveLength(0);
  });

  it('polls every run at first, then less often', () => {
    expect(nextPollDelayMs(60_000)).toBe(0);
    expect(nextPollDelayMs(HOUR)).toBe(5 * 60_000);
    expect(nextPollDelayMs(5 * HOUR)).toBe(15 * 60_000);
  });
});
