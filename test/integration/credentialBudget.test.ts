/**
 * Key Vault, managed identity and Entra ID calls are bounded by the invocation's retry budget: on a cold
 * instance, a dependency that accepts the connection and never answers ends the request with the transient
 * `SecretUnavailable` / `TokenUnavailable` (503 + Retry-After on HTTP, redelivery on Service Bus) instead of
 * holding it open until the platform's front-end limit. Real SDKs against the simulators, short budgets, no
 * timing assertions: each case only has to end, with the right outcome.
 */
import { startEnvironment, type LocalEnvironment } from '../../dev/environment';
import { invokeHttp, invokeServiceBus, loadApp } from '../../dev/host';
import { machineIdFor } from '../../dev/simulators';

let env: LocalEnvironment;
let counter = 0;

beforeAll(async () => {
  await loadApp();
  env = await startEnvironment({ telemetry: false });
});
afterAll(async () => env.close());

let id: string;
beforeEach(() => {
  for (const sim of [env.keyVault, env.entra, env.mi, env.defender]) sim.reset();
  counter += 1;
  const name = `budget-${counter}.contoso.local`;
  id = env.defender.addMachine({ id: machineIdFor(name), computerDnsName: name, isolated: true }).id;
});

/** A cold instance (fresh dependencies, nothing cached) with a short retry budget. */
function coldInstance(overrides: Record<string, string> = {}): void {
  env.install({ MDE_RETRY_BUDGET_MS: '1500', CHECK_ISOLATION_STATE: 'false', ...overrides });
}

const release = (headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  invokeHttp('unisolateMachine', {
    params: { machineId: id },
    headers,
    body: JSON.stringify({ machineId: id, Comment: 'Clean and validated' }),
  });

const codeOf = (body: unknown): unknown => (body as { error?: { code?: string } }).error?.code;

describe('a dependency that never answers ends the request within the budget', () => {
  it('Key Vault: HTTP answers 503 SecretUnavailable with Retry-After', async () => {
    coldInstance();
    env.keyVault.failNext(10, { route: 'GET /secrets/**', hang: true });
    const result = await release();
    expect([result.status, codeOf(result.body)]).toEqual([503, 'SecretUnavailable']);
    expect(result.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(env.defender.counts.unisolate).toBe(0);
  }, 15_000);

  it('Entra token endpoint: HTTP answers 503 TokenUnavailable', async () => {
    coldInstance();
    env.entra.failNext(10, { route: 'POST /*/oauth2/v2.0/token', hang: true });
    const result = await release();
    expect([result.status, codeOf(result.body)]).toEqual([503, 'TokenUnavailable']);
    expect(env.defender.counts.unisolate).toBe(0);
  }, 15_000);

  it('Key Vault on Service Bus: the delivery is handed back for redelivery', async () => {
    coldInstance();
    env.keyVault.failNext(10, { route: 'GET /secrets/**', hang: true });
    const result = await invokeServiceBus('unisolateServiceBus', { machineId: id, comment: 'clean' });
    expect(result.error?.name).toBe('RedeliveryRequested');
    expect((result.error as { error?: { code?: string } }).error?.code).toBe('SecretUnavailable');
  }, 15_000);

  it('the webhook signing secret: 503 SecretUnavailable before anything else', async () => {
    env.keyVault.setSecret('budget-webhook-key', 'w'.repeat(64));
    coldInstance({ WEBHOOK_SIGNING_SECRET_NAME: 'budget-webhook-key' });
    env.keyVault.failNext(10, { route: /^GET \/secrets\/budget-webhook-key\b/, hang: true });
    const result = await release();
    expect([result.status, codeOf(result.body)]).toEqual([503, 'SecretUnavailable']);
    expect(env.defender.counts.unisolate).toBe(0);
  }, 15_000);

  it('once the dependency answers again, the same instance releases normally', async () => {
    coldInstance();
    env.keyVault.failNext(3, { route: 'GET /secrets/**', hang: true });
    expect((await release()).status).toBe(503);
    env.keyVault.faults.length = 0;
    const result = await release();
    expect([result.status, (result.body as { status?: string }).status]).toEqual([201, 'Accepted']);
  }, 15_000);
});
