/**
 * The request pipeline over fakes and the real store adapter on an in-memory table: bulk entries, idempotency,
 * every device its own durable release (parking, resume, takeover), and the behaviour without durable state.
 */
import {
  handleRequest,
  RedeliveryRequested,
  resumeRelease,
  type PipelineDeps,
  type RequestInput,
  type StateDeps,
} from '../../src/core/pipeline';
import { keyHashOf } from '../../src/core/idempotency';
import type { Outcome } from '../../src/core/outcome';
import { handBackDue } from '../../src/core/resume';
import { resumedRelease, type ReleaseRecord } from '../../src/core/records';
import type { ReleaseStore } from '../../src/core/ports';
import type { Budget } from '../../src/core/budget';
import { FakeDefender, fakeDeps, MACHINE_ID, memoryStore, stateDeps } from '../support/fakes';

const ids = ['a', 'b', 'c'].map((c) => c.repeat(40));
const bulkBody = {
  comment: 'incident closed',
  correlationId: 'INC9',
  devices: ids.map((machineId) => ({ machineId })),
};
const single = { machineId: MACHINE_ID, comment: 'clean', correlationId: 'INC1' };
const noChecks = { checkIsolationState: false, releasePolicy: null };

function input(body: unknown, patch: Partial<RequestInput> = {}): RequestInput {
  return { body, trigger: 'serviceBus', canRedeliver: true, deliveryCount: 1, caller: null, ...patch };
}

/** Pipeline dependencies over fakes, with durable state on an in-memory table. */
function withState(defender = new FakeDefender(), state: Partial<StateDeps> = {}) {
  const fake = fakeDeps(defender);
  const { store, table } = memoryStore();
  const full = stateDeps(store, state);
  const deps: PipelineDeps = { ...fake.deps, safety: noChecks, state: full };
  return { ...fake, deps, store, table, state: full };
}

/** Spends the whole minute of one API's budget. */
async function spend(deps: PipelineDeps, api: 'unisolate' | 'listMachineActions', calls = 100) {
  for (let i = 0; i < calls; i += 1) {
    const slot = await deps.budget.acquire(api, 'release');
    if (slot.granted) slot.slot.release(true);
  }
}

/**
 * The release budget with the hour spent (another tool shares the app registration): while `closed`, every
 * release call is `waitMs` away; the other APIs answer as usual.
 */
function spentHour(deps: PipelineDeps, waitMs = 40 * 60_000) {
  const gate = { closed: true };
  const inner = deps.budget;
  const budget: Budget = {
    acquire: (api, spender) =>
      gate.closed && api === 'unisolate'
        ? Promise.resolve({ granted: false, waitMs })
        : inner.acquire(api, spender),
    pause: (api, until) => inner.pause(api, until),
  };
  return { gate, deps: { ...deps, budget } };
}

/** Hands back what is due (as the resume timer does) and runs each resume message (as the trigger does). */
async function resumeDue(deps: PipelineDeps, store: ReleaseStore): Promise<Outcome[]> {
  const handed = await handBackDue({
    store,
    clock: deps.clock,
    log: deps.log,
    perRun: 200,
    lookAheadMs: 30_000,
  });
  const messages: Outcome[] = [];
  for (const message of handed)
    messages.push(...(await resumeRelease(resumedRelease(message)!, deps)).messages);
  return messages;
}

describe('bulk entries', () => {
  it('gives an invalid entry its own Invalid outcome at its index; the others are released', async () => {
    const { deps, defender } = withState();
    const body = {
      ...bulkBody,
      devices: [{ machineId: ids[0] }, { machineId: 'nope' }, { deviceName: 'a b' }],
    };
    const answer = await handleRequest(input(body), deps);
    expect(answer.kind).toBe('bulk');
    expect(answer.outcomes.map((o) => [o.index, o.status])).toEqual([
      [0, 'Accepted'],
      [1, 'Invalid'],
      [2, 'Invalid'],
    ]);
    expect(answer.outcomes[1]!.error!.message).toMatch(/devices\[1\]\.machineId must be 40 hexadecimal/);
    expect(answer.messages).toHaveLength(3);
    expect(defender.unisolateCalls).toHaveLength(1);
  });

  it('reports a problem of the whole bulk request (no comment) in every entry; only a non-bulk body is refused whole', async () => {
    const { deps, defender } = withState();
    const answer = await handleRequest(input({ correlationId: 'X', devices: [{ machineId: ids[0] }] }), deps);
    expect(answer.kind).toBe('bulk');
    expect(answer.outcomes).toEqual([
      expect.objectContaining({
        index: 0,
        status: 'Invalid',
        error: expect.objectContaining({ message: expect.stringMatching(/comment is required/) }),
      }),
    ]);
    const notBulk = await handleRequest(input({ comment: 'x', devices: [] }), deps);
    expect(notBulk.kind).toBe('single');
    expect(notBulk.outcomes[0]).toMatchObject({ status: 'Invalid' });
    expect(defender.unisolateCalls).toHaveLength(0);
  });

  it('releases a device named three ways once, and says so at the other indexes', async () => {
    const defender = new FakeDefender();
    const device = { id: ids[0], computerDnsName: 'ws-x.contoso.local' };
    defender.machinesScript = [
      { status: 200, body: { value: [device] } },
      { status: 200, body: { value: [device] } },
    ];
    const { deps } = withState(defender);
    const body = {
      comment: 'incident closed',
      correlationId: 'INC-3WAYS',
      devices: [{ machineId: ids[0] }, { deviceName: 'ws-x' }, { deviceName: 'ws-x.contoso.local' }],
    };
    const answer = await handleRequest(input(body), deps);
    expect(defender.unisolateCalls.map((c) => c.machineId)).toEqual([ids[0]]);
    expect(answer.outcomes.map((o) => [o.index, o.status, o.error?.code ?? null])).toEqual([
      [0, 'Accepted', null],
      [1, 'Invalid', 'DuplicateDevice'],
      [2, 'Invalid', 'DuplicateDevice'],
    ]);
    expect(answer.outcomes[1]!.error!.message).toMatch(/same device .* as devices\[0\]/);
  });
});

describe('duplicate devices in a bulk, with little table I/O', () => {
  it('knows which entry owns a device named by id without a stored claim', async () => {
    const defender = new FakeDefender();
    const device = { id: ids[0], computerDnsName: 'ws-x.contoso.local' };
    defender.machinesScript = [{ status: 200, body: { value: [device] } }];
    const { deps, table } = withState(defender);
    const body = {
      ...bulkBody,
      devices: [{ machineId: ids[0] }, { deviceName: 'ws-x' }, { machineId: ids[1] }],
    };
    const answer = await handleRequest(input(body), deps);
    expect(answer.outcomes.map((o) => [o.index, o.status, o.error?.code ?? null])).toEqual([
      [0, 'Accepted', null],
      [1, 'Invalid', 'DuplicateDevice'],
      [2, 'Accepted', null],
    ]);
    expect(defender.unisolateCalls.map((c) => c.machineId).sort()).toEqual([ids[0], ids[1]]);
    expect(table.entities().filter((e) => e.rowKey.startsWith('d|'))).toEqual([]);
  });

  it('a name resumed on its own defers to the entry naming the same device by id', async () => {
    const defender = new FakeDefender();
    const device = { id: ids[0], computerDnsName: 'ws-x.contoso.local' };
    defender.machinesScript = [{ status: 200, body: { value: [device] } }];
    const state = withState(defender);
    const { deps, gate } = spentHour(state.deps);
    const body = { ...bulkBody, devices: [{ deviceName: 'ws-x' }, { machineId: ids[0] }] };
    const answer = await handleRequest(input(body), deps);
    expect(answer.outcomes.map((o) => o.status)).toEqual(['Queued', 'Queued']);
    gate.closed = false;
    state.clock.time = Date.parse(answer.outcomes[0]!.retryAt!);
    const later = await resumeDue(deps, state.store);
    expect(later.map((m) => [m.index, m.status, m.error?.code ?? null])).toEqual([
      [0, 'Invalid', 'DuplicateDevice'],
      [1, 'Accepted', null],
    ]);
    expect(later[0]!.error!.message).toMatch(/same device .* as devices\[1\]/);
    expect(defender.unisolateCalls.map((c) => c.machineId)).toEqual([ids[0]]);
  });
});

describe('without durable state', () => {
  it('one device failing transiently hands the whole message back: no outcome is reported', async () => {
    const defender = new FakeDefender();
    defender.unreachable.add(ids[1]!);
    const { deps, telemetry } = fakeDeps(defender);
    await expect(handleRequest(input(bulkBody), { ...deps, safety: noChecks })).rejects.toBeInstanceOf(
      RedeliveryRequested,
    );
    expect(telemetry.outcomes).toHaveLength(0);
    expect(telemetry.redeliveries).toHaveLength(1);
  });

  it('a redelivery checks the history even with the check off, so released devices are not released again', async () => {
    const pending = { ...FakeDefender.action(ids[0]!, 'Pending', '2026-11-28T10:00:00Z'), id: 'earlier' };
    const defender = new FakeDefender();
    defender.historyScript = [
      { status: 200, body: { value: [FakeDefender.isolated(ids[0]!), pending] } },
      { status: 200, body: { value: [FakeDefender.isolated(ids[1]!)] } },
      { status: 200, body: { value: [FakeDefender.isolated(ids[2]!)] } },
    ];
    const { deps } = fakeDeps(defender);
    const answer = await handleRequest(input(bulkBody, { deliveryCount: 2 }), { ...deps, safety: noChecks });
    expect(answer.outcomes.map((o) => [o.index, o.status, o.machineAction?.id ?? null])).toEqual([
      [0, 'AlreadyInProgress', 'earlier'],
      [1, 'Accepted', expect.any(String)],
      [2, 'Accepted', expect.any(String)],
    ]);
    expect(defender.unisolateCalls.map((c) => c.machineId).sort()).toEqual([ids[1], ids[2]]);
  });

  it('on the last delivery reports every device, the failed one as Failed, others unaffected', async () => {
    const defender = new FakeDefender();
    defender.unreachable.add(ids[2]!);
    const { deps, telemetry } = fakeDeps(defender);
    const answer = await handleRequest(input(bulkBody, { canRedeliver: false, deliveryCount: 10 }), {
      ...deps,
      safety: noChecks,
    });
    expect(answer.outcomes.map((o) => o.status)).toEqual(['Accepted', 'Accepted', 'Failed']);
    expect(answer.outcomes.every((o) => o.correlationId === 'INC9')).toBe(true);
    expect(telemetry.outcomes).toHaveLength(3);
    expect(answer.retryAfterSeconds).toBeGreaterThan(0);
  });

  it('answers Throttled when the budget will not free within the retry budget (nothing can be parked)', async () => {
    const { deps, defender } = fakeDeps();
    await spend(deps, 'unisolate');
    const answer = await handleRequest(input(single, { trigger: 'http', canRedeliver: false }), deps);
    expect(answer.outcomes[0]).toMatchObject({ status: 'Throttled', error: { code: 'MdeThrottled' } });
    expect(defender.unisolateCalls).toHaveLength(0);
  });
});

describe('parking: nothing is throttled away', () => {
  it('HTTP: parks a release the budget cannot take soon (Queued, retryAt), then runs it when handed back', async () => {
    const { deps, defender, store, clock, telemetry } = withState();
    await spend(deps, 'unisolate');
    const answer = await handleRequest(input(single, { trigger: 'http', canRedeliver: false }), deps);
    const queued = answer.outcomes[0]!;
    expect(queued).toMatchObject({ status: 'Queued', phase: 'queued', correlationId: 'INC1', error: null });
    expect(Date.parse(queued.retryAt!)).toBeGreaterThan(clock.now());
    expect(answer.retryAfterSeconds).toBe(Math.ceil((Date.parse(queued.retryAt!) - clock.now()) / 1000));
    expect(answer.messages).toEqual([queued]);
    expect(defender.unisolateCalls).toHaveLength(0);

    // Not due yet: nothing is handed back.
    expect(await resumeDue(deps, store)).toEqual([]);
    clock.time = Date.parse(queued.retryAt!);
    const later = await resumeDue(deps, store);
    expect(later).toEqual([
      expect.objectContaining({
        status: 'Accepted',
        phase: 'accepted',
        correlationId: 'INC1',
        trigger: 'http',
      }),
    ]);
    expect(defender.unisolateCalls).toHaveLength(1);
    expect(telemetry.outcomes.map((o) => o.outcome.status)).toEqual(['Queued', 'Accepted']);
    // Handed back again later: already answered, nothing more happens.
    clock.time += 10 * 60_000;
    expect(await resumeDue(deps, store)).toEqual([]);
  });

  it('hands a release due again soon straight back to the request queue, not to the timer', async () => {
    const { deps, store, clock, defender } = withState();
    // The minute's release budget was spent 45 s ago: it frees in ~15 s, longer than an HTTP caller waits.
    await spend(deps, 'unisolate');
    clock.time += 45_000;
    const answer = await handleRequest(input(single, { trigger: 'http', canRedeliver: false }), deps);
    expect(answer.outcomes[0]!.status).toBe('Queued');
    expect(answer.resume).toEqual([
      {
        resumeRelease: {
          correlationId: 'INC1',
          requestId: expect.stringMatching(/^[0-9a-f]{32}$/),
          index: null,
        },
      },
    ]);
    // Handed off (leased): the timer does not hand it back as well.
    expect(await resumeDue(deps, store)).toEqual([]);
    // The request queue delivers it; the Service Bus trigger waits for the budget and releases it.
    const resumed = await resumeRelease(resumedRelease(answer.resume[0])!, deps);
    expect(resumed.messages.map((m) => [m.status, m.phase])).toEqual([['Accepted', 'accepted']]);
    expect(defender.unisolateCalls).toHaveLength(1);
  });

  it('Service Bus: the message completes (no redelivery), one queued message, however often it is parked again', async () => {
    const state = withState();
    const { store, clock } = state;
    const { deps, gate } = spentHour(state.deps);
    const answer = await handleRequest(input(single), deps);
    expect(answer.messages.map((m) => m.phase)).toEqual(['queued']);
    // Handed back while the budget is still spent (another tool used it): parked again, silently.
    clock.time = Date.parse(answer.outcomes[0]!.retryAt!);
    expect(await resumeDue(deps, store)).toEqual([]);
    gate.closed = false;
    clock.time += 40 * 60_000;
    const later = await resumeDue(deps, store);
    expect(later.map((m) => [m.phase, m.status])).toEqual([['accepted', 'Accepted']]);
  });

  it('ends Throttled only once the release has waited QUEUE_MAX_HOURS', async () => {
    const state = withState(new FakeDefender(), { queueMaxMs: 2 * 3_600_000 });
    const { store, clock } = state;
    // The budget never frees for this app (another tool keeps spending it).
    const { deps } = spentHour(state.deps);
    const answer = await handleRequest(input(single), deps);
    expect(answer.outcomes[0]!.status).toBe('Queued');
    const messages: Outcome[] = [];
    for (let step = 0; step < 200 && messages.length === 0; step += 1) {
      clock.time += 60_000;
      messages.push(...(await resumeDue(deps, store)));
    }
    expect(messages).toEqual([
      expect.objectContaining({
        status: 'Throttled',
        phase: 'accepted',
        error: expect.objectContaining({ code: 'MdeThrottled' }),
      }),
    ]);
    expect(messages[0]!.error!.message).toMatch(/waited 2 h \(QUEUE_MAX_HOURS\)/);
    expect(clock.now() - Date.parse(answer.outcomes[0]!.receivedAt)).toBeGreaterThanOrEqual(
      2 * 3_600_000 - 120_000,
    );
  });

  it('reserves every call a release needs: with no release budget, the isolation check is not spent either', async () => {
    const state = withState();
    const { defender } = state;
    const { deps } = spentHour(state.deps);
    const checked: PipelineDeps = { ...deps, safety: { checkIsolationState: true, releasePolicy: null } };
    const answer = await handleRequest(input(single), checked);
    expect(answer.outcomes[0]!.status).toBe('Queued');
    expect(defender.readCalls).toEqual([]);
  });
});

describe('every device its own durable release', () => {
  it('Service Bus bulk: a device failing transiently waits parked; the others are answered at once, each once', async () => {
    const defender = new FakeDefender();
    defender.unreachable.add(ids[1]!);
    const { deps, store, clock } = withState(defender);
    const answer = await handleRequest(input(bulkBody, { key: 'm1' }), deps);
    expect(answer.messages.map((m) => [m.index, m.status, m.phase])).toEqual([
      [0, 'Accepted', 'accepted'],
      [1, 'Queued', 'queued'],
      [2, 'Accepted', 'accepted'],
    ]);
    defender.unreachable.clear();
    clock.time = Date.parse(answer.outcomes[1]!.retryAt!);
    const later = await resumeDue(deps, store);
    expect(later.map((m) => [m.index, m.status, m.phase])).toEqual([[1, 'Accepted', 'accepted']]);
    // The same message delivered again (its lock was lost after it completed): replayed, nothing re-released.
    const calls = defender.unisolateCalls.length;
    const again = await handleRequest(input(bulkBody, { key: 'm1', deliveryCount: 2 }), deps);
    expect(again.replayed).toBe(true);
    expect(again.outcomes.map((o) => o.status)).toEqual(['Accepted', 'Accepted', 'Accepted']);
    expect(again.messages.every((m) => m.replayed)).toBe(true);
    expect(defender.unisolateCalls).toHaveLength(calls);
  });

  it('a device released before the delivery stopped is reported Accepted with its action; the rest are released', async () => {
    const { deps, store, defender } = withState();
    const first = await handleRequest(input(bulkBody, { key: 'msg-crash' }), deps);
    // Simulate an instance that stopped mid-way: device 2 still running (lease run out), claim still pending.
    const [, , third] = await store.readReleases('INC9');
    await store.updateRelease({ ...third!.value, state: 'running', dueAt: 0, answer: null }, third!);
    const claim = (await store.readKey(keyHashOf('serviceBus', 'msg-crash')))!;
    await store.replaceKey({ ...claim.value, state: 'pending', leaseUntil: 0 }, claim.etag);
    const calls = defender.unisolateCalls.length;

    const redelivered = await handleRequest(input(bulkBody, { key: 'msg-crash', deliveryCount: 2 }), deps);
    expect(redelivered.replayed).toBe(false);
    expect(redelivered.outcomes.map((o) => [o.index, o.status, o.machineAction?.id])).toEqual([
      [0, 'Accepted', first.outcomes[0]!.machineAction!.id],
      [1, 'Accepted', first.outcomes[1]!.machineAction!.id],
      [2, 'Accepted', expect.any(String)],
    ]);
    // Only the device that had not finished was released again.
    expect(defender.unisolateCalls.slice(calls).map((c) => c.machineId)).toEqual([ids[2]]);
    // Every device's answer goes out (the stopped delivery may not have sent its messages), none marked replayed.
    expect(redelivered.messages.map((m) => [m.index, m.status, m.replayed ?? false])).toEqual([
      [0, 'Accepted', false],
      [1, 'Accepted', false],
      [2, 'Accepted', false],
    ]);
  });

  it('HTTP bulk: a retry with the same key after one transient failure releases only the failed device', async () => {
    const defender = new FakeDefender();
    defender.unreachable.add(ids[1]!);
    const { deps } = withState(defender);
    const http = input(bulkBody, { trigger: 'http', canRedeliver: false, key: 'k-retry' });
    const first = await handleRequest(http, deps);
    expect(first.outcomes.map((o) => [o.index, o.status])).toEqual([
      [0, 'Accepted'],
      [1, 'Failed'],
      [2, 'Accepted'],
    ]);
    defender.unreachable.clear();
    const calls = defender.unisolateCalls.length;
    const retry = await handleRequest(http, deps);
    expect(defender.unisolateCalls.slice(calls).map((c) => c.machineId)).toEqual([ids[1]]);
    expect(retry.outcomes.map((o) => [o.index, o.status, o.machineAction?.id])).toEqual([
      [0, 'Accepted', first.outcomes[0]!.machineAction!.id],
      [1, 'Accepted', expect.any(String)],
      [2, 'Accepted', first.outcomes[2]!.machineAction!.id],
    ]);
    expect(retry.messages.map((m) => [m.index, m.status, m.replayed ?? false])).toEqual([
      [0, 'Accepted', true],
      [1, 'Accepted', false],
      [2, 'Accepted', true],
    ]);
    // Now every device has its answer: a third copy is a plain replay.
    const third = await handleRequest(http, deps);
    expect(third.replayed).toBe(true);
    expect(defender.unisolateCalls).toHaveLength(calls + 1);
  });

  it('replays a 100-device bulk by its key, every answer, marked replayed, with no second call', async () => {
    const { deps, defender } = withState();
    const devices = Array.from({ length: 100 }, (_, i) => ({ machineId: i.toString(16).padStart(40, 'e') }));
    const body = { comment: 'mass release', correlationId: 'INC-100', devices };
    const first = await handleRequest(
      input(body, { trigger: 'http', canRedeliver: false, key: 'k100' }),
      deps,
    );
    expect(first.outcomes.filter((o) => o.status === 'Accepted')).toHaveLength(100);
    const replay = await handleRequest(
      input(body, { trigger: 'http', canRedeliver: false, key: 'k100' }),
      deps,
    );
    expect(replay.replayed).toBe(true);
    expect(replay.outcomes).toEqual(first.outcomes);
    expect(replay.messages.every((m) => m.replayed === true)).toBe(true);
    expect(defender.unisolateCalls).toHaveLength(100);
  });

  it('keeps two releases under one correlation id apart', async () => {
    const { deps, store } = withState();
    await handleRequest(input({ ...single, machineId: ids[0], correlationId: 'INC42' }), deps);
    await handleRequest(input({ ...single, machineId: ids[1], correlationId: 'INC42' }), deps);
    const records = await store.readReleases('INC42');
    expect(records.map((r) => [r.value.machineId, r.value.state]).sort()).toEqual([
      [ids[0], 'accepted'],
      [ids[1], 'accepted'],
    ]);
  });

  it('renews the claim while a long bulk runs: a duplicate arriving after the first lease would have run out waits', async () => {
    const defender = new FakeDefender();
    const { deps, clock } = withState(defender, { duplicateWaitMs: 1_000 });
    const devices = Array.from({ length: 8 }, (_, i) => ({ machineId: i.toString(16).padStart(40, 'd') }));
    const body = { comment: 'x', correlationId: 'INC-LONG', devices };
    const original = defender.unisolate.bind(defender);
    let duplicate: Outcome[] | undefined;
    defender.unisolate = async (id, comment, o) => {
      // Each release takes 40 s (on this clock, one after another): the bulk outlasts one lease (300 s).
      clock.time += 40_000;
      if (defender.unisolateCalls.length === 7) {
        // A copy of the message arrives now; the first delivery is still on its last device.
        duplicate = (await handleRequest(input(body, { key: 'k-long' }), deps)).outcomes;
      }
      return original(id, comment, o);
    };
    await handleRequest(input(body, { key: 'k-long' }), deps);
    expect(duplicate).toEqual([
      expect.objectContaining({
        error: expect.objectContaining({ code: 'IdempotencyKeyInUse' }),
        duplicate: true,
      }),
    ]);
    expect(defender.unisolateCalls).toHaveLength(8);
  });

  it("a long bulk's devices not started yet are not handed back by the timer while it runs", async () => {
    const defender = new FakeDefender();
    const { deps, clock, store } = withState(defender);
    const devices = Array.from({ length: 8 }, (_, i) => ({ machineId: i.toString(16).padStart(40, 'd') }));
    const body = { comment: 'x', correlationId: 'INC-SLOW', devices };
    const original = defender.unisolate.bind(defender);
    const messages: Outcome[] = [];
    defender.unisolate = async (id, comment, o) => {
      // Each release takes 40 s: the later devices start after a single run's lease would have ended.
      clock.time += 40_000;
      if (defender.unisolateCalls.length === 6) messages.push(...(await resumeDue(deps, store)));
      return original(id, comment, o);
    };
    const answer = await handleRequest(input(body, { key: 'k-slow' }), deps);
    messages.push(...answer.messages);
    clock.time += 20 * 60_000;
    messages.push(...(await resumeDue(deps, store)));
    const accepted = messages.filter((m) => m.phase === 'accepted');
    expect(accepted.map((m) => m.index).sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(defender.unisolateCalls.map((c) => c.machineId).sort()).toEqual(devices.map((d) => d.machineId));
  });

  it('keeps the core contract when the store is down: released, without idempotency or parking', async () => {
    const { deps, table, defender } = withState();
    table.down = true;
    const answer = await handleRequest(
      input(single, { trigger: 'http', canRedeliver: false, key: 'k-down' }),
      deps,
    );
    expect(answer.outcomes[0]).toMatchObject({ status: 'Accepted', phase: 'accepted' });
    expect(defender.unisolateCalls).toHaveLength(1);
  });
});

describe('exactly once under concurrency', () => {
  /** Parks one device (the hour's release budget spent), hands it back, and opens the budget again. */
  async function parkedAndHandedBack() {
    const state = withState();
    const { deps, gate } = spentHour(state.deps);
    const answer = await handleRequest(input(single), deps);
    expect(answer.messages.map((m) => m.phase)).toEqual(['queued']);
    state.clock.time = Date.parse(answer.outcomes[0]!.retryAt!);
    const handed = await handBackDue({
      store: state.store,
      clock: deps.clock,
      log: deps.log,
      perRun: 10,
      lookAheadMs: 30_000,
    });
    expect(handed).toHaveLength(1);
    gate.closed = false;
    return { ...state, deps, ref: resumedRelease(handed[0])! };
  }

  it('a resume message delivered twice at once releases the device once, with one answer', async () => {
    const { deps, defender, ref } = await parkedAndHandedBack();
    const [a, b] = await Promise.all([resumeRelease(ref, deps), resumeRelease(ref, deps)]);
    expect([...a.messages, ...b.messages].map((m) => [m.phase, m.status])).toEqual([
      ['accepted', 'Accepted'],
    ]);
    expect(defender.unisolateCalls).toHaveLength(1);
  });

  it('a run that outlives its lease does not answer: the invocation that took the release over does', async () => {
    const { deps, defender, clock, ref } = await parkedAndHandedBack();
    const original = defender.unisolate.bind(defender);
    let reached!: () => void;
    const posting = new Promise<void>((resolve) => (reached = resolve));
    let answerLate!: () => void;
    const late = new Promise<void>((resolve) => (answerLate = resolve));
    let first = true;
    defender.unisolate = async (id, comment, o) => {
      if (first) {
        // The first run's POST hangs until its lease has run out and another invocation took over.
        first = false;
        reached();
        await late;
      }
      return original(id, comment, o);
    };
    const slow = resumeRelease(ref, deps);
    await posting;
    clock.time += 10 * 60_000;
    const takeover = await resumeRelease(ref, deps);
    expect(takeover.messages.map((m) => [m.phase, m.status])).toEqual([['accepted', 'Accepted']]);
    answerLate();
    // Its write loses (the record changed since it claimed it): it sends nothing.
    expect((await slow).messages).toEqual([]);
    const stored = (await deps.state!.store.readRelease(ref))!.value;
    expect(stored.answer?.machineAction?.id).toBe(takeover.messages[0]!.machineAction!.id);
  });

  it('a claim whose write landed but threw does not run: the release runs once, after its lease, with one answer', async () => {
    const { deps, defender, clock, ref, store } = await parkedAndHandedBack();
    // Taking the release times out after the write landed (the store throws, the record is running).
    const flaky = Object.create(store) as ReleaseStore;
    let thrown = false;
    flaky.updateRelease = async (record, previous) => {
      const etag = await store.updateRelease(record, previous);
      if (thrown || record.state !== 'running') return etag;
      thrown = true;
      throw new Error('The operation was aborted due to timeout');
    };
    const flakyDeps: PipelineDeps = { ...deps, state: { ...deps.state!, store: flaky } };
    const messages = [...(await resumeRelease(ref, flakyDeps)).messages];
    expect(thrown).toBe(true);
    clock.time += 10 * 60_000;
    messages.push(...(await resumeDue(flakyDeps, store)));
    clock.time += 10 * 60_000;
    messages.push(...(await resumeDue(flakyDeps, store)));
    expect(messages.map((m) => [m.phase, m.status])).toEqual([['accepted', 'Accepted']]);
    expect(defender.unisolateCalls).toHaveLength(1);
  });
});

describe('a store failure ends with the entry it hit', () => {
  /**
   * A bulk of two on Service Bus whose store fails the first write `failWrite` picks, and its one retry: entry 0
   * gets the release budget, entry 1 is told the hour is spent (so it parks), with `parkAfterFailure` only once
   * that write failed.
   */
  function twoEntries(failWrite: (record: ReleaseRecord) => boolean, parkAfterFailure: boolean) {
    const state = withState();
    const { store } = state;
    let failedNow!: () => void;
    const failed = new Promise<void>((resolve) => (failedNow = resolve));
    const flaky = Object.create(store) as ReleaseStore;
    let failures = 0;
    flaky.updateRelease = (record, previous) => {
      if (failures < 2 && failWrite(record)) {
        failures += 1;
        failedNow();
        return Promise.reject(new Error('connect ECONNRESET 127.0.0.1:10002'));
      }
      return store.updateRelease(record, previous);
    };
    const inner = state.deps.budget;
    let releases = 0;
    const budget: Budget = {
      acquire: async (api, spender) => {
        if (api !== 'unisolate') return inner.acquire(api, spender);
        releases += 1;
        if (releases === 1) return inner.acquire(api, spender);
        if (parkAfterFailure) await failed;
        return { granted: false, waitMs: 40 * 60_000 };
      },
      pause: (api, until) => inner.pause(api, until),
    };
    const deps: PipelineDeps = { ...state.deps, budget, state: { ...state.state, store: flaky } };
    const body = { ...bulkBody, devices: [{ machineId: ids[0] }, { machineId: ids[1] }] };
    return { ...state, deps, body };
  }

  it("one entry's failed write leaves the other entries their durable state: it still parks", async () => {
    const { deps, body, store, defender } = twoEntries(
      (r) => r.ref.index === 0 && r.state === 'accepted',
      true,
    );
    const answer = await handleRequest(input(body), deps);
    expect(answer.messages.map((m) => [m.index, m.status, m.phase])).toEqual([
      [0, 'Accepted', 'accepted'],
      [1, 'Queued', 'queued'],
    ]);
    const parked = (await store.readReleases('INC9')).map((v) => v.value.state);
    expect(parked[1]).toBe('queued');
    expect(defender.unisolateCalls.map((c) => c.machineId)).toEqual([ids[0]]);
  });

  it('a release that cannot be parked (the store fails) ends Throttled instead of waiting unrecorded', async () => {
    const { deps, body } = twoEntries((r) => r.ref.index === 1 && r.state === 'queued', false);
    const answer = await handleRequest(input(body), deps);
    expect(answer.messages.map((m) => [m.index, m.status, m.phase, m.error?.code ?? null])).toEqual([
      [0, 'Accepted', 'accepted', null],
      [1, 'Throttled', 'accepted', 'MdeThrottled'],
    ]);
  });
});

describe('a store write that fails around an answer', () => {
  /** Runs `single` on Service Bus, then the resume timer twice past the lease: every message, and the POSTs. */
  async function runAndResume(deps: PipelineDeps, store: ReleaseStore, clock: { time: number }) {
    const messages = [...(await handleRequest(input(single, { key: 'msg-write' }), deps)).messages];
    for (let i = 0; i < 2; i += 1) {
      clock.time += 10 * 60_000;
      messages.push(...(await resumeDue(deps, store)));
    }
    return messages;
  }

  function accepted(messages: Outcome[]) {
    return messages.filter((m) => m.phase === 'accepted').map((m) => m.status);
  }

  it('recording the release throws after the write landed: it runs recorded, one POST, one answer', async () => {
    const { deps, store, clock, defender } = withState();
    const flaky = Object.create(store) as ReleaseStore;
    flaky.createReleases = async (records, expiry) => {
      await store.createReleases(records, expiry);
      throw new Error('The operation was aborted due to timeout');
    };
    const messages = await runAndResume({ ...deps, state: { ...deps.state!, store: flaky } }, store, clock);
    expect(defender.unisolateCalls).toHaveLength(1);
    expect(accepted(messages)).toEqual(['Accepted']);
  });

  it('the answer cannot be recorded at first: it is recorded on a second try, one POST, one answer', async () => {
    const { deps, store, clock, defender } = withState();
    const flaky = Object.create(store) as ReleaseStore;
    let failures = 0;
    flaky.updateRelease = (record, previous) => {
      if (record.state === 'accepted' && failures++ === 0)
        return Promise.reject(new Error('connect ECONNRESET 127.0.0.1:10002'));
      return store.updateRelease(record, previous);
    };
    const messages = await runAndResume({ ...deps, state: { ...deps.state!, store: flaky } }, store, clock);
    expect(defender.unisolateCalls).toHaveLength(1);
    expect(accepted(messages)).toEqual(['Accepted']);
    expect((await store.readReleases('INC1'))[0]!.value.state).toBe('accepted');
  });

  it('the answer cannot be recorded at all: taken back, the release checks the isolation state and is not sent again', async () => {
    const { deps, store, clock, defender } = withState();
    const flaky = Object.create(store) as ReleaseStore;
    let failures = 0;
    // The first run's answer: its write and the one retry both fail.
    flaky.updateRelease = (record, previous) =>
      record.state === 'accepted' && failures++ < 2
        ? Promise.reject(new Error('connect ECONNRESET 127.0.0.1:10002'))
        : store.updateRelease(record, previous);
    // MDE has the release the first run sent.
    defender.historyScript = [
      { status: 200, body: { value: [FakeDefender.action(MACHINE_ID, 'Pending', '2026-11-28T10:00:00Z')] } },
    ];
    const messages = await runAndResume({ ...deps, state: { ...deps.state!, store: flaky } }, store, clock);
    expect(defender.unisolateCalls).toHaveLength(1);
    expect(defender.readCalls.filter((c) => c.startsWith('history'))).toHaveLength(1);
    // The first answer was sent unrecorded, so the run that took the release back answers too (no POST).
    expect(accepted(messages)).toEqual(['Accepted', 'AlreadyInProgress']);
  });
});

describe('a release whose instance stopped', () => {
  it('is handed back once its lease ends: one answer, one POST, though its redelivery came inside the lease', async () => {
    const defender = new FakeDefender();
    const state = withState(defender);
    const { store, clock, table } = state;
    const deps: PipelineDeps = { ...state.deps, safety: { checkIsolationState: true, releasePolicy: null } };
    // The first run stops after taking the release: its isolation check never answers (the instance is gone).
    const history = defender.listMachineActions.bind(defender);
    let reached!: () => void;
    const stopped = new Promise<void>((resolve) => (reached = resolve));
    let first = true;
    defender.listMachineActions = (filter: string) => {
      if (!first) return history(filter);
      first = false;
      reached();
      return new Promise(() => {});
    };
    void handleRequest(input(single, { key: 'msg-stop' }), deps);
    await stopped;
    const messages: Outcome[] = [];

    // Service Bus redelivers the message while the stopped run's lease still holds the release.
    clock.time += 125_000;
    const redelivered = await handleRequest(input(single, { key: 'msg-stop', deliveryCount: 2 }), deps);
    messages.push(...redelivered.messages);
    expect(messages).toEqual([]);
    // Not answered: the key must not replay an answer that never came.
    expect((await store.readKey(keyHashOf('serviceBus', 'msg-stop')))?.value.state).not.toBe('done');

    // Once the lease has ended, the resume timer hands the release back, and it runs to its answer.
    clock.time += 10 * 60_000;
    messages.push(...(await resumeDue(deps, store)));
    clock.time += 10 * 60_000;
    messages.push(...(await resumeDue(deps, store)));
    expect(messages.map((m) => [m.phase, m.status])).toEqual([['accepted', 'Accepted']]);
    expect(defender.unisolateCalls).toHaveLength(1);
    expect(table.entities().filter((e) => e.rowKey.startsWith('q|'))).toEqual([]);
  });
});

describe('a bulk recorded in several transactions', () => {
  const devices = Array.from({ length: 60 }, (_, i) => ({ machineId: i.toString(16).padStart(40, 'e') }));
  const body = { comment: 'mass release', correlationId: 'INC-60', devices };

  /** The table's `n`-th transaction (from 1) does `fail` instead; the others go through. */
  function failingTransaction(
    table: ReturnType<typeof memoryStore>['table'],
    n: number,
    fail: () => Promise<never>,
  ) {
    const submit = table.client.submitTransaction.bind(table.client);
    let count = 0;
    table.client.submitTransaction = (actions, options) => {
      count += 1;
      return count === n ? fail() : submit(actions, options);
    };
  }

  function answeredOnce(messages: Outcome[]) {
    const accepted = messages.filter((m) => m.phase === 'accepted');
    expect(accepted.map((m) => m.status)).toEqual(devices.map(() => 'Accepted'));
    expect(accepted.map((m) => m.index).sort((a, b) => a! - b!)).toEqual(devices.map((_, i) => i));
  }

  it('stopped between them: the redelivery records and releases the rest, the timer the others; each once', async () => {
    const { deps, store, table, clock, defender } = withState();
    let reached!: () => void;
    const stopped = new Promise<void>((resolve) => (reached = resolve));
    failingTransaction(table, 2, () => {
      reached();
      return new Promise<never>(() => {});
    });
    void handleRequest(input(body, { key: 'msg-60' }), deps);
    await stopped;
    const messages: Outcome[] = [];
    const redelivered = await handleRequest(input(body, { key: 'msg-60', deliveryCount: 2 }), deps);
    messages.push(...redelivered.messages);
    clock.time += 10 * 60_000;
    messages.push(...(await resumeDue(deps, store)));
    clock.time += 10 * 60_000;
    messages.push(...(await resumeDue(deps, store)));
    answeredOnce(messages);
    expect(new Set(defender.unisolateCalls.map((c) => c.machineId)).size).toBe(60);
    expect(defender.unisolateCalls).toHaveLength(60);
  });

  it('a transient failure of an unrecorded device does not drop the queued message of a recorded one', async () => {
    const defender = new FakeDefender();
    const { deps, store, table } = withState(defender);
    failingTransaction(table, 2, () => Promise.reject(new Error('connect ECONNRESET 127.0.0.1:10002')));
    const [recorded, unrecorded] = [devices[0]!.machineId, devices[59]!.machineId];
    // Both fail transiently on this delivery: the recorded one parks, the unrecorded one cannot.
    defender.unreachable.add(recorded).add(unrecorded);
    const messages: Outcome[] = [];
    try {
      messages.push(...(await handleRequest(input(body, { key: 'msg-60c' }), deps)).messages);
    } catch (error) {
      if (!(error instanceof RedeliveryRequested)) throw error;
    }
    const stored = await store.readReleases('INC-60');
    expect(stored.map((v) => v.value.ref.index)).toContain(0);
    expect(stored.map((v) => v.value.ref.index)).not.toContain(59);
    // Service Bus redelivers the message (or a retry with the same key comes): nothing fails now.
    defender.unreachable.clear();
    messages.push(...(await handleRequest(input(body, { key: 'msg-60c', deliveryCount: 2 }), deps)).messages);
    expect(messages.filter((m) => m.index === 0 && m.phase === 'queued')).toHaveLength(1);
  });

  it('the store failing between them: the recorded devices run recorded, the others unrecorded; none twice', async () => {
    const { deps, store, table, clock, defender } = withState();
    failingTransaction(table, 2, () => Promise.reject(new Error('connect ECONNRESET 127.0.0.1:10002')));
    const answer = await handleRequest(input(body, { key: 'msg-60b' }), deps);
    const messages = [...answer.messages];
    clock.time += 20 * 60_000;
    messages.push(...(await resumeDue(deps, store)));
    answeredOnce(messages);
    expect(defender.unisolateCalls).toHaveLength(60);
  });
});
