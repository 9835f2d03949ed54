/**
 * Secrets never leave: every path (success, each failure, invalid, signature failures, Key Vault down, token
 * rejected) runs through the REAL adapters (@azure/identity, @azure/keyvault-secrets, axios,
 * applicationinsights) against the local simulators, with known secret values. Everything the app emits is
 * captured: `context.log` lines, console output, telemetry envelopes received by the ingestion simulator,
 * HTTP responses (status, headers, body), queue messages and errors thrown for redelivery. None may contain
 * the MDE client secret, the webhook signing secret, or any token the simulators issued.
 */
import type { AppDependencies } from '../../src/composition';
import { computeSignature } from '../../src/core/signature';
import { MDE_APP, startEnvironment, type LocalEnvironment } from '../../dev/environment';
import { invokeHttp, invokeServiceBus, loadApp } from '../../dev/host';
import { machineIdFor } from '../../dev/simulators';
import { captureOutput, type CapturedOutput } from '../support/fakeApp';

const WEBHOOK_SECRET_NAME = 'unisolate-webhook-key';
const WEBHOOK_SECRET = 'whsec~webhook-signing-secret-value-DO-NOT-LEAK-0123456789';
const ROTATED_CLIENT_SECRET = 'rotated~wrong-client-secret-DO-NOT-LEAK';

let env: LocalEnvironment;
/** Everything the app emitted, as text. */
const emitted: string[] = [];
/** What the app logged (`context.log` & co.) and printed (every invocation of this file). */
let output: CapturedOutput;

beforeAll(async () => {
  await loadApp();
  env = await startEnvironment();
  env.keyVault.setSecret(WEBHOOK_SECRET_NAME, WEBHOOK_SECRET);
  output = captureOutput();
});

afterAll(async () => {
  output?.restore();
  await env?.close();
});

const json = { 'content-type': 'application/json' };

function isolatedDevice(name: string): string {
  return env.defender.addMachine({ id: machineIdFor(name), computerDnsName: name, isolated: true }).id;
}

const installed: AppDependencies[] = [];
function install(overrides: Record<string, string> = {}): void {
  installed.push(
    env.install({
      WEBHOOK_SIGNING_SECRET_NAME: WEBHOOK_SECRET_NAME,
      MDE_RETRY_BUDGET_MS: '1500',
      ...overrides,
    }),
  );
}

/** Drops faults a case queued but did not use, so they cannot leak into the next case. */
function clearFaults(): void {
  for (const sim of [env.defender, env.keyVault, env.entra, env.mi]) sim.faults.length = 0;
}
afterEach(clearFaults);

let nonce = 0;

function signedHeaders(body: string, secret = WEBHOOK_SECRET): Record<string, string> {
  const timestamp = String(Math.floor(Date.now() / 1000));
  return {
    ...json,
    'x-unisolate-timestamp': timestamp,
    'x-unisolate-signature': computeSignature(secret, timestamp, body),
  };
}

async function http(
  machineId: string,
  body: Record<string, unknown>,
  headers?: (raw: string) => Record<string, string>,
  rawBody?: string,
): Promise<{ status: number; body: unknown }> {
  // A nonce (an unknown field, ignored) keeps every signed body, hence every signature, unique.
  nonce += 1;
  const raw =
    rawBody ??
    JSON.stringify({
      machineId,
      comment: 'Clean and validated',
      correlationId: 'INC-REDACT',
      nonce,
      ...body,
    });
  const result = await invokeHttp('unisolateMachine', {
    params: { machineId },
    headers: (headers ?? signedHeaders)(raw),
    body: raw,
  });
  emitted.push(String(result.status), JSON.stringify([...result.headers]), JSON.stringify(result.body));
  emitted.push(...result.messages.map((m) => JSON.stringify(m)));
  return result;
}

async function serviceBus(
  message: unknown,
  deliveryCount = 1,
): Promise<{ messages: unknown[]; error?: Error }> {
  const result = await invokeServiceBus('unisolateServiceBus', message, { deliveryCount });
  emitted.push(...result.messages.map((m) => JSON.stringify(m)));
  if (result.error) {
    emitted.push(result.error.message, String(result.error.stack), JSON.stringify(result.error));
    emitted.push(
      String(
        (result.error as { outcome?: unknown }).outcome &&
          JSON.stringify((result.error as { outcome?: unknown }).outcome),
      ),
    );
  }
  return result;
}

const codeOf = (result: { body: unknown }): unknown =>
  (result.body as { error?: { code?: string } }).error?.code;

describe('secret redaction across every path', () => {
  it('success, AlreadyInProgress, NotFound, Invalid, Forbidden, Throttled, Failed (HTTP and Service Bus)', async () => {
    install();
    const id = isolatedDevice('redact-ok.contoso.local');
    expect((await http(id, { requestedBy: 'analyst@contoso.com' })).status).toBe(201);
    expect((await http(id, {})).status).toBe(200); // AlreadyInProgress
    expect((await http(machineIdFor('redact-missing.contoso.local'), {})).status).toBe(404);
    expect((await http(id, { comment: '' })).status).toBe(400);

    const forbidden = isolatedDevice('redact-403.contoso.local');
    env.defender.failNext(10, { route: 'POST /api/machines/*/unisolate', status: 403 });
    expect(await http(forbidden, {})).toMatchObject({ status: 502, body: { status: 'Forbidden' } });
    clearFaults();

    const throttled = isolatedDevice('redact-429.contoso.local');
    env.defender.failNext(10, {
      route: 'POST /api/machines/*/unisolate',
      status: 429,
      headers: { 'Retry-After': '1' },
    });
    expect(await http(throttled, {})).toMatchObject({ status: 429, body: { status: 'Throttled' } });
    clearFaults();

    const failing = isolatedDevice('redact-500.contoso.local');
    env.defender.failNext(10, { route: 'POST /api/machines/*/unisolate', status: 500 });
    expect(await http(failing, {})).toMatchObject({ body: { status: 'Failed' } });
    clearFaults();

    const sbDevice = isolatedDevice('redact-sb.contoso.local');
    expect((await serviceBus({ machineId: sbDevice, comment: 'clean' })).messages).toHaveLength(1);
    expect((await serviceBus(Buffer.from('{"machineId":"x"}'))).messages).toHaveLength(1);
    const sbFailing = isolatedDevice('redact-sb-500.contoso.local');
    env.defender.failNext(10, { route: 'POST /api/machines/*/unisolate', status: 503 });
    expect((await serviceBus({ machineId: sbFailing, comment: 'clean' })).error?.name).toBe(
      'RedeliveryRequested',
    );
  });

  it('signature failures: missing, wrong secret, tampered body, stale, replayed', async () => {
    install();
    const id = isolatedDevice('redact-sig.contoso.local');
    const cases: ((raw: string) => Record<string, string>)[] = [
      () => json,
      (raw) => signedHeaders(raw, 'not-the-webhook-secret-but-long-enough-0000'),
      (raw) => signedHeaders(`${raw} `),
      (raw) => ({
        ...json,
        'x-unisolate-timestamp': '1000',
        'x-unisolate-signature': computeSignature(WEBHOOK_SECRET, 1000, raw),
      }),
    ];
    for (const headers of cases) {
      const result = await http(id, {}, headers);
      expect([result.status, codeOf(result)]).toEqual([401, 'SignatureInvalid']);
    }
    const raw = JSON.stringify({
      machineId: id,
      comment: 'Clean and validated',
      correlationId: 'INC-REDACT-ONCE',
    });
    const once = signedHeaders(raw);
    expect((await http(id, {}, () => once, raw)).status).toBe(201);
    const replayed = await http(id, {}, () => once, raw);
    expect([replayed.status, codeOf(replayed)]).toEqual([401, 'SignatureInvalid']);
  });

  it('Key Vault refusing or down: webhook secret and MDE credentials unavailable', async () => {
    install();
    const id = isolatedDevice('redact-kv.contoso.local');
    env.keyVault.failNext(1, { route: new RegExp(`^GET /secrets/${WEBHOOK_SECRET_NAME}\\b`), status: 403 });
    const refused = await http(id, {});
    expect([refused.status, codeOf(refused)]).toEqual([503, 'SecretUnavailable']);

    // Signing off, Key Vault down on a cold instance: the MDE credentials cannot be read.
    install({ WEBHOOK_SIGNING_SECRET_NAME: '' });
    await env.keyVault.setDown(true);
    try {
      const down = await http(id, {}, () => json);
      expect([down.status, codeOf(down)]).toEqual([503, 'SecretUnavailable']);
    } finally {
      await env.keyVault.setDown(false);
    }
    // Service Bus, Key Vault refusing on a cold instance: handed back for redelivery.
    install({ WEBHOOK_SIGNING_SECRET_NAME: '' });
    env.keyVault.failNext(3, { route: /^GET \/secrets\//, status: 403 });
    expect((await serviceBus({ machineId: id, comment: 'clean' })).error?.name).toBe('RedeliveryRequested');
  });

  it('token rejected: Entra refuses the client secret; Defender refuses the token', async () => {
    install();
    const id = isolatedDevice('redact-token.contoso.local');
    env.entra.setClientSecret(MDE_APP.clientId, ROTATED_CLIENT_SECRET);
    try {
      const rejected = await http(id, {});
      // AADSTS7000215 (invalid client secret). The code is CredentialsRejected by design; the classification is
      // not this test's subject (see report), the redaction below is.
      expect(rejected.status).toBe(503);
      expect(['CredentialsRejected', 'TokenUnavailable']).toContain(codeOf(rejected));
    } finally {
      env.entra.setClientSecret(MDE_APP.clientId, MDE_APP.clientSecret);
    }
    install();
    env.defender.failNext(10, { route: 'POST /api/machines/*/unisolate', status: 401 });
    const refused = await http(id, {});
    expect(refused).toMatchObject({ status: 502, body: { status: 'Forbidden' } });
  });

  it('nothing captured contains a secret or a token', async () => {
    // Let every telemetry client send what it has.
    await Promise.all(installed.map((deps) => deps.telemetry.flush()));
    await env.ingestion.waitFor((e) => JSON.stringify(e).includes('UnisolateOutcome'), { timeoutMs: 10_000 });
    const envelopes = env.ingestion.envelopes.map((e) => JSON.stringify(e));

    const tokens = new Set<string>();
    for (const t of env.entra.issued) tokens.add(t.token);
    for (const sim of [env.keyVault, env.defender]) {
      for (const request of sim.requests) {
        const bearer = /^Bearer\s+(\S+)/i.exec(request.headers.authorization ?? '')?.[1];
        if (bearer) tokens.add(bearer);
      }
    }
    expect(tokens.size).toBeGreaterThanOrEqual(2); // at least one managed identity and one Entra token
    const secrets = [MDE_APP.clientSecret, ROTATED_CLIENT_SECRET, WEBHOOK_SECRET, ...tokens];
    // Also a recognisable fragment, in case something truncates or splits a value.
    const needles = secrets.flatMap((s) => [s, s.slice(0, 16), s.slice(-16)]);

    const sources: Record<string, string[]> = {
      'context.log': output.logs,
      console: output.console,
      telemetry: envelopes,
      'responses, queue messages, thrown errors': emitted,
    };
    expect(output.logs.length).toBeGreaterThan(10);
    expect(envelopes.length).toBeGreaterThan(5);
    expect(emitted.length).toBeGreaterThan(20);
    for (const [source, texts] of Object.entries(sources)) {
      const leaks = texts.flatMap((text, index) =>
        needles.filter((needle) => text.includes(needle)).map(() => `${source}[${index}]`),
      );
      expect({ source, leaks }).toEqual({ source, leaks: [] });
    }
    // And no Authorization header or bearer token shape anywhere.
    for (const texts of Object.values(sources)) {
      for (const text of texts) expect(text).not.toMatch(/Bearer\s+[A-Za-z0-9._~+/-]{8,}/);
    }
  });
});
