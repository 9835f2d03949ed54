/** Bulk requests through the registered handlers: HTTP 207 with an array, one queue message per device. */
import { setDependencies, type AppDependencies } from '../../src/composition';
import { parseSettings } from '../../src/config';
import { FakeDefender, fakeDeps } from '../support/fakes';
import { invokeHttp, invokeServiceBus, loadApp } from '../../dev/host';

const ids = ['1', '2'].map((c) => c.repeat(40));

function install(defender: FakeDefender, env: Record<string, string> = {}) {
  const { deps, telemetry } = fakeDeps(defender);
  const app: AppDependencies = {
    release: deps,
    config: parseSettings({ KEY_VAULT_URL: 'https://kv.example/', ...env }).config,
    maxDeliveryCount: 10,
    telemetry,
  };
  setDependencies(app);
}

beforeAll(() => loadApp());
afterEach(() => setDependencies());

describe('bulk through the handlers', () => {
  it('HTTP: 207 with one outcome per device, each also sent to the response queue', async () => {
    const defender = new FakeDefender();
    defender.historyScript = [{ status: 200, body: { value: [] } }]; // first device: never isolated
    install(defender);
    const result = await invokeHttp('unisolate', {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        comment: 'done',
        correlationId: 'INC7',
        devices: ids.map((machineId) => ({ machineId })),
      }),
    });
    expect(result.status).toBe(207);
    expect(result.body).toEqual([
      expect.objectContaining({ index: 0, machineId: ids[0], status: 'NotIsolated', correlationId: 'INC7' }),
      expect.objectContaining({ index: 1, machineId: ids[1], status: 'Accepted', correlationId: 'INC7' }),
    ]);
    expect(result.messages).toEqual(result.body);
  });

  it('HTTP: a single device by name answers with one outcome (not an array)', async () => {
    const defender = new FakeDefender();
    defender.machinesScript = [
      {
        status: 200,
        body: { value: [{ id: ids[0], computerDnsName: 'ws-7.contoso.local', riskScore: 'Low' }] },
      },
    ];
    install(defender);
    const result = await invokeHttp('unisolate', {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ comment: 'done', deviceName: 'WS-7' }),
    });
    expect(result.status).toBe(201);
    expect(result.body).toMatchObject({ status: 'Accepted', machineId: ids[0], deviceName: 'WS-7' });
    expect(defender.readCalls).toEqual([
      "listMachines startswith(computerDnsName,'WS-7')",
      `history machineId eq '${ids[0]}'`,
    ]);
  });

  it('HTTP: safety refusals are 409 and RELEASE_POLICY / force come from settings and body', async () => {
    const defender = new FakeDefender();
    defender.machineScript = [{ status: 200, body: { id: ids[0], computerDnsName: 'x', riskScore: 'High' } }];
    install(defender, { RELEASE_POLICY: 'blockRiskScore=High' });
    const blocked = await invokeHttp('unisolateMachine', {
      params: { machineId: ids[0]! },
      body: JSON.stringify({ Comment: 'done' }),
    });
    expect(blocked.status).toBe(409);
    expect(blocked.body).toMatchObject({ status: 'Blocked', error: { code: 'ReleaseBlocked' } });
    const forced = await invokeHttp('unisolateMachine', {
      params: { machineId: ids[0]! },
      body: JSON.stringify({ Comment: 'done', force: true }),
    });
    expect(forced.status).toBe(201);
    expect(forced.body).toMatchObject({ status: 'Accepted', forced: true });
  });

  it('Service Bus: one response-queue message per device', async () => {
    install(new FakeDefender());
    const result = await invokeServiceBus('unisolateServiceBus', {
      comment: 'done',
      devices: [{ machineId: ids[0] }, { machineId: ids[1] }],
    });
    expect(result.error).toBeUndefined();
    expect(result.messages).toEqual([
      expect.objectContaining({ index: 0, status: 'Accepted', trigger: 'serviceBus' }),
      expect.objectContaining({ index: 1, status: 'Accepted', trigger: 'serviceBus' }),
    ]);
  });
});
