/**
 * `GET /api/selftest` through the registered function: the caller checks of the release routes (signed
 * webhooks, app roles, failing closed), a report that names invalid settings but never their values, the
 * Defender read outside the releases' budget, and a report reused within a short window.
 */
import {
  buildDependencies,
  setDependencies,
  SELF_TEST_REUSE_MS,
  type AppDependencies,
  type CallerChecks,
} from '../../src/composition';
import { parseSettings } from '../../src/config';
import type { SelfTestProbes, SelfTestReport } from '../../src/core/selfTest';
import { computeSignature, SignatureVerifier } from '../../src/core/signature';
import { FakeDefender, fakeDeps, localBudget } from '../support/fakes';
import { invokeHttp, loadApp, onLog } from '../../dev/host';

const SECRET = 'self-test-webhook-secret-0123456789abcdef';
const JWT = (roles: string[]) =>
  `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from(JSON.stringify({ roles })).toString('base64url')}.sig`;

const logs: string[] = [];
onLog((entry) => logs.push(`[${entry.level}] ${entry.message}`));

/** Probes that answer at once: a vault with one item, a token with both roles, no state table. */
const probes: SelfTestProbes = {
  vault: async () => [{ name: 'mde-client-secret', what: 'MDE app client secret', version: 'v1' }],
  token: async () => JWT(['Machine.Isolate', 'Machine.Read.All']),
};

function install(callers: Partial<CallerChecks> = {}) {
  const defender = new FakeDefender();
  const { deps, telemetry, clock } = fakeDeps(defender);
  const app: AppDependencies = {
    release: deps,
    config: parseSettings({
      KEY_VAULT_URL: 'https://kv.example/',
      APPLICATIONINSIGHTS_CONNECTION_STRING: 'InstrumentationKey=00000000-0000-0000-0000-000000000000',
    }).config,
    maxDeliveryCount: 10,
    telemetry,
    selfTestProbes: probes,
    callers: {
      policy: { platformAuthEnabled: false, allowedRoles: [] },
      signatures: new SignatureVerifier({ now: clock.now }),
      ...callers,
    },
  };
  setDependencies(app);
  return { app, defender, clock };
}

const selfTest = (headers: Record<string, string> = {}) => invokeHttp('selfTest', { headers });

function signed(nowMs: number): Record<string, string> {
  const ts = String(Math.floor(nowMs / 1000));
  // A GET has no body: the signature covers "<timestamp>.GET <path>".
  return {
    'x-unisolate-timestamp': ts,
    'x-unisolate-signature': computeSignature(SECRET, ts, 'GET /api/selftest'),
  };
}

function principal(roles: string[]): string {
  const claims = [{ typ: 'upn', val: 'admin@contoso.com' }, ...roles.map((val) => ({ typ: 'roles', val }))];
  return Buffer.from(JSON.stringify({ auth_typ: 'aad', claims })).toString('base64');
}

beforeAll(() => loadApp());
beforeEach(() => (logs.length = 0));
afterEach(() => setDependencies());

describe('GET /api/selftest: the caller checks of the release routes', () => {
  it('signed webhooks: an unsigned caller is refused (401, no report); a signed one gets the report', async () => {
    const { clock } = install({ webhookSecret: { keys: async () => [SECRET] } });
    const unsigned = await selfTest();
    expect(unsigned.status).toBe(401);
    expect(unsigned.body).toMatchObject({ error: { code: 'SignatureInvalid' } });
    expect(JSON.stringify(unsigned.body)).not.toContain('checks');
    const ok = await selfTest(signed(clock.now()));
    expect(ok.status).toBe(200);
    expect((ok.body as SelfTestReport).ok).toBe(true);
  });

  it('app roles: a caller without a role is refused; one with the role gets the report', async () => {
    install({ policy: { platformAuthEnabled: true, allowedRoles: ['Unisolate.Invoke'] } });
    expect((await selfTest()).status).toBe(401);
    expect((await selfTest({ 'x-ms-client-principal': principal(['Other.Role']) })).status).toBe(403);
    const ok = await selfTest({ 'x-ms-client-principal': principal(['Unisolate.Invoke']) });
    expect(ok.status).toBe(200);
  });

  it('invalid caller-check settings: every caller is refused (fail closed)', async () => {
    install({ misconfigured: ['ALLOWED_CALLER_ROLES is set but App Service Authentication is not enabled'] });
    const result = await selfTest();
    expect(result.status).toBe(503);
    expect(result.body).toMatchObject({ error: { code: 'ConfigurationError' } });
  });
});

describe('GET /api/selftest: the report', () => {
  it('names the invalid settings, never their values; the problems with values go to the log', async () => {
    const error = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      setDependencies(
        buildDependencies({
          KEY_VAULT_URL: 'https://kv-mde.vault.azure.net/',
          MDE_CLOUD: 'Commercal',
          KV_SECRET_CLIENT_SECRET: 'not_a_vault_name',
        }),
      );
    } finally {
      error.mockRestore();
    }
    const result = await selfTest();
    expect(result.status).toBe(503);
    const settings = (result.body as SelfTestReport).checks.find((c) => c.name === 'settings')!;
    expect(settings.detail).toMatch(/MDE_CLOUD.*KV_SECRET_CLIENT_SECRET/);
    const body = JSON.stringify(result.body);
    for (const value of ['Commercal', 'not_a_vault_name']) {
      expect(body).not.toContain(value);
      expect(logs.join('\n')).toContain(value);
    }
  });

  it("the Defender read spends the tracker's small share, not the releases'", async () => {
    const { app, defender } = install();
    // One call a minute of list machine actions, and it belongs to the tracker.
    const budget = localBudget(2, 100, app.release.clock.now, { perMinute: 1, perHour: 10 });
    setDependencies({ ...app, release: { ...app.release, budget } });
    expect((await selfTest()).status).toBe(200);
    expect(defender.listCalls).toEqual(["type eq 'Unisolate'"]);
    expect((await budget.acquire('listMachineActions', 'release')).granted).toBe(true);
    expect((await budget.acquire('listMachineActions', 'tracker')).granted).toBe(false);
  });

  it(`a GET within ${SELF_TEST_REUSE_MS / 1000} s reuses the last report (with its Age); later it runs again`, async () => {
    const { defender, clock } = install();
    const first = await selfTest();
    clock.time += SELF_TEST_REUSE_MS - 1000;
    const again = await selfTest();
    expect(again.body).toEqual(first.body);
    expect(again.headers.get('age')).toBe(String((SELF_TEST_REUSE_MS - 1000) / 1000));
    expect(defender.listCalls).toHaveLength(1);
    clock.time += 1000;
    const fresh = await selfTest();
    expect(fresh.headers.get('age')).toBeNull();
    expect(defender.listCalls).toHaveLength(2);
  });
});
