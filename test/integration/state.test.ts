/**
 * Idempotency and tracking end to end: the registered functions, the real Table Storage adapter against
 * Azurite (started from node_modules), and the real Defender client (axios) against the Defender API
 * simulator, whose request log proves how many calls reached "MDE".
 */
import { randomUUID } from 'node:crypto';
import { DefenderClient } from '../../src/adapters/defenderClient';
import { createReleaseStore } from '../../src/adapters/releaseStore';
import { getDependencies, setDependencies, type AppDependencies } from '../../src/composition';
import { parseSettings } from '../../src/config';
import type { StateDeps } from '../../src/core/pipeline';
import type { Outcome } from '../../src/core/outcome';
import type { Clock, ReleaseStore } from '../../src/core/ports';
import { trackReleases } from '../../src/core/tracking';
import { startAzuriteTables, type AzuriteTables } from '../../dev/azurite';
import { localBudget, recordingLogger, RecordingTelemetry } from '../support/fakes';
import { invokeHttp, invokeServiceBus, invokeTimer, loadApp, registrations } from '../../dev/host';
import { machineIdFor, startDefender, type DefenderSimulator } from '../../dev/simulators';

const HOUR = 3_600_000;
const clock: Clock = { now: () => Date.now(), sleep: (ms) => new Promise((r) => setTimeout(r, ms)) };

let azurite: AzuriteTables;
let mde: DefenderSimulator;
let telemetry: RecordingTelemetry;
let machineCount = 0;

beforeAll(async () => {
  await loadApp();
  [azurite, mde] = await Promise.all([
    startAzuriteTables(),
    startDefender({ tls: false, validateToken: () => true, limits: false }),
  ]);
});
afterAll(async () => {
  setDependencies();
  await Promise.all([azurite?.stop(), mde?.close()]);
});

/** A fresh isolated device, so earlier tests' pending actions do not interfere. */
function newMachine(): string {
  machineCount += 1;
  const id = machineIdFor(`state-test-${machineCount}-${randomUUID()}`);
  mde.addMachine({ id, computerDnsName: `dev-${machineCount}`, isolated: true });
  return id;
}

function unisolateActions(machineId: string) {
  return mde.actions().filter((a) => a.machineId === machineId && a.type === 'Unisolate');
}

function newStore(table: string): ReleaseStore {
  return createReleaseStore({ connectionString: azurite.connectionString, tableName: table });
}

/** Installs the app's dependencies: real Defender client and a state table (or none / an unreachable one). */
function install(state: Partial<StateDeps> & { store?: ReleaseStore } = {}): StateDeps {
  telemetry = new RecordingTelemetry();
  const defender = new DefenderClient(mde.url, {
    getToken: async () => 'test-token',
    refresh: async () => undefined,
  });
  const full: StateDeps = {
    store: state.store ?? newStore(`t${randomUUID().replace(/-/g, '').slice(0, 20)}`),
    idempotencyWindowMs: 24 * HOUR,
    trackMaxMs: 24 * HOUR,
    queueMaxMs: 24 * HOUR,
    maxFailures: 10,
    ...state,
  };
  const deps: AppDependencies = {
    release: {
      defender,
      budget: localBudget(100, 1500, clock.now, { perMinute: 10, perHour: 100 }),
      clock,
      random: Math.random,
      telemetry,
      requestTimeoutMs: 5_000,
      retryBudgetMs: { http: 2_000, serviceBus: 2_000 },
      apiHost: new URL(mde.url).host,
    },
    config: parseSettings({ KEY_VAULT_URL: 'https://kv.example/', CHECK_ISOLATION_STATE: 'false' }).config,
    maxDeliveryCount: 10,
    telemetry,
    state: full,
  };
  setDependencies(deps);
  return full;
}

const json = { 'content-type': 'application/json' };

function release(
  machineId: string,
  headers: Record<string, string> = {},
  extra: Record<string, unknown> = {},
) {
  return invokeHttp('unisolate', {
    headers: { ...json, ...headers },
    body: JSON.stringify({ machineId, comment: 'clean and validated', ...extra }),
  });
}

/** Runs a registered timer function once; returns the messages it sent to its (one) output queue. */
async function runTimer(name: string): Promise<unknown[]> {
  const result = await invokeTimer(name);
  if (result.error) throw result.error;
  return result.messages;
}

const runTracker = async (): Promise<Outcome[]> => (await runTimer('trackReleases')) as Outcome[];

function status(correlationId: string) {
  return invokeHttp('releaseStatus', {
    method: 'GET',
    url: `http://localhost:7071/api/unisolate/${encodeURIComponent(correlationId)}`,
    params: { correlationId },
    headers: {},
  });
}

describe('registration', () => {
  it('registers the tracker timer and the status route without clashing with POST unisolate', () => {
    const regs = registrations();
    const timer = Object.values(regs.get('trackReleases')!.bindings).find((b) => b.direction === 'in');
    expect([timer?.type, timer?.schedule]).toEqual(['timerTrigger', '0 */1 * * * *']);
    const out = Object.values(regs.get('trackReleases')!.bindings).find((b) => b.direction === 'out');
    expect(out).toMatchObject({ type: 'serviceBus', queueName: '%RESPONSE_QUEUE_NAME%' });
    const get = Object.values(regs.get('releaseStatus')!.bindings).find((b) => b.direction === 'in');
    expect([get?.route, get?.methods, get?.authLevel]).toEqual([
      'unisolate/{correlationId}',
      ['GET'],
      'function',
    ]);
    const post = Object.values(regs.get('unisolate')!.bindings).find((b) => b.direction === 'in');
    expect(post?.methods).toEqual(['POST']);
  });

  it('registers the resume timer on its default schedule, writing to the request queue', () => {
    const bindings = Object.values(registrations().get('resumeReleases')!.bindings);
    const timer = bindings.find((b) => b.direction === 'in');
    expect([timer?.type, timer?.schedule]).toEqual(['timerTrigger', '*/30 * * * * *']);
    expect(bindings.find((b) => b.direction === 'out')).toMatchObject({
      type: 'serviceBus',
      queueName: '%REQUEST_QUEUE_NAME%',
      connection: 'ServiceBusConnection',
    });
  });
});

describe('parked releases through the registered functions', () => {
  it('HTTP 202 Queued with Location, handed back by the timer, released by the Service Bus trigger, listed by status', async () => {
    install();
    const budget = getDependencies().release.budget;
    // Another tool spent this minute's release budget.
    // Every call of the minute, also on a busy machine, where a lease may still be on its way (bounded).
    for (let spent = 0, tries = 0; spent < 100 && tries < 1000; tries += 1) {
      const slot = await budget.acquire('unisolate', 'release');
      if (!slot.granted) await new Promise((resolve) => setTimeout(resolve, Math.min(slot.waitMs, 50)));
      else {
        slot.slot.release(true);
        spent += 1;
      }
    }
    const machineId = newMachine();
    const correlationId = `INC-Q-${randomUUID()}`;
    const queued = await release(machineId, {}, { correlationId });
    expect(queued.status).toBe(202);
    expect(queued.body).toMatchObject({ status: 'Queued', phase: 'queued', correlationId });
    expect(queued.headers.get('location')).toBe(
      `http://localhost:7071/api/unisolate/${encodeURIComponent(correlationId)}`,
    );
    expect(Number(queued.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(queued.messages).toEqual([queued.body]);
    expect((await status(correlationId)).body).toMatchObject({ releases: [{ status: 'Queued' }] });
    expect(unisolateActions(machineId)).toHaveLength(0);

    // Not due yet: nothing to hand back.
    expect(await runTimer('resumeReleases')).toEqual([]);
    // Time passes (this test's clock is the wall clock: move the release's due time instead).
    const store = getDependencies().state!.store;
    const [parked] = await store.readReleases(correlationId);
    await store.updateRelease({ ...parked!.value, dueAt: Date.now() - 1 }, parked!);
    const handed = await runTimer('resumeReleases');
    expect(handed).toHaveLength(1);
    // The minute has passed for the budget too.
    const current = getDependencies();
    setDependencies({
      ...current,
      release: { ...current.release, budget: localBudget(100, 1500, clock.now) },
    });
    const resumed = await invokeServiceBus('unisolateServiceBus', JSON.stringify(handed[0]), {
      messageId: randomUUID(),
    });
    expect(resumed.error).toBeUndefined();
    expect(resumed.messages).toEqual([
      expect.objectContaining({ status: 'Accepted', phase: 'accepted', correlationId, trigger: 'http' }),
    ]);
    expect(unisolateActions(machineId)).toHaveLength(1);
    // The same resume message again (delivered twice): nothing more happens.
    const twice = await invokeServiceBus('unisolateServiceBus', JSON.stringify(handed[0]), {
      messageId: randomUUID(),
    });
    expect(twice.messages).toEqual([]);
    expect((await status(correlationId)).body).toMatchObject({
      releases: [{ status: 'Accepted', phase: 'accepted' }],
    });
  });

  it('keeps two releases under one correlation id apart: both tracked, both listed', async () => {
    install();
    const [a, b] = [newMachine(), newMachine()];
    const correlationId = `INC-TWO-${randomUUID()}`;
    await release(a, {}, { correlationId });
    await release(b, {}, { correlationId });
    const listed = await status(correlationId);
    expect(listed.status).toBe(200);
    const releases = (listed.body as { releases: Outcome[] }).releases;
    expect(releases.map((r) => r.machineId).sort()).toEqual([a, b].sort());
    for (const id of [a, b]) mde.setActionStatus(unisolateActions(id)[0]!.id, 'Succeeded');
    const completions = await runTracker();
    expect(completions.map((c) => c.machineId).sort()).toEqual([a, b].sort());
  });
});

describe('idempotency against Azurite', () => {
  it('replays a repeat within the window: same status and body, Idempotent-Replayed, one MDE call', async () => {
    install();
    const machineId = newMachine();
    const key = randomUUID();
    const first = await release(machineId, { 'Idempotency-Key': key });
    const second = await release(machineId, { 'Idempotency-Key': key });
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({ status: 'Accepted', phase: 'accepted' });
    expect(first.messages).toHaveLength(1);
    expect(second.status).toBe(201);
    expect(second.body).toEqual(first.body);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    expect(second.messages).toEqual([{ ...(first.messages[0] as object), replayed: true }]);
    expect(unisolateActions(machineId)).toHaveLength(1);
  });

  it('releases again after the window (MDE is called a second time)', async () => {
    install({ idempotencyWindowMs: 1 });
    const machineId = newMachine();
    const first = await release(machineId, {}, { idempotencyKey: 'window-key' });
    await clock.sleep(5);
    const second = await release(machineId, {}, { idempotencyKey: 'window-key' });
    expect(first.status).toBe(201);
    // The first action is still pending, so MDE answers ActiveRequestAlreadyExists: a real second call.
    expect(second.status).toBe(200);
    expect(second.body).toMatchObject({ status: 'AlreadyInProgress' });
    expect(second.headers.get('idempotent-replayed')).toBeNull();
  });

  it('lets exactly one of several concurrent duplicates reach MDE (simulator request log)', async () => {
    install();
    const machineId = newMachine();
    const key = randomUUID();
    const before = mde.requests.filter((r) => r.method === 'POST' && r.path.includes(machineId)).length;
    const results = await Promise.all(
      Array.from({ length: 5 }, () => release(machineId, { 'Idempotency-Key': key })),
    );
    const posts = mde.requests.filter((r) => r.method === 'POST' && r.path.includes(machineId)).length;
    expect(posts - before).toBe(1);
    expect(results.map((r) => r.status)).toEqual([201, 201, 201, 201, 201]);
    expect(results.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(4);
    expect(new Set(results.map((r) => JSON.stringify(r.body))).size).toBe(1);
  });

  it('rejects a key reused with another body with 422', async () => {
    install();
    const machineId = newMachine();
    const key = randomUUID();
    await release(machineId, { 'Idempotency-Key': key });
    const reused = await release(machineId, { 'Idempotency-Key': key }, { comment: 'a different reason' });
    expect(reused.status).toBe(422);
    expect(reused.body).toMatchObject({ status: 'Invalid', error: { code: 'IdempotencyKeyReused' } });
    expect(unisolateActions(machineId)).toHaveLength(1);
  });

  it('re-sends the stored outcome for a duplicate Service Bus message, marked replayed', async () => {
    install();
    const machineId = newMachine();
    const messageId = randomUUID();
    const body = { machineId, comment: 'clean', correlationId: `SB-${messageId}` };
    const first = await invokeServiceBus('unisolateServiceBus', body, { messageId });
    const second = await invokeServiceBus('unisolateServiceBus', body, { messageId, deliveryCount: 1 });
    expect(first.messages).toEqual([expect.objectContaining({ status: 'Accepted', phase: 'accepted' })]);
    expect(first.messages[0]).not.toHaveProperty('replayed');
    expect(second.messages).toEqual([{ ...(first.messages[0] as object), replayed: true }]);
    expect(unisolateActions(machineId)).toHaveLength(1);
  });
});

describe('tracking against Azurite', () => {
  it('follows Pending -> InProgress -> Succeeded: a completed message, and the status endpoint', async () => {
    install();
    const machineId = newMachine();
    const correlationId = `INC-${randomUUID()}`;
    const accepted = await release(machineId, {}, { correlationId });
    const actionId = (accepted.body as Outcome).machineAction!.id;

    expect(await runTracker()).toEqual([]);
    expect((await status(correlationId)).body).toMatchObject({
      correlationId,
      releases: [
        { phase: 'accepted', status: 'Accepted', machineAction: { id: actionId, status: 'Pending' } },
      ],
    });
    mde.setActionStatus(actionId, 'InProgress');
    expect(await runTracker()).toEqual([]);
    expect((await status(correlationId)).body).toMatchObject({
      releases: [{ machineAction: { status: 'InProgress' } }],
    });

    mde.setActionStatus(actionId, 'Succeeded');
    const completions = await runTracker();
    expect(completions).toEqual([
      expect.objectContaining({
        correlationId,
        machineId,
        phase: 'completed',
        status: 'Released',
        machineAction: expect.objectContaining({ id: actionId, status: 'Succeeded' }),
      }),
    ]);
    expect(telemetry.completions).toHaveLength(1);
    const final = await status(correlationId);
    expect(final.status).toBe(200);
    expect(final.body).toMatchObject({ releases: [{ phase: 'completed', status: 'Released' }] });
    expect(await runTracker()).toEqual([]);
  });

  it('reports ReleaseFailed when the action fails', async () => {
    install();
    const machineId = newMachine();
    const accepted = await release(machineId);
    const actionId = (accepted.body as Outcome).machineAction!.id;
    mde.setActionStatus(actionId, 'Failed');
    const [completion] = await runTracker();
    expect(completion).toMatchObject({
      correlationId: (accepted.body as Outcome).correlationId,
      status: 'ReleaseFailed',
      phase: 'completed',
      error: { code: 'ReleaseActionFailed' },
    });
  });

  it('sends TrackingExpired after TRACK_MAX_HOURS', async () => {
    install({ trackMaxMs: 1 });
    const machineId = newMachine();
    const accepted = await release(machineId);
    await clock.sleep(5);
    const before = mde.requests.length;
    const [completion] = await runTracker();
    expect(completion).toMatchObject({
      correlationId: (accepted.body as Outcome).correlationId,
      status: 'TrackingExpired',
      phase: 'completed',
    });
    expect(mde.requests.length).toBe(before);
  });

  it('lets only one of two trackers (separate clients, same table) send the completion', async () => {
    const state = install();
    const table = `race${randomUUID().replace(/-/g, '').slice(0, 16)}`;
    const storeA = newStore(table);
    const storeB = newStore(table);
    install({ store: storeA });
    const accepted = await release(newMachine());
    mde.setActionStatus((accepted.body as Outcome).machineAction!.id, 'Succeeded');
    const base = {
      defender: new DefenderClient(mde.url, { getToken: async () => 't', refresh: async () => undefined }),
      budget: localBudget(100, 1500, clock.now, { perMinute: 10, perHour: 100 }),
      clock,
      random: Math.random,
      telemetry,
      log: recordingLogger(),
      requestTimeoutMs: 5_000,
      apiHost: 'sim',
      trackMaxMs: state.trackMaxMs,
      send: () => undefined,
    };
    const [a, b] = await Promise.all([
      trackReleases({ ...base, store: storeA }),
      trackReleases({ ...base, store: storeB }),
    ]);
    expect([...a, ...b]).toHaveLength(1);
    expect([...a, ...b][0]).toMatchObject({ status: 'Released' });
  });
});

describe('Table Storage unavailable', () => {
  it('still releases per the core contract (no idempotency then) and the status endpoint says 503', async () => {
    // A port nothing listens on: every storage call fails fast.
    const down = createReleaseStore(
      {
        connectionString: azurite.connectionString.replace(/127\.0\.0\.1:\d+/, '127.0.0.1:9'),
        tableName: 'releases',
      },
      { operationTimeoutMs: 2_000 },
    );
    install({ store: down });
    const machineId = newMachine();
    const first = await release(machineId, { 'Idempotency-Key': 'k-down' });
    const second = await release(machineId, { 'Idempotency-Key': 'k-down' });
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({ status: 'Accepted', phase: 'accepted' });
    expect(first.messages).toHaveLength(1);
    // No idempotency without the store: the duplicate reached MDE (which says it is already in progress).
    expect(second.body).toMatchObject({ status: 'AlreadyInProgress' });
    expect(second.headers.get('idempotent-replayed')).toBeNull();
    const lookUp = await status((first.body as Outcome).correlationId);
    expect(lookUp.status).toBe(503);
    expect(lookUp.body).toMatchObject({ error: { code: 'StateUnavailable' } });
    expect(await runTracker()).toEqual([]);
  });

  it('works exactly as before without a store configured: no tracker work, status 503', async () => {
    install();
    setDependencies({ ...(await import('../../src/composition')).getDependencies(), state: undefined });
    const machineId = newMachine();
    const first = await release(machineId, { 'Idempotency-Key': 'k-none' });
    expect(first.status).toBe(201);
    expect((await status('anything')).status).toBe(503);
    expect(await runTracker()).toEqual([]);
  });
});
