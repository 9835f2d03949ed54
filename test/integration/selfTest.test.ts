/**
 * `GET /api/selftest` and the cold-start self-test, through the registered function with the real SDKs
 * against the simulators: every check passing (each credential mode), and each one failing with what to do.
 * The Defender read counts in the rate budget (the tracker's share); no report holds a secret, key, token or a
 * setting's value.
 */
import type { AppDependencies } from '../../src/composition';
import { getDependencies, startupSelfTest } from '../../src/composition';
import type { SelfTestReport } from '../../src/core/selfTest';
import {
  APP_IDENTITY,
  MDE_APP,
  startEnvironment,
  testCertificate,
  type LocalEnvironment,
} from '../../dev/environment';
import { invokeHttp, loadApp } from '../../dev/host';
import { recordingLogger } from '../support/fakes';
import { machineIdFor } from '../../dev/simulators';

let env: LocalEnvironment;
const reports: string[] = [];

beforeAll(async () => {
  await loadApp();
  env = await startEnvironment();
});
afterAll(async () => env.close());
beforeEach(() => {
  for (const sim of [env.keyVault, env.entra, env.mi, env.defender]) sim.reset();
  env.entra.setRoles(MDE_APP.clientId, MDE_APP.roles);
});

async function selfTest(
  overrides: Record<string, string> = {},
): Promise<{ status: number; report: SelfTestReport }> {
  env.install(overrides);
  const result = await invokeHttp('selfTest', { method: 'GET', url: 'http://localhost:7071/api/selftest' });
  reports.push(JSON.stringify(result.body));
  return { status: result.status, report: result.body as SelfTestReport };
}

const check = (report: SelfTestReport, name: string) => report.checks.find((c) => c.name === name)!;
const failed = (report: SelfTestReport) => report.checks.filter((c) => !c.ok).map((c) => c.name);

describe('GET /api/selftest', () => {
  it('every check passes: 200, in order, names and versions only', async () => {
    const { status, report } = await selfTest();
    expect(status).toBe(200);
    expect(report).toMatchObject({ ok: true, cloud: 'Commercial', credential: 'secret' });
    expect(report.checks.map((c) => c.name)).toEqual([
      'settings',
      'keyVault',
      'token',
      'defenderApi',
      'stateTable',
      'queues',
      'telemetry',
    ]);
    const version = env.keyVault.versions('mde-client-secret').at(-1)!.version;
    expect(check(report, 'keyVault').detail).toContain(
      `mde-client-secret (MDE app client secret, version ${version})`,
    );
    expect(check(report, 'token').detail).toContain('Machine.Isolate, Machine.Read.All');
    expect(report.checks.every((c) => c.fix === null)).toBe(true);
  });

  it('certificate and federated modes pass too (federated: Key Vault not used)', async () => {
    const certificate = await selfTest({ MDE_CREDENTIAL: 'certificate' });
    expect([certificate.status, failed(certificate.report)]).toEqual([200, []]);
    expect(check(certificate.report, 'keyVault').detail).toContain(
      'mde-client-certificate (MDE app certificate',
    );
    const federated = await selfTest({
      MDE_CREDENTIAL: 'federated',
      AZURE_CLIENT_ID: APP_IDENTITY.clientId,
      MDE_TENANT_ID: MDE_APP.tenantId,
      MDE_CLIENT_ID: MDE_APP.clientId,
      KEY_VAULT_URL: '',
    });
    expect([federated.status, failed(federated.report)]).toEqual([200, []]);
    expect(check(federated.report, 'keyVault').detail).toMatch(/^not used/);
  });

  it('invalid settings: 503 naming every invalid setting, not its value; the other checks are not run', async () => {
    const error = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    const { status, report } = await selfTest({ MDE_CLOUD: 'Azure', MDE_CREDENTIAL: 'password' }).finally(
      () => error.mockRestore(),
    );
    expect(status).toBe(503);
    expect(check(report, 'settings').detail).toMatch(/MDE_CLOUD.*MDE_CREDENTIAL/);
    expect(JSON.stringify(report)).not.toMatch(/Azure"|password/);
    expect(failed(report)).toHaveLength(7);
  });

  it('Key Vault refusing: keyVault fails with the role to grant', async () => {
    env.keyVault.failNext(20, { route: /^GET \/secrets\//, status: 403 });
    const { status, report } = await selfTest();
    expect(status).toBe(503);
    expect(check(report, 'keyVault')).toMatchObject({
      ok: false,
      fix: expect.stringContaining('Key Vault Secrets User'),
    });
  });

  it('a missing permission: token fails naming it, and why it is needed', async () => {
    env.entra.setRoles(MDE_APP.clientId, ['Machine.Read.All']);
    const { report } = await selfTest({ RELEASE_POLICY: 'blockAlertSeverity=High' });
    expect(failed(report)).toEqual(['token']);
    expect(check(report, 'token').detail).toMatch(
      /missing Machine\.Isolate \(for every release\), Alert\.Read\.All/,
    );
    expect(check(report, 'token').fix).toMatch(
      /WindowsDefenderATP application permissions Machine\.Isolate, Alert\.Read\.All/,
    );
  });

  it('Machine.Read.All is required only when a feature reads', async () => {
    env.entra.setRoles(MDE_APP.clientId, ['Machine.Isolate']);
    expect(failed((await selfTest()).report)).toEqual(['token']);
    const { report } = await selfTest({ CHECK_ISOLATION_STATE: 'false' });
    expect(failed(report)).toEqual([]);
    expect(check(report, 'token').detail).toContain('release by deviceName is refused');
  });

  it('a rejected credential: token fails with the rejection; Defender is not reachable with it either', async () => {
    const { report } = await selfTest({
      MDE_CREDENTIAL: 'certificate',
      KV_CERTIFICATE_NAME: 'other-certificate',
    });
    expect(check(report, 'keyVault')).toMatchObject({
      ok: false,
      detail: expect.stringContaining('other-certificate does not exist'),
    });
    expect(failed(report)).toEqual(expect.arrayContaining(['keyVault', 'token', 'defenderApi']));
  });

  it('Defender refusing the token (401): defenderApi fails, pointing at tenant and cloud', async () => {
    env.defender.failNext(5, { route: 'GET /api/machineactions', status: 401 });
    const { report } = await selfTest();
    expect(check(report, 'defenderApi')).toMatchObject({
      ok: false,
      fix: expect.stringContaining('MDE_CLOUD'),
    });
  });

  it('the state table unreachable, and telemetry not configured', async () => {
    const { report } = await selfTest({
      STATE_TABLE_CONNECTION_STRING:
        'DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;',
      APPLICATIONINSIGHTS_CONNECTION_STRING: '',
    });
    expect(failed(report)).toEqual(['stateTable', 'telemetry']);
  });

  it("the Defender read is counted in the budget of the API it reads, in the tracker's share", async () => {
    // One list-machine-actions call a minute for releases, one for the tracker: the self-test spends the
    // tracker's, so the next release's isolation check (the same API) still finds its own.
    const { report } = await selfTest({
      MDE_RATE_LIMIT_PER_MINUTE: '2',
      TRACK_RATE_LIMIT_PER_MINUTE: '1',
      MDE_RETRY_BUDGET_MS: '500',
      CHECK_ISOLATION_STATE: 'true',
    });
    expect(check(report, 'defenderApi').ok).toBe(true);
    const id = env.defender.addMachine({
      id: machineIdFor('selftest-budget'),
      computerDnsName: 'selftest-budget',
      isolated: true,
    }).id;
    const release = await invokeHttp('unisolateMachine', {
      params: { machineId: id },
      body: JSON.stringify({ Comment: 'after the self-test' }),
    });
    expect([release.status, (release.body as { status: string }).status]).toEqual([201, 'Accepted']);
    const budget = getDependencies().release.budget;
    expect((await budget.acquire('listMachineActions', 'tracker')).granted).toBe(false);
  });
});

describe('cold-start self-test', () => {
  it('reuses what the first release read: one Key Vault read per item in total, and no Defender call', async () => {
    const deps: AppDependencies = env.install({});
    const id = env.defender.addMachine({
      id: machineIdFor('selftest-cold'),
      computerDnsName: 'selftest-cold',
      isolated: true,
    }).id;
    const release = await invokeHttp('unisolateMachine', {
      params: { machineId: id },
      body: JSON.stringify({ Comment: 'before the cold-start self-test' }),
    });
    expect(release.status).toBe(201);
    const calls = { ...env.defender.counts };
    // Tenant id, client id, client secret: each read once, by the release.
    expect(env.keyVault.secretReads).toBe(3);
    const log = recordingLogger();
    await startupSelfTest(deps, log);
    expect(env.keyVault.secretReads).toBe(3);
    expect(env.defender.counts).toEqual(calls);
    expect(log.lines.join('\n')).not.toMatch(/Self-test failed/);
  });

  it('sends UnisolateSelfTest and logs a warning naming each failed check', async () => {
    env.entra.setRoles(MDE_APP.clientId, ['Machine.Isolate']);
    const deps: AppDependencies = env.install({});
    const log = recordingLogger();
    await startupSelfTest(deps, log);
    expect(log.lines.join('\n')).toMatch(/^warn Self-test failed: token /m);
    await deps.telemetry.flush();
    const event = await env.ingestion.waitFor((e) => JSON.stringify(e).includes('UnisolateSelfTest'), {
      timeoutMs: 10_000,
    });
    expect(JSON.stringify(event)).toContain('"failedChecks":"token"');
  });
});

it('no report holds a secret, key or token', () => {
  const tokens = env.entra.registry.entries().map((t) => t.token.slice(-24));
  const key = testCertificate.pem(1).split('\n')[3]!;
  expect(reports.length).toBeGreaterThan(8);
  for (const text of reports) {
    for (const needle of [MDE_APP.clientSecret, key, 'PRIVATE KEY', ...tokens])
      expect(text).not.toContain(needle);
  }
});
