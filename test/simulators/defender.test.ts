/**
 * The local Defender for Endpoint simulator matches the real API: unisolate, action queries, machines and
 * alerts, per-API rate limits, and injected faults.
 */
import http from 'node:http';
import axios, { type AxiosInstance, type AxiosResponse } from 'axios';
import {
  TokenRegistry,
  defaultMachines,
  machineIdFor,
  opaqueToken,
  startDefender,
  type DefenderSimOptions,
  type DefenderSimulator,
} from '../../dev/simulators';

const APP = 'aaaaaaaa-1111-4222-8333-444444444444';
const OTHER_APP = 'bbbbbbbb-1111-4222-8333-444444444444';
const FIN = machineIdFor('ws-fin-042.contoso.local');
const SQL = machineIdFor('srv-sql-03.contoso.local');

/** Mints a Defender-audience token into `registry` (what the Entra simulator would do). */
function mint(
  registry: TokenRegistry,
  clientId = APP,
  audience = 'https://api.securitycenter.microsoft.com',
): string {
  const now = Date.now();
  return registry.register({
    token: opaqueToken('mde-'),
    issuer: 'entra',
    audience,
    scope: `${audience}/.default`,
    tenantId: 't',
    clientId,
    issuedAt: now,
    expiresAt: now + 3_600_000,
  }).token;
}

/** The `value` array of an OData collection response. */
function values<T>(res: AxiosResponse): T[] {
  return (res.data as { value: T[] }).value;
}

/** A manual clock for rate-limit and auto-progress tests. */
function manualClock(start = Date.UTC(2025, 0, 15, 9, 0, 0)): { now(): number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

describe('Defender for Endpoint simulator', () => {
  let registry: TokenRegistry;
  let mde: DefenderSimulator;
  let api: AxiosInstance;
  let token: string;
  const started: DefenderSimulator[] = [];

  async function start(
    options: DefenderSimOptions = {},
  ): Promise<{ sim: DefenderSimulator; api: AxiosInstance }> {
    const sim = await startDefender({ registry, machines: defaultMachines(), ...options });
    started.push(sim);
    const client = axios.create({
      baseURL: sim.url,
      headers: { Authorization: `Bearer ${token}` },
      validateStatus: () => true,
    });
    return { sim, api: client };
  }

  beforeEach(async () => {
    registry = new TokenRegistry();
    token = mint(registry);
    ({ sim: mde, api } = await start());
  });

  afterEach(async () => {
    await Promise.all(started.splice(0).map((s) => s.close()));
  });

  describe('unisolate', () => {
    test('201 with a complete MachineAction, then 400 ActiveRequestAlreadyExists while Pending', async () => {
      expect(mde.isIsolated(FIN)).toBe(true);
      const res = await api.post(`/api/machines/${FIN}/unisolate`, { Comment: 'clean after triage' });
      expect(res.status).toBe(201);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      const a = res.data;
      expect(a).toMatchObject({
        type: 'Unisolate',
        requestor: APP,
        requestorComment: 'clean after triage',
        status: 'Pending',
        machineId: FIN,
        computerDnsName: 'ws-fin-042.contoso.local',
        cancellationRequestor: null,
        cancellationComment: null,
        cancellationDateTimeUtc: null,
        relatedFileInfo: null,
        commands: [],
        externalId: null,
      });
      expect(a.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(typeof a.title).toBe('string');
      expect(a.creationDateTimeUtc).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
      expect(a.lastUpdateDateTimeUtc).toBe(a.creationDateTimeUtc);

      const again = await api.post(`/api/machines/${FIN}/unisolate`, { Comment: 'again' });
      expect(again.status).toBe(400);
      expect(again.data).toEqual({
        error: {
          code: 'ActiveRequestAlreadyExists',
          message: 'Action is already in progress',
          target: expect.any(String),
        },
      });

      // Still conflicting while InProgress; allowed again once Succeeded, and the device is released.
      mde.setActionStatus(a.id, 'InProgress');
      expect((await api.post(`/api/machines/${FIN}/unisolate`, { Comment: 'x' })).status).toBe(400);
      mde.setActionStatus(a.id, 'Succeeded');
      expect(mde.isIsolated(FIN)).toBe(false);
      expect((await api.post(`/api/machines/${FIN}/unisolate`, { Comment: 'x' })).status).toBe(201);
      expect(mde.counts.unisolate).toBe(4);
    });

    test('401 without or with a bad token, 403 out of scope, 404 unknown, 400 bad body', async () => {
      const noAuth = await api.post(
        `/api/machines/${FIN}/unisolate`,
        { Comment: 'x' },
        { headers: { Authorization: '' } },
      );
      expect(noAuth.status).toBe(401);
      expect(noAuth.data.error).toMatchObject({ code: 'Unauthorized', target: expect.any(String) });
      const wrongAudience = mint(registry, APP, 'https://vault.azure.net');
      const bad = await api.post(
        `/api/machines/${FIN}/unisolate`,
        { Comment: 'x' },
        { headers: { Authorization: `Bearer ${wrongAudience}` } },
      );
      expect(bad.status).toBe(401);
      expect(mde.unauthorizedCount).toBe(2);

      mde.setMachine(SQL, { forbidden: true });
      const forbidden = await api.post(`/api/machines/${SQL}/unisolate`, { Comment: 'x' });
      expect(forbidden.status).toBe(403);
      expect(forbidden.data.error.code).toBe('Forbidden');

      const unknown = 'f'.repeat(40);
      const missing = await api.post(`/api/machines/${unknown}/unisolate`, { Comment: 'x' });
      expect(missing.status).toBe(404);
      expect(missing.data.error).toMatchObject({
        code: 'ResourceNotFound',
        message: `Machine ${unknown} was not found`,
      });

      for (const body of [{}, { Comment: '' }, { comment: 'wrong case' }, 'not json']) {
        const res = await api.post(`/api/machines/${FIN}/unisolate`, body, {
          headers: { 'Content-Type': 'application/json' },
        });
        expect([res.status, res.data.error.code]).toEqual([400, 'InvalidRequestBody']);
      }
      expect(mde.actions().filter((x) => x.type === 'Unisolate')).toHaveLength(0);
    });

    test('isolate sets up state and validates IsolationType', async () => {
      expect(mde.isIsolated(SQL)).toBe(false);
      const res = await api.post(`/api/machines/${SQL}/isolate`, {
        Comment: 'contain',
        IsolationType: 'Selective',
      });
      expect(res.status).toBe(201);
      expect(res.data).toMatchObject({ type: 'Isolate', scope: 'Selective', status: 'Pending' });
      mde.setActionStatus(res.data.id, 'Succeeded');
      expect(mde.isIsolated(SQL)).toBe(true);
      const bad = await api.post(`/api/machines/${SQL}/isolate`, { Comment: 'x', IsolationType: 'Partial' });
      expect(bad.status).toBe(400);
      expect(mde.counts.isolate).toBe(2);
    });

    test('autoProgress moves actions Pending → InProgress → Succeeded on the injected clock', async () => {
      const clock = manualClock();
      const { sim, api: client } = await start({
        clock,
        autoProgress: { toInProgressMs: 5_000, toSucceededMs: 20_000 },
      });
      const created = await client.post(`/api/machines/${FIN}/unisolate`, { Comment: 'x' });
      const get = async (): Promise<string> =>
        ((await client.get(`/api/machineactions/${created.data.id}`)).data as { status: string }).status;
      expect(await get()).toBe('Pending');
      clock.advance(5_000);
      expect(await get()).toBe('InProgress');
      clock.advance(15_000);
      expect(await get()).toBe('Succeeded');
      expect(sim.isIsolated(FIN)).toBe(false);
      const listed = await client.get('/api/machineactions', {
        params: { $filter: `machineId eq '${FIN}'` },
      });
      expect(values<{ status: string }>(listed).map((a) => a.status)).toEqual(['Succeeded', 'Succeeded']);
    });
  });

  describe('machine actions queries', () => {
    test('$filter by machineId and type, $orderby creationDateTimeUtc desc, $top', async () => {
      const first = (await api.post(`/api/machines/${FIN}/unisolate`, { Comment: '1' })).data;
      mde.setActionStatus(first.id, 'Failed');
      const second = (await api.post(`/api/machines/${FIN}/unisolate`, { Comment: '2' })).data;
      await api.post(`/api/machines/${SQL}/isolate`, { Comment: 'other machine' });

      const res = await api.get('/api/machineactions', {
        params: {
          $filter: `machineId eq '${FIN}' and type eq 'Unisolate'`,
          $orderby: 'creationDateTimeUtc desc',
          $top: '1',
        },
      });
      expect(res.status).toBe(200);
      expect(res.data['@odata.context']).toMatch(/\$metadata#MachineActions$/);
      expect(values<{ id: string }>(res).map((a) => a.id)).toEqual([second.id]);

      const all = await api.get(
        `/api/machineactions?$filter=machineId eq '${FIN}'&$orderby=creationDateTimeUtc desc`,
      );
      expect(values<{ type: string }>(all).map((a) => a.type)).toEqual(['Unisolate', 'Unisolate', 'Isolate']);
      const byStatus = await api.get('/api/machineactions', { params: { $filter: "status eq 'Failed'" } });
      expect(values<{ id: string }>(byStatus).map((a) => a.id)).toEqual([first.id]);

      const one = await api.get(`/api/machineactions/${second.id}`);
      expect(one.status).toBe(200);
      expect(one.data).toMatchObject({ id: second.id, requestorComment: '2' });
      const none = await api.get(`/api/machineactions/${'0'.repeat(8)}-0000-0000-0000-${'0'.repeat(12)}`);
      expect(none.status).toBe(404);
      expect(mde.counts).toMatchObject({ listActions: 3, getAction: 2, unisolate: 2, isolate: 1 });
    });

    test('malformed $filter is 400 ODataError', async () => {
      const res = await api.get('/api/machineactions', { params: { $filter: "machineId eq 'unterminated" } });
      expect(res.status).toBe(400);
      expect(res.data.error.code).toBe('ODataError');
    });
  });

  describe('machines and alerts', () => {
    test('$filter computerDnsName eq is case-insensitive, handles quote escaping; startswith works', async () => {
      mde.addMachine({ id: machineIdFor("o'brien-pc"), computerDnsName: "o'brien-pc.contoso.local" });
      const eq = await api.get('/api/machines', {
        params: { $filter: "computerDnsName eq 'WS-FIN-042.contoso.local'" },
      });
      expect(values<{ id: string }>(eq).map((m) => m.id)).toEqual([FIN]);
      const quoted = await api.get('/api/machines', {
        params: { $filter: "computerDnsName eq 'o''brien-pc.contoso.local'" },
      });
      expect(quoted.data.value).toHaveLength(1);
      const prefix = await api.get('/api/machines', {
        params: { $filter: "startswith(computerDnsName,'ws-')" },
      });
      expect(
        values<{ computerDnsName: string }>(prefix)
          .map((m) => m.computerDnsName)
          .sort(),
      ).toEqual(['ws-fin-042.contoso.local', 'ws-hr-017.contoso.local', 'ws-mkt-221.contoso.local']);
      const m = prefix.data.value[0];
      for (const field of [
        'id',
        'computerDnsName',
        'osPlatform',
        'healthStatus',
        'riskScore',
        'exposureLevel',
        'lastSeen',
        'machineTags',
      ]) {
        expect(m).toHaveProperty(field);
      }
      expect(m.id).toMatch(/^[0-9a-f]{40}$/);
    });

    test('GET machine by id or by name, out-of-scope machines are 403 and hidden from lists', async () => {
      const byId = await api.get(`/api/machines/${FIN}`);
      expect(byId.data).toMatchObject({ id: FIN, computerDnsName: 'ws-fin-042.contoso.local' });
      const byName = await api.get('/api/machines/ws-fin-042.contoso.local');
      expect(byName.data.id).toBe(FIN);
      expect((await api.get(`/api/machines/${'a'.repeat(40)}`)).status).toBe(404);

      mde.setMachine(FIN, { forbidden: true, riskScore: 'Medium' });
      expect((await api.get(`/api/machines/${FIN}`)).status).toBe(403);
      expect((await api.get(`/api/machines/${FIN}/alerts`)).status).toBe(403);
      const list = await api.get('/api/machines');
      expect(values<{ id: string }>(list).map((x) => x.id)).not.toContain(FIN);
      expect(list.data.value).toHaveLength(4);
    });

    test('alerts with severity and status; addAlert', async () => {
      const res = await api.get(`/api/machines/${FIN}/alerts`);
      expect(res.status).toBe(200);
      expect(res.data.value).toEqual([
        expect.objectContaining({ severity: 'High', status: 'New', machineId: FIN }),
      ]);
      mde.addAlert(FIN, { severity: 'Low', status: 'Resolved' });
      const open = await api.get(`/api/machines/${FIN}/alerts`, {
        params: { $filter: "status ne 'Resolved'" },
      });
      expect(open.data.value).toHaveLength(1);
      expect((await api.get(`/api/machines/${FIN}/alerts`)).data.value).toHaveLength(2);
      expect(mde.counts.alerts).toBe(3);
    });

    test('permission denial: denyRead makes GETs 403 but unisolate still works; setDenied toggles', async () => {
      const { sim, api: client } = await start({ denyRead: true });
      for (const path of [
        '/api/machines',
        `/api/machines/${FIN}`,
        `/api/machines/${FIN}/alerts`,
        '/api/machineactions',
      ]) {
        const res = await client.get(path);
        expect([path, res.status, res.data.error.code]).toEqual([path, 403, 'Forbidden']);
      }
      expect((await client.post(`/api/machines/${FIN}/unisolate`, { Comment: 'x' })).status).toBe(201);
      sim.setDenied('alerts', false);
      expect((await client.get(`/api/machines/${FIN}/alerts`)).status).toBe(200);
      sim.setDenied('unisolate', true);
      const denied = await client.post(`/api/machines/${SQL}/unisolate`, { Comment: 'x' });
      expect(denied.status).toBe(403);
      expect(denied.data.error.message).toContain('Machine.Isolate');
    });
  });

  describe('rate limits', () => {
    test('each API has its own 100/minute: the 101st call of one API is 429 with Retry-After, other APIs still answer', async () => {
      const clock = manualClock();
      const { sim, api: client } = await start({ clock, tls: false });
      for (let i = 0; i < 100; i++) {
        expect((await client.get('/api/machines')).status).toBe(200);
        clock.advance(100); // 100 calls over 10 s
      }
      const throttled = await client.get('/api/machines');
      expect(throttled.status).toBe(429);
      expect(throttled.data.error.code).toBe('TooManyRequests');
      // Oldest call was 10 s ago → it leaves the window in 50 s.
      expect(throttled.headers['retry-after']).toBe('50');
      expect(sim.throttledCount).toBe(1);
      expect(sim.throttledByRoute.listMachines).toBe(1);

      // Every other API of the same app still has its whole budget (limits are per API).
      expect((await client.get('/api/machineactions')).status).toBe(200);
      expect((await client.get(`/api/machines/${FIN}/alerts`)).status).toBe(200);
      expect((await client.post(`/api/machines/${FIN}/unisolate`, { Comment: 'x' })).status).toBe(201);

      // Another app has its own quota.
      const other = mint(registry, OTHER_APP);
      expect(
        (await client.get('/api/machines', { headers: { Authorization: `Bearer ${other}` } })).status,
      ).toBe(200);

      clock.advance(50_000);
      expect((await client.get('/api/machines')).status).toBe(200);
      expect(sim.counts.listMachines).toBe(102);
      expect(sim.throttledCount).toBe(1);
    });

    test('hourly limit applies even when each minute stays under the per-minute limit', async () => {
      expect(mde.limits).toEqual({ perMinute: 100, perHour: 1500 }); // documented defaults
      const clock = manualClock();
      // Same sliding-window code as 1500/h, scaled down so the test stays fast.
      const { sim } = await start({
        clock,
        tls: false,
        machines: [],
        limits: { perMinute: 100, perHour: 300 },
      });
      const agent = new http.Agent({ keepAlive: true });
      // Raw http rather than axios: hundreds of sequential calls, keep the suite fast.
      const get = (): Promise<{ status: number; retryAfter: string | undefined }> =>
        new Promise((resolve, reject) => {
          const req = http.get(
            `${sim.url}/api/machines`,
            { agent, headers: { authorization: `Bearer ${token}` } },
            (res) => {
              res.resume();
              res.on('end', () =>
                resolve({
                  status: res.statusCode ?? 0,
                  retryAfter: res.headers['retry-after'],
                }),
              );
            },
          );
          req.on('error', reject);
        });
      try {
        for (let i = 0; i < 300; i++) {
          const res = await get();
          if (res.status !== 200) throw new Error(`call ${i} got ${res.status}`);
          clock.advance(1_000); // 60/min: never minute-throttled
        }
        const res = await get();
        expect(res.status).toBe(429);
        // First call (300 s ago) leaves the hour window in 3300 s.
        expect(res.retryAfter).toBe('3300');
        clock.advance(3_300_000);
        expect((await get()).status).toBe(200);
        expect(sim.throttledCount).toBe(1);
        expect(sim.counts.listMachines).toBe(301);
      } finally {
        agent.destroy();
      }
    });

    test('limits: false disables throttling', async () => {
      const { sim, api: client } = await start({ limits: false, tls: false });
      for (let i = 0; i < 120; i++) expect((await client.get('/api/machines')).status).toBe(200);
      expect(sim.throttledCount).toBe(0);
    });
  });

  describe('faults', () => {
    test('503 twice then success, scoped to a route', async () => {
      mde.failNext(2, { route: 'POST /api/machines/*/unisolate', status: 503 });
      expect((await api.get('/api/machines')).status).toBe(200); // other routes unaffected
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) {
        statuses.push((await api.post(`/api/machines/${FIN}/unisolate`, { Comment: `try ${i}` })).status);
      }
      expect(statuses).toEqual([503, 503, 201]);
      expect(mde.faults).toHaveLength(0);
      expect(mde.requests.filter((r) => r.method === 'POST')).toHaveLength(3);
    });

    test('failNext(n, fault, route) scopes by route too', async () => {
      mde.failNext(1, { status: 500 }, 'GET /api/machines/*/alerts');
      expect((await api.get(`/api/machines/${FIN}`)).status).toBe(200);
      expect((await api.get(`/api/machines/${FIN}/alerts`)).status).toBe(500);
      expect((await api.get(`/api/machines/${FIN}/alerts`)).status).toBe(200);
    });

    test('429 fault with Retry-After and custom body', async () => {
      mde.faults.push({ status: 429, headers: { 'Retry-After': '7' } });
      const res = await api.get('/api/machines');
      expect(res.status).toBe(429);
      expect(res.headers['retry-after']).toBe('7');
      expect(res.data.error.code).toBe('TooManyRequests');
    });

    test('reset → ECONNRESET', async () => {
      mde.failNext(1, { reset: true });
      const err: unknown = await api.get('/api/machines').catch((e: unknown) => e);
      expect(axios.isAxiosError(err) && err.code).toBe('ECONNRESET');
      expect((await api.get('/api/machines')).status).toBe(200);
    });

    test('reset over plain http → ECONNRESET', async () => {
      const { sim, api: client } = await start({ tls: false });
      sim.failNext(1, { reset: true });
      const err: unknown = await client.get('/api/machines').catch((e: unknown) => e);
      expect(axios.isAxiosError(err) && err.code).toBe('ECONNRESET');
    });

    test('hang → client timeout; close() does not wait for the hang', async () => {
      mde.failNext(1, { hangMs: 60_000 });
      const err: unknown = await api.get('/api/machines', { timeout: 150 }).catch((e: unknown) => e);
      expect(axios.isAxiosError(err) && err.code).toBe('ECONNABORTED');
      const t0 = Date.now();
      await mde.close();
      expect(Date.now() - t0).toBeLessThan(1000);
    });

    test('hang then answer', async () => {
      mde.failNext(1, { hangMs: 120 });
      const t0 = Date.now();
      const res = await api.get('/api/machines');
      expect(res.status).toBe(200);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
    });

    test('down → ECONNREFUSED, up again on the same port', async () => {
      const port = mde.port;
      await mde.setDown(true);
      expect(mde.isDown).toBe(true);
      const err: unknown = await api.get('/api/machines').catch((e: unknown) => e);
      expect(axios.isAxiosError(err) && err.code).toBe('ECONNREFUSED');
      await mde.setDown(false);
      expect(mde.port).toBe(port);
      expect((await api.get('/api/machines')).status).toBe(200);
    });

    test('reset() clears requests, faults, counters and throttle windows', async () => {
      await api.get('/api/machines');
      mde.failNext(3, { status: 500 });
      mde.reset();
      expect(mde.requests).toHaveLength(0);
      expect(mde.faults).toHaveLength(0);
      expect(mde.counts.listMachines).toBe(0);
      expect((await api.get('/api/machines')).status).toBe(200);
      expect(mde.machines()).toHaveLength(5); // seeded data is kept
    });
  });

  test('records requests with lower-cased headers, including authorization', async () => {
    await api.post(`/api/machines/${FIN}/unisolate`, { Comment: 'recorded' });
    const rec = mde.requests[0]!;
    expect(rec).toMatchObject({ method: 'POST', path: `/api/machines/${FIN}/unisolate` });
    expect(rec.headers.authorization).toBe(`Bearer ${token}`);
    expect(JSON.parse(rec.body)).toEqual({ Comment: 'recorded' });
    expect(typeof rec.at).toBe('number');
  });
});
