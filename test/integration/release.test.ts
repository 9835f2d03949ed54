/**
 * The whole release path with the real SDKs (@azure/identity, @azure/keyvault-secrets, axios,
 * applicationinsights) against local simulators, through the registered functions: every row of the status
 * table, both request shapes and casings, the Service Bus semantics and the fault-injection table.
 */
import { machineIdFor } from '../../dev/simulators';
import { MDE_APP, startEnvironment, type LocalEnvironment } from '../../dev/environment';
import { ScaledClock } from '../../dev/clock';
import { invokeHttp, invokeServiceBus, loadApp, onLog } from '../../dev/host';

/** What the app logged through `context.log` & co. (every invocation of this file). */
const capturedLogs: string[] = [];
onLog((entry) => capturedLogs.push(`[${entry.level}] ${entry.message}`));

const json = { 'content-type': 'application/json' };
let env: LocalEnvironment;

function addMachine(name: string): string {
  return env.defender.addMachine({ id: machineIdFor(name), computerDnsName: name, isolated: true }).id;
}

function machineIds(): string[] {
  return env.defender.machines().map((m) => m.id);
}

beforeAll(async () => {
  await loadApp();
  env = await startEnvironment();
});
afterAll(async () => env.close());

let clock: ScaledClock;
let id: string;
let counter = 0;
beforeEach(() => {
  env.defender.reset();
  env.keyVault.reset();
  env.entra.reset();
  env.mi.reset();
  env.ingestion.reset();
  env.defender.setLimits({ perMinute: 100, perHour: 1500 });
  // Each test releases a fresh device, so AlreadyInProgress only appears where a test wants it.
  counter += 1;
  id = addMachine(`it-${counter}.contoso.local`);
  clock = new ScaledClock(60);
});

function install(overrides: Record<string, string> = {}, withClock?: ScaledClock) {
  return env.install(
    { MDE_RETRY_BUDGET_MS: '20000', CHECK_ISOLATION_STATE: 'false', ...overrides },
    withClock,
  );
}

const release = (machineId: string, extra: Record<string, unknown> = {}) =>
  invokeHttp('unisolateMachine', {
    params: { machineId },
    headers: json,
    body: JSON.stringify({ Comment: 'Clean and validated', ...extra }),
  });

describe('status table, HTTP', () => {
  it('Accepted: 201 with the MachineAction, same outcome on the queue, MDE called once with the comment', async () => {
    install();
    const result = await release(id, { correlationId: 'INC0012345', requestedBy: 'analyst@contoso.com' });
    expect(result.status).toBe(201);
    expect(result.body).toMatchObject({
      schemaVersion: 1,
      correlationId: 'INC0012345',
      machineId: id,
      status: 'Accepted',
      machineAction: {
        type: 'Unisolate',
        status: 'Pending',
        machineId: id,
        requestorComment: 'Clean and validated',
      },
      error: null,
      trigger: 'http',
      requestedBy: 'analyst@contoso.com',
      attempts: 1,
    });
    expect(result.messages).toEqual([result.body]);
    const call = env.defender.requests.find((r) => r.method === 'POST')!;
    expect(call.path).toBe(`/api/machines/${id}/unisolate`);
    expect(JSON.parse(call.body)).toEqual({ Comment: 'Clean and validated' });
    expect(call.headers.authorization).toMatch(/^Bearer /);
    expect(env.entra.lastScope).toBe('https://api.securitycenter.microsoft.com/.default');
  });

  it('accepts the body route with MDE casing and the device in the body', async () => {
    install();
    const result = await invokeHttp('unisolate', {
      headers: json,
      body: JSON.stringify({ MachineId: id.toUpperCase(), Comment: 'ok', CorrelationId: 'CHG1' }),
    });
    expect([result.status, (result.body as { machineId: string }).machineId]).toEqual([201, id]);
  });

  it('reads Key Vault and Entra once per instance, not per request', async () => {
    install();
    await release(id);
    const reads = env.keyVault.secretReads;
    const tokens = env.entra.tokensIssued;
    expect(reads).toBe(3);
    expect(tokens).toBe(1);
    for (const other of machineIds().slice(0, 4)) await release(other);
    expect([env.keyVault.secretReads, env.entra.tokensIssued]).toEqual([reads, tokens]);
  });

  it("asks the managed identity for the vault's token while Key Vault answers its challenge, once", async () => {
    // An identity of its own: MSAL keeps managed identity tokens for the whole process.
    const identityId = '0c9d3e0a-6f5b-4b7e-9a51-7a1f2e3d4c5b';
    env.mi.addUserAssignedIdentity(identityId);
    install({ AZURE_CLIENT_ID: identityId });
    // The first (unauthenticated) requests of a cold Key Vault client get the vault's challenge, late.
    env.keyVault.failNext(3, { hangMs: 400 });
    const result = await release(id);
    expect(result.status).toBe(201);
    const challenged = env.keyVault.requests[0]!.at;
    const identity = env.mi.requests.filter((r) => r.path.includes('token'));
    // Requested before the challenge was answered; the challenge then finds the token ready.
    expect(identity).toHaveLength(1);
    expect(identity[0]!.at).toBeLessThan(challenged + 400);
    expect(env.keyVault.secretReads).toBe(3);
  });

  it('AlreadyInProgress: 200 with the pending action found by look-up', async () => {
    install();
    const first = await release(id);
    const second = await release(id);
    expect(second.status).toBe(200);
    expect(second.body).toMatchObject({
      status: 'AlreadyInProgress',
      error: null,
      machineAction: { id: (first.body as { machineAction: { id: string } }).machineAction.id },
    });
    expect(env.defender.counts.listActions).toBe(1);
  });

  it('Invalid: 400 listing every problem, Defender never called', async () => {
    install();
    const result = await invokeHttp('unisolate', { headers: json, body: JSON.stringify({ machineId: 'x' }) });
    expect(result.status).toBe(400);
    expect(result.body).toMatchObject({ status: 'Invalid', error: { code: 'InvalidRequest' } });
    expect(env.defender.requests).toHaveLength(0);
    expect(result.messages).toHaveLength(1);
  });

  it('NotFound: 404 for an unknown device', async () => {
    install();
    const result = await release('0'.repeat(40));
    expect([result.status, (result.body as { status: string }).status]).toEqual([404, 'NotFound']);
  });

  it('Forbidden: 502 when the device is outside the app scope', async () => {
    install();
    env.defender.setMachine(id, { forbidden: true });
    const result = await release(id);
    expect(result.status).toBe(502);
    expect(result.body).toMatchObject({ status: 'Forbidden', error: { code: 'MdeForbidden' } });
    expect((result.body as { error: { message: string } }).error.message).toMatch(/Machine\.Isolate/);
  });

  it('Throttled: 429 with Retry-After when MDE throttles beyond the budget', async () => {
    install();
    env.defender.failNext(5, {
      route: 'POST /api/machines/*/unisolate',
      status: 429,
      headers: { 'Retry-After': '120' },
    });
    const result = await release(id);
    expect(result.status).toBe(429);
    expect(result.headers.get('retry-after')).toBe('120');
    expect(result.body).toMatchObject({ status: 'Throttled', error: { code: 'MdeThrottled' } });
    expect(env.defender.requests).toHaveLength(1);
  });

  it('Failed: 502 after retries when MDE keeps failing with 500', async () => {
    install({ MDE_RETRY_BUDGET_MS: '3000' });
    env.defender.failNext(50, { route: 'POST /api/machines/*/unisolate', status: 500 });
    const result = await release(id);
    expect(result.status).toBe(502);
    expect(result.body).toMatchObject({ status: 'Failed', error: { code: 'MdeUnavailable' } });
    expect((result.body as { attempts: number }).attempts).toBeGreaterThan(1);
  });

  it('Failed: 503 with ConfigurationError when a setting is invalid, listing every problem', async () => {
    install({ MDE_CLOUD: 'Mars', MAX_DELIVERY_COUNT: 'ten' });
    const result = await release(id);
    expect(result.status).toBe(503);
    expect((result.body as { error: { message: string } }).error.message).toMatch(
      /MDE_CLOUD.*MAX_DELIVERY_COUNT/,
    );
  });
});

describe('fault injection', () => {
  it('MDE 503 x2 then 201: Accepted, attempts 3', async () => {
    install();
    env.defender.failNext(2, { route: 'POST /api/machines/*/unisolate', status: 503 });
    const result = await release(id);
    expect(result.body).toMatchObject({ status: 'Accepted', attempts: 3 });
    expect(env.defender.requests.filter((r) => r.method === 'POST')).toHaveLength(3);
  });

  it('MDE 429 Retry-After: 2 then 201: waits at least 2 s (scaled clock), Accepted', async () => {
    // Virtual time runs 60x: a generous budget covers the cold start (Key Vault, token) in virtual seconds.
    install({ MDE_RETRY_BUDGET_MS: '600000', MDE_REQUEST_TIMEOUT_MS: '120000' }, clock);
    env.defender.failNext(1, {
      route: 'POST /api/machines/*/unisolate',
      status: 429,
      headers: { 'Retry-After': '2' },
    });
    const result = await release(id);
    expect(result.body).toMatchObject({ status: 'Accepted', attempts: 2 });
    expect(clock.sleeps).toContain(2000);
  });

  it('MDE connection reset: retried, then Accepted', async () => {
    install();
    env.defender.failNext(2, { route: 'POST /api/machines/*/unisolate', reset: true });
    const result = await release(id);
    expect(result.body).toMatchObject({ status: 'Accepted', attempts: 3 });
  });

  it('MDE hangs past the timeout every time: Failed with a clear message', async () => {
    install({ MDE_REQUEST_TIMEOUT_MS: '200', MDE_RETRY_BUDGET_MS: '5000' });
    env.defender.failNext(20, { route: 'POST /api/machines/*/unisolate', hangMs: 2000 });
    const result = await release(id);
    expect(result.status).toBe(502);
    expect(result.body).toMatchObject({ status: 'Failed', error: { code: 'MdeTimeout' } });
    expect((result.body as { attempts: number }).attempts).toBeGreaterThan(1);
  });

  it('MDE 401 after a secret rotation: re-reads Key Vault, new token, Accepted', async () => {
    install();
    await release(machineIds()[0]!);
    const reads = env.keyVault.secretReads;
    env.entra.setClientSecret(MDE_APP.clientId, 'rotated~secret-value-DO-NOT-LEAK');
    env.keyVault.setSecret('mde-client-secret', 'rotated~secret-value-DO-NOT-LEAK');
    env.defender.failNext(1, { route: 'POST /api/machines/*/unisolate', status: 401 });
    const result = await release(id);
    expect(result.body).toMatchObject({ status: 'Accepted', attempts: 2 });
    expect(env.keyVault.secretReads).toBe(reads + 3);
    env.entra.setClientSecret(MDE_APP.clientId, MDE_APP.clientSecret);
    env.keyVault.setSecret('mde-client-secret', MDE_APP.clientSecret);
  });

  it('client secret rejected by Entra ID: re-reads Key Vault once, then Failed 503 CredentialsRejected', async () => {
    install();
    env.entra.setClientSecret(MDE_APP.clientId, 'only~entra~knows~this~one');
    try {
      const result = await release(id);
      expect(result.status).toBe(503);
      expect(result.body).toMatchObject({ status: 'Failed', error: { code: 'CredentialsRejected' } });
      expect((result.body as { error: { message: string } }).error.message).toMatch(
        /AADSTS7000215.*mde-client-secret/,
      );
      expect(env.keyVault.secretReads).toBe(6);
      expect(env.defender.requests).toHaveLength(0);
    } finally {
      env.entra.setClientSecret(MDE_APP.clientId, MDE_APP.clientSecret);
    }
  });

  it('Key Vault down: HTTP Failed 503 SecretUnavailable; Service Bus throws for redelivery', async () => {
    install();
    await env.keyVault.setDown(true);
    try {
      const result = await release(id);
      expect(result.status).toBe(503);
      expect(result.body).toMatchObject({ status: 'Failed', error: { code: 'SecretUnavailable' } });
      const sb = await invokeServiceBus(
        'unisolateServiceBus',
        { machineId: id, comment: 'x' },
        { deliveryCount: 1 },
      );
      expect(sb.error?.name).toBe('RedeliveryRequested');
      expect(sb.messages).toEqual([]);
    } finally {
      await env.keyVault.setDown(false);
    }
    expect(env.defender.requests).toHaveLength(0);
  });

  it('managed identity endpoint down: same as Key Vault down, with a message naming the identity', async () => {
    // A user-assigned identity nobody has asked a token for yet: no token is cached for it anywhere.
    const clientId = '0000aaaa-0000-4000-8000-00000000feed';
    env.mi.addUserAssignedIdentity(clientId);
    install({ AZURE_CLIENT_ID: clientId });
    await env.mi.setDown(true);
    try {
      const result = await release(id);
      expect(result.status).toBe(503);
      expect(result.body).toMatchObject({ status: 'Failed', error: { code: 'SecretUnavailable' } });
      expect((result.body as { error: { message: string } }).error.message).toMatch(/managed identity/);
    } finally {
      await env.mi.setDown(false);
    }
  });

  it('Application Insights ingestion down: outcome unchanged', async () => {
    install();
    await env.ingestion.setDown(true);
    try {
      const result = await release(id);
      expect(result.body).toMatchObject({ status: 'Accepted' });
    } finally {
      await env.ingestion.setDown(false);
    }
  });
});

describe('Service Bus semantics', () => {
  it('Accepted from a JSON string message; correlation id from the message', async () => {
    install();
    const result = await invokeServiceBus(
      'unisolateServiceBus',
      JSON.stringify({ machineId: id, comment: 'x' }),
      {
        correlationId: 'SENTINEL-42',
      },
    );
    expect(result.messages).toEqual([
      expect.objectContaining({ status: 'Accepted', correlationId: 'SENTINEL-42' }),
    ]);
  });

  it('MDE 429 beyond the budget: throws, and on the last delivery reports Throttled', async () => {
    install({ MAX_DELIVERY_COUNT: '3' });
    env.defender.failNext(10, {
      route: 'POST /api/machines/*/unisolate',
      status: 429,
      headers: { 'Retry-After': '600' },
    });
    const early = await invokeServiceBus(
      'unisolateServiceBus',
      { machineId: id, comment: 'x' },
      { deliveryCount: 1 },
    );
    expect(early.error?.name).toBe('RedeliveryRequested');
    const last = await invokeServiceBus(
      'unisolateServiceBus',
      { machineId: id, comment: 'x' },
      { deliveryCount: 3 },
    );
    expect(last.messages).toEqual([expect.objectContaining({ status: 'Throttled' })]);
  });
});

describe('secrets never leave', () => {
  it('no secret or token appears in logs, outcomes or telemetry', async () => {
    const dependencies = install();
    await release(id);
    await release(id);
    env.defender.failNext(1, { route: 'POST /api/machines/*/unisolate', status: 401 });
    await release(machineIds()[1]!);
    await dependencies.telemetry.flush();
    const secrets = [MDE_APP.clientSecret, ...env.entra.issued.map((t) => t.token)];
    expect(secrets.length).toBeGreaterThan(1);
    const haystack = JSON.stringify([capturedLogs, env.ingestion.envelopes]);
    for (const secret of secrets) expect(haystack).not.toContain(secret);
  });
});
