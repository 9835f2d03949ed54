/**
 * Look-up by host name, isolation-state check, health gate and bulk requests, through the real DefenderClient
 * (axios, https) against the Defender simulator. The simulator and the app's rate limiter share one fake
 * clock, so pacing waits are instant and the simulator's 100/minute limit is the one the limiter respects.
 */
import { DefenderClient } from '../../src/adapters/defenderClient';
import { handleRequest, type RequestAnswer, type RequestInput } from '../../src/core/pipeline';
import { parseReleasePolicy } from '../../src/core/healthGate';
import type { Outcome } from '../../src/core/outcome';
import type { ReleaseDeps, SafetyOptions } from '../../src/core/release';
import { FakeClock, localBudget, RecordingTelemetry, recordingLogger } from '../support/fakes';
import { machineIdFor, startDefender, type DefenderSimulator, type MachineSeed } from '../../dev/simulators';

const ISOLATED = 'ws-iso-01.contoso.local';
const NEVER = 'srv-never.contoso.local';
const RELEASED = 'ws-released.contoso.local';
const ISOLATING = 'ws-isolating.contoso.local';
const RELEASING = 'ws-releasing.contoso.local';
const RISKY = 'ws-risky.contoso.local';
const ALERTED = 'ws-alerted.contoso.local';
const OUT_OF_SCOPE = 'ws-secret.contoso.local';
const QUOTED = "o'brien-pc.contoso.local";

const seeds: MachineSeed[] = [
  { id: machineIdFor(ISOLATED), computerDnsName: ISOLATED, isolated: true },
  { id: machineIdFor('ws-iso-02.contoso.local'), computerDnsName: 'ws-iso-02.contoso.local', isolated: true },
  { id: machineIdFor(NEVER), computerDnsName: NEVER },
  { id: machineIdFor(RELEASED), computerDnsName: RELEASED, isolated: true },
  { id: machineIdFor(ISOLATING), computerDnsName: ISOLATING },
  { id: machineIdFor(RELEASING), computerDnsName: RELEASING, isolated: true },
  { id: machineIdFor(RISKY), computerDnsName: RISKY, isolated: true, riskScore: 'High' },
  {
    id: machineIdFor(ALERTED),
    computerDnsName: ALERTED,
    isolated: true,
    alerts: [
      { severity: 'High', status: 'Resolved' },
      { severity: 'Medium', status: 'New' },
    ],
  },
  { id: machineIdFor(OUT_OF_SCOPE), computerDnsName: OUT_OF_SCOPE, isolated: true, forbidden: true },
  { id: machineIdFor(QUOTED), computerDnsName: QUOTED, isolated: true },
  // Two records of one host (re-onboarded): a name must never pick one of them.
  {
    id: machineIdFor('dup-1'),
    computerDnsName: 'ws-dup.contoso.local',
    isolated: true,
    healthStatus: 'Inactive',
  },
  { id: machineIdFor('dup-2'), computerDnsName: 'WS-DUP.contoso.local', isolated: true },
  // Short-name neighbours: `ws-short` must match only the first.
  { id: machineIdFor('ws-short.contoso.local'), computerDnsName: 'ws-short.contoso.local', isolated: true },
  { id: machineIdFor('ws-short2.contoso.local'), computerDnsName: 'ws-short2.contoso.local', isolated: true },
];

let mde: DefenderSimulator;
let clock: FakeClock;
let client: DefenderClient;

function deps(safety: SafetyOptions, limiter = localBudget(100, 1500, clock.now)): ReleaseDeps {
  return {
    defender: client,
    budget: limiter,
    clock,
    random: () => 0.5,
    telemetry: new RecordingTelemetry(),
    log: recordingLogger(),
    requestTimeoutMs: 10_000,
    retryBudgetMs: { http: 20_000, serviceBus: 60_000 },
    apiHost: '127.0.0.1',
    safety,
  };
}

const checked: SafetyOptions = { checkIsolationState: true, releasePolicy: null };

/** Runs a request through the pipeline (no durable state). */
function processRequest(
  input: Omit<RequestInput, 'caller'>,
  releaseDeps: ReleaseDeps,
): Promise<RequestAnswer> {
  return handleRequest({ ...input, caller: null }, releaseDeps);
}

async function release(body: Record<string, unknown>, safety = checked): Promise<Outcome> {
  const result = await processRequest(
    { body: { comment: 'clean', ...body }, trigger: 'http', canRedeliver: false },
    deps(safety),
  );
  if (result.kind !== 'single') throw new Error('expected one outcome');
  return result.outcomes[0]!;
}

beforeAll(async () => {
  clock = new FakeClock(Date.now());
  mde = await startDefender({ machines: seeds, clock, validateToken: () => ({ appId: 'app-1' }) });
  client = new DefenderClient(mde.url, { getToken: async () => 'sim-token', refresh: async () => undefined });
  const id = (name: string) => machineIdFor(name);
  mde.addAction({ machineId: id(RELEASED), type: 'Unisolate', status: 'Succeeded' });
  mde.addAction({ machineId: id(ISOLATING), type: 'Isolate', status: 'Pending' });
  mde.addAction({ machineId: id(RELEASING), type: 'Unisolate', status: 'InProgress' });
});
afterAll(async () => mde.close());
beforeEach(() => mde.reset());

let freshCount = 0;
/** A new isolated device (each test releases its own: a released device stays AlreadyInProgress). */
function fresh(extra: Partial<MachineSeed> = {}): string {
  const name = `ws-fresh-${++freshCount}.contoso.local`;
  mde.addMachine({ id: machineIdFor(name), computerDnsName: name, isolated: true, ...extra });
  return name;
}

describe('look-up by host name', () => {
  it('resolves an exact DNS name and releases that device', async () => {
    const outcome = await release({ deviceName: ISOLATED });
    expect(outcome).toMatchObject({
      status: 'Accepted',
      machineId: machineIdFor(ISOLATED),
      deviceName: ISOLATED,
    });
    expect(mde.requests[0]?.path).toContain(
      encodeURIComponent(`computerDnsName eq '${ISOLATED}'`).replace(/'/g, '%27'),
    );
  });

  it('resolves a short name on the first label only, ignoring case', async () => {
    const outcome = await release({ deviceName: 'WS-SHORT' });
    expect(outcome).toMatchObject({ status: 'Accepted', machineId: machineIdFor('ws-short.contoso.local') });
  });

  it('matches a full name case-insensitively', async () => {
    const name = fresh();
    const outcome = await release({ deviceName: name.toUpperCase() });
    expect(outcome).toMatchObject({ status: 'Accepted', machineId: machineIdFor(name) });
  });

  it('answers NotFound for no match, without any release call', async () => {
    const outcome = await release({ deviceName: 'nobody.contoso.local' });
    expect(outcome).toMatchObject({
      status: 'NotFound',
      machineId: null,
      error: { code: 'MachineNotFound' },
    });
    expect(mde.counts.unisolate).toBe(0);
  });

  it('answers Ambiguous with every candidate for two matches, and releases neither', async () => {
    const outcome = await release({ deviceName: 'ws-dup' });
    expect(outcome.status).toBe('Ambiguous');
    expect(outcome.error?.code).toBe('AmbiguousDeviceName');
    expect(outcome.candidates?.map((c) => c.id).sort()).toEqual(
      [machineIdFor('dup-1'), machineIdFor('dup-2')].sort(),
    );
    expect(outcome.candidates?.[0]).toEqual({
      id: expect.stringMatching(/^[0-9a-f]{40}$/),
      computerDnsName: expect.stringMatching(/ws-dup/i),
      lastSeen: expect.any(String),
      healthStatus: expect.any(String),
    });
    expect(mde.counts.unisolate).toBe(0);
  });

  it('never picks from an incomplete page: a short name with more prefix matches than one page is Ambiguous', async () => {
    // pc12.contoso.local, 1,100 neighbours pc12000..pc121099, then pc12.fabrikam.local: the first page of
    // prefix matches (1,000) holds only one of the two devices the short name means.
    const seed = (name: string, isolated = false) =>
      mde.addMachine({ id: machineIdFor(name), computerDnsName: name, isolated });
    seed('pc12.contoso.local', true);
    for (let i = 0; i < 1100; i += 1) seed(`pc12${String(i).padStart(3, '0')}.contoso.local`);
    seed('pc12.fabrikam.local', true);

    const outcome = await release({ deviceName: 'PC12' });
    expect(outcome).toMatchObject({
      status: 'Ambiguous',
      machineId: null,
      error: { code: 'AmbiguousDeviceName', message: expect.stringMatching(/full DNS name.*machineId/) },
    });
    expect(mde.counts.unisolate).toBe(0);
    expect(mde.counts.listMachines).toBe(1);
    // The full DNS name is exact: one device, released.
    expect(await release({ deviceName: 'pc12.contoso.local' })).toMatchObject({
      status: 'Accepted',
      machineId: machineIdFor('pc12.contoso.local'),
    });
  });

  it('escapes quotes: a name with a quote finds its device, an injection attempt finds nothing', async () => {
    expect(await release({ deviceName: QUOTED })).toMatchObject({
      status: 'Accepted',
      machineId: machineIdFor(QUOTED),
    });
    const injection = await release({ deviceName: "x'or'1'eq'1" });
    expect(injection.status).toBe('NotFound');
    const widen = await release({ deviceName: "nobody'%20or%20startswith(computerDnsName,'ws" });
    expect(widen.status).toBe('NotFound');
    expect(mde.counts.unisolate).toBe(1);
  });
});

describe('isolation state', () => {
  const cases: [string, string, string | null][] = [
    ['ws-iso-02.contoso.local', 'Accepted', null],
    [NEVER, 'NotIsolated', 'DeviceNotIsolated'],
    [RELEASED, 'NotIsolated', 'DeviceNotIsolated'],
    [ISOLATING, 'IsolationPending', 'IsolationPending'],
    [RELEASING, 'AlreadyInProgress', null],
  ];
  it.each(cases)('%s → %s', async (name, status, code) => {
    const outcome = await release({ machineId: machineIdFor(name) });
    expect(outcome.status).toBe(status);
    expect(outcome.error?.code ?? null).toBe(code);
    expect(mde.counts.unisolate).toBe(status === 'Accepted' ? 1 : 0);
    if (status === 'AlreadyInProgress')
      expect(outcome.machineAction).toMatchObject({ type: 'Unisolate', status: 'InProgress' });
  });

  it('answers NotFound for an unknown id (history empty, device unknown)', async () => {
    const outcome = await release({ machineId: 'f'.repeat(40) });
    expect(outcome).toMatchObject({ status: 'NotFound', error: { code: 'MachineNotFound' } });
  });

  it('skips the check with a warning when the app may not read actions, and releases', async () => {
    mde.setDenied(['listActions', 'getMachine'], true);
    try {
      const outcome = await release({ machineId: machineIdFor(fresh()) });
      expect(outcome.status).toBe('Accepted');
      expect(outcome.warnings?.[0]).toMatch(/Machine\.Read\.All/);
    } finally {
      mde.setDenied(['listActions', 'getMachine'], false);
    }
  });

  it('makes no check when CHECK_ISOLATION_STATE is off', async () => {
    const outcome = await release(
      { machineId: machineIdFor(NEVER) },
      { checkIsolationState: false, releasePolicy: null },
    );
    expect(outcome.status).toBe('Accepted');
    expect(mde.counts.listActions).toBe(0);
  });
});

describe('health gate', () => {
  const policy = parseReleasePolicy('blockRiskScore=High;blockAlertSeverity=Medium').policy;
  const gated: SafetyOptions = { checkIsolationState: true, releasePolicy: policy };

  it('blocks a High-risk device and one with an unresolved Medium alert; passes a clean one', async () => {
    const risky = await release({ machineId: machineIdFor(RISKY) }, gated);
    expect(risky).toMatchObject({ status: 'Blocked', error: { code: 'ReleaseBlocked' } });
    expect(risky.error?.message).toMatch(/risk score High/);
    const alerted = await release({ deviceName: ALERTED }, gated);
    expect(alerted).toMatchObject({ status: 'Blocked', machineId: machineIdFor(ALERTED) });
    expect(alerted.error?.message).toMatch(/1 unresolved alert/);
    expect(await release({ machineId: machineIdFor(fresh()) }, gated)).toMatchObject({ status: 'Accepted' });
    expect(mde.counts.unisolate).toBe(1);
  });

  it('force bypasses it and is recorded', async () => {
    const outcome = await release({ machineId: machineIdFor(RISKY), force: true }, gated);
    expect(outcome).toMatchObject({ status: 'Accepted', forced: true });
    expect(mde.counts.alerts + mde.counts.getMachine).toBe(0);
  });

  it('fails closed (Blocked, says which permission) when Alert.Read.All is missing', async () => {
    mde.setDenied('alerts', true);
    try {
      const outcome = await release({ machineId: machineIdFor(fresh()) }, gated);
      expect(outcome).toMatchObject({ status: 'Blocked', error: { code: 'HealthCheckUnavailable' } });
      expect(outcome.error?.message).toMatch(/Alert\.Read\.All.*"force": true/);
      expect(mde.counts.unisolate).toBe(0);
    } finally {
      mde.setDenied('alerts', false);
    }
  });
});

describe('bulk', () => {
  it('releases 100 devices mixing every status, one outcome each, with a known number of API calls', async () => {
    // A fresh fleet so earlier tests' actions do not interfere.
    const fleet: { target: Record<string, string>; expect: string; calls: number }[] = [];
    const add = (
      seed: MachineSeed | null,
      target: Record<string, string>,
      expected: string,
      calls: number,
    ) => {
      if (seed) mde.addMachine(seed);
      fleet.push({ target, expect: expected, calls });
    };
    const name = (kind: string, i: number) => `bulk-${kind}-${i}.fabrikam.local`;
    for (let i = 0; i < 40; i++) {
      const n = name('ok', i); // history + getMachine (risk) + unisolate
      add(
        { id: machineIdFor(n), computerDnsName: n, isolated: true },
        { machineId: machineIdFor(n) },
        'Accepted',
        3,
      );
    }
    for (let i = 0; i < 10; i++) {
      const n = name('byname', i); // listMachines (has riskScore) + history + unisolate
      add(
        { id: machineIdFor(n), computerDnsName: n, isolated: true },
        { deviceName: n.split('.')[0]! },
        'Accepted',
        3,
      );
    }
    const seeded = (kind: string, i: number, extra: Partial<MachineSeed> = {}) => {
      const n = name(kind, i);
      mde.addMachine({ id: machineIdFor(n), computerDnsName: n, ...extra });
      return machineIdFor(n);
    };
    for (let i = 0; i < 5; i++) {
      const releasing = seeded('releasing', i, { isolated: true });
      mde.addAction({ machineId: releasing, type: 'Unisolate', status: 'Pending' });
      add(null, { machineId: releasing }, 'AlreadyInProgress', 1); // history only
      add(null, { machineId: seeded('never', i) }, 'NotIsolated', 2); // history + getMachine (exists?)
      const released = seeded('released', i, { isolated: true });
      mde.addAction({ machineId: released, type: 'Unisolate', status: 'Succeeded' });
      add(null, { machineId: released }, 'NotIsolated', 1);
      const isolating = seeded('isolating', i);
      mde.addAction({ machineId: isolating, type: 'Isolate', status: 'InProgress' });
      add(null, { machineId: isolating }, 'IsolationPending', 1);
      add(null, { machineId: machineIdFor(`unknown-${i}`) }, 'NotFound', 3); // history + getMachine 404 + unisolate 404
      add(null, { deviceName: `nobody-${i}.fabrikam.local` }, 'NotFound', 1); // listMachines
      seeded('twin', i, { isolated: true });
      mde.addMachine({
        id: machineIdFor(`twin-b-${i}`),
        computerDnsName: name('twin', i).toUpperCase(),
        isolated: true,
      });
      add(null, { deviceName: `bulk-twin-${i}` }, 'Ambiguous', 1); // listMachines
      add(null, { machineId: seeded('risky', i, { isolated: true, riskScore: 'High' }) }, 'Blocked', 2);
      // Out of the app's device-group scope for isolation: the release answers 403.
      const hidden = seeded('hidden', i, { isolated: true });
      mde.failNext(1, {
        route: `POST /api/machines/${hidden}/unisolate`,
        status: 403,
        body: { error: { code: 'Forbidden', message: 'simulated scope' } },
      });
      add(null, { machineId: hidden }, 'Forbidden', 3);
      const broken = seeded('broken', i, { isolated: true });
      mde.failNext(1, {
        route: `POST /api/machines/${broken}/unisolate`,
        status: 400,
        body: { error: { code: 'InvalidRequestBody', message: 'simulated' } },
      });
      add(null, { machineId: broken }, 'Failed', 3);
    }
    expect(fleet).toHaveLength(100);
    const safety = {
      checkIsolationState: true,
      releasePolicy: parseReleasePolicy('blockRiskScore=High').policy,
    };
    const limiter = localBudget(100, 1500, clock.now);
    const callsBefore = client.calls;
    const result: RequestAnswer = await processRequest(
      {
        body: { comment: 'incident closed', correlationId: 'INC-BULK', devices: fleet.map((f) => f.target) },
        trigger: 'serviceBus',
        canRedeliver: false,
        deliveryCount: 1,
      },
      deps(safety, limiter),
    );
    if (result.kind !== 'bulk') throw new Error('expected a bulk result');
    expect(result.outcomes.map((o, i) => `${i} ${o.status} ${o.error?.message ?? ''}`)).toEqual(
      fleet.map((f, i): unknown => expect.stringMatching(new RegExp(`^${i} ${f.expect} `))),
    );
    expect(result.outcomes.map((o) => o.index)).toEqual(fleet.map((_, i) => i));
    expect(new Set(result.outcomes.map((o) => o.correlationId))).toEqual(new Set(['INC-BULK']));
    const expectedCalls = fleet.reduce((sum, f) => sum + f.calls, 0);
    expect(client.calls - callsBefore).toBe(expectedCalls);
    expect(mde.requests).toHaveLength(expectedCalls);
    // Paced by the limiter: more than 100 calls, yet the simulator (same clock) never had to throttle.
    expect(expectedCalls).toBeGreaterThan(100);
    expect(mde.throttledCount).toBe(0);
    expect(mde.counts.unisolate).toBe(40 + 10); // 'hidden' and 'broken' were faulted before the handler
    console.log(
      `bulk of 100: ${expectedCalls} Defender API calls, ${(clock.sleeps.reduce((a, b) => a + b, 0) / 1000).toFixed(0)} s of pacing (fake clock)`,
    );
  }, 60_000);
});
