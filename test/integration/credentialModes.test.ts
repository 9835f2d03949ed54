/**
 * The three ways to authenticate as the MDE app (`MDE_CREDENTIAL`), through the registered functions with
 * the real SDKs against the simulators: a client secret, a Key Vault certificate (PEM and both PKCS#12
 * flavours, rotation without a restart), and the user-assigned managed identity as a federated credential
 * (no Key Vault at all). Each wrong variant (certificate not registered, wrong exchange audience, a
 * system-assigned identity) fails clearly as CredentialsRejected / ConfigurationError, and nothing the app
 * emits contains key material, an assertion or a token.
 */
import { parseSettings } from '../../src/config';
import { X509Certificate } from 'node:crypto';
import {
  APP_IDENTITY,
  CERTIFICATE_NAME,
  MDE_APP,
  startEnvironment,
  testCertificate,
  type LocalEnvironment,
} from '../../dev/environment';
import { invokeHttp, loadApp, type HttpResult } from '../../dev/host';
import { decodeJwt, JWT_BEARER, machineIdFor } from '../../dev/simulators';
import { captureOutput, type CapturedOutput } from '../support/fakeApp';

let env: LocalEnvironment;
/** Everything the app answered, for the key-material scan at the end. */
const emitted: string[] = [];
/** What the app logged and printed (every invocation of this file), for the same scan. */
let output: CapturedOutput;

beforeAll(async () => {
  await loadApp();
  env = await startEnvironment({ telemetry: false });
  output = captureOutput();
});
afterAll(async () => {
  output?.restore();
  await env.close();
});

let id: string;
let counter = 0;
beforeEach(() => {
  for (const sim of [env.keyVault, env.entra, env.mi, env.defender]) sim.reset();
  counter += 1;
  const name = `modes-${counter}.contoso.local`;
  id = env.defender.addMachine({ id: machineIdFor(name), computerDnsName: name, isolated: true }).id;
});

function install(overrides: Record<string, string>): void {
  env.install({ MDE_RETRY_BUDGET_MS: '5000', CHECK_ISOLATION_STATE: 'false', ...overrides });
}

async function release(): Promise<HttpResult> {
  const result = await invokeHttp('unisolateMachine', {
    params: { machineId: id },
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ Comment: 'Clean and validated' }),
  });
  emitted.push(String(result.status), JSON.stringify([...result.headers]), JSON.stringify(result.body));
  emitted.push(...result.messages.map((m) => JSON.stringify(m)));
  return result;
}

const statusOf = (r: HttpResult) => [r.status, (r.body as { status?: string }).status];
const errorOf = (r: HttpResult) => (r.body as { error?: { code: string; message: string } }).error;

/** The form of the last token request Entra received. */
function lastTokenRequest(): URLSearchParams {
  const request = env.entra.requests.filter((r) => r.path.includes('/oauth2/v2.0/token')).at(-1);
  return new URLSearchParams(request?.body ?? '');
}

/** The certificate (SHA-256 thumbprint, base64url) that signed the last certificate assertion. */
function lastAssertionCertificate(): unknown {
  return decodeJwt(lastTokenRequest().get('client_assertion') ?? '')?.header['x5t#S256'];
}
const x5tS256 = (n: 1 | 2) =>
  Buffer.from(
    new X509Certificate(testCertificate.publicPart(n)).fingerprint256.replace(/:/g, ''),
    'hex',
  ).toString('base64url');

describe('MDE_CREDENTIAL=secret (default)', () => {
  it('releases with the client secret from Key Vault', async () => {
    install({});
    expect(statusOf(await release())).toEqual([201, 'Accepted']);
    expect(lastTokenRequest().get('client_secret')).toBe(MDE_APP.clientSecret);
  });
});

describe('MDE_CREDENTIAL=certificate', () => {
  afterEach(() => {
    env.keyVault.setCertificate(CERTIFICATE_NAME, { pem: testCertificate.pem(1) });
    env.entra.addCertificate(MDE_APP.clientId, testCertificate.publicPart(1));
    env.entra.removeCertificate(MDE_APP.clientId, testCertificate.publicPart(2));
  });

  it.each([
    ['PEM', () => ({ pem: testCertificate.pem(1) })],
    ['PKCS#12, AES-256', () => ({ pfx: testCertificate.pfx(1, 'aes') })],
    ['PKCS#12, legacy RC2-40/3DES', () => ({ pfx: testCertificate.pfx(1, 'legacy') })],
  ])(
    'releases with the Key Vault certificate stored as %s; no client secret is read or sent',
    async (_, content) => {
      env.keyVault.setCertificate(CERTIFICATE_NAME, content());
      install({ MDE_CREDENTIAL: 'certificate' });
      expect(statusOf(await release())).toEqual([201, 'Accepted']);
      const form = lastTokenRequest();
      expect([form.get('client_secret'), form.get('client_assertion_type')]).toEqual([null, JWT_BEARER]);
      expect(lastAssertionCertificate()).toBe(x5tS256(1));
      const read = env.keyVault.requests.map((r) => r.path.split('?')[0]);
      expect(read).toContain(`/secrets/${CERTIFICATE_NAME}/`);
      expect(read).not.toContain('/secrets/mde-client-secret/');
    },
  );

  it('sends the certificate chain (x5c) when MDE_SEND_CERTIFICATE_CHAIN=true', async () => {
    install({ MDE_CREDENTIAL: 'certificate', MDE_SEND_CERTIFICATE_CHAIN: 'true' });
    expect(statusOf(await release())).toEqual([201, 'Accepted']);
    const header = decodeJwt(lastTokenRequest().get('client_assertion') ?? '')?.header;
    expect(header?.x5c).toEqual([expect.any(String)]);
  });

  it('a rotated certificate is picked up after the TTL, without a restart', async () => {
    install({ MDE_CREDENTIAL: 'certificate', SECRET_CACHE_TTL_SECONDS: '0' });
    expect(statusOf(await release())).toEqual([201, 'Accepted']);
    expect(lastAssertionCertificate()).toBe(x5tS256(1));
    // Rotation: the new certificate's public part is uploaded to the app, then Key Vault gets the new version.
    env.entra.addCertificate(MDE_APP.clientId, testCertificate.publicPart(2));
    env.keyVault.setCertificate(CERTIFICATE_NAME, { pem: testCertificate.pem(2) });
    id = env.defender.addMachine({
      id: machineIdFor(`rot-${counter}`),
      computerDnsName: `rot-${counter}`,
      isolated: true,
    }).id;
    expect(statusOf(await release())).toEqual([201, 'Accepted']);
    expect(lastAssertionCertificate()).toBe(x5tS256(2));
  });

  it('a 401 from Defender re-reads Key Vault and uses the rotated certificate at once', async () => {
    install({ MDE_CREDENTIAL: 'certificate' });
    expect(statusOf(await release())).toEqual([201, 'Accepted']);
    env.entra.addCertificate(MDE_APP.clientId, testCertificate.publicPart(2));
    env.keyVault.setCertificate(CERTIFICATE_NAME, { pem: testCertificate.pem(2) });
    env.defender.failNext(1, { route: 'POST /api/machines/*/unisolate', status: 401 });
    id = env.defender.addMachine({
      id: machineIdFor(`r401-${counter}`),
      computerDnsName: `r401-${counter}`,
      isolated: true,
    }).id;
    expect(statusOf(await release())).toEqual([201, 'Accepted']);
    expect(lastAssertionCertificate()).toBe(x5tS256(2));
  });

  it('a certificate the app registration does not have: CredentialsRejected naming it (AADSTS700027)', async () => {
    const version = env.keyVault.setCertificate(CERTIFICATE_NAME, { pem: testCertificate.pem(2) });
    install({ MDE_CREDENTIAL: 'certificate' });
    const result = await release();
    expect(statusOf(result)).toEqual([503, 'Failed']);
    expect(errorOf(result)).toMatchObject({
      code: 'CredentialsRejected',
      message: expect.stringContaining('AADSTS700027'),
    });
    const thumbprint = new X509Certificate(testCertificate.publicPart(2)).fingerprint.replace(/:/g, '');
    for (const text of [CERTIFICATE_NAME, version, thumbprint, 'az ad app credential reset']) {
      expect(errorOf(result)?.message).toContain(text);
    }
    // Not retried as if transient: no Retry-After.
    expect(result.headers.get('retry-after')).toBeNull();
  });

  it('a certificate without its private key is a ConfigurationError that says what the policy needs', async () => {
    env.keyVault.setCertificate(CERTIFICATE_NAME, { pem: testCertificate.publicPart(1) });
    install({ MDE_CREDENTIAL: 'certificate' });
    const result = await release();
    expect(errorOf(result)).toMatchObject({
      code: 'ConfigurationError',
      message: expect.stringContaining('exportable'),
    });
  });
});

describe('MDE_CREDENTIAL=federated', () => {
  const federated = {
    MDE_CREDENTIAL: 'federated',
    AZURE_CLIENT_ID: APP_IDENTITY.clientId,
    MDE_TENANT_ID: MDE_APP.tenantId,
    MDE_CLIENT_ID: MDE_APP.clientId,
    KEY_VAULT_URL: '',
  };

  it('releases with the managed identity token as the assertion; no Key Vault, no secret, no certificate', async () => {
    install(federated);
    expect(statusOf(await release())).toEqual([201, 'Accepted']);
    expect(env.keyVault.requests).toEqual([]);
    const form = lastTokenRequest();
    expect([form.get('client_secret'), form.get('client_assertion_type')]).toEqual([null, JWT_BEARER]);
    expect(decodeJwt(form.get('client_assertion') ?? '')?.payload).toMatchObject({
      aud: 'api://AzureADTokenExchange',
      sub: env.mi.principalIdOf(APP_IDENTITY.clientId),
    });
    expect(env.mi.tokenRequests.at(-1)).toMatchObject({
      resource: 'api://AzureADTokenExchange',
      clientId: APP_IDENTITY.clientId,
    });
  });

  it('tenant and client id may come from Key Vault instead', async () => {
    install({ MDE_CREDENTIAL: 'federated', AZURE_CLIENT_ID: APP_IDENTITY.clientId });
    expect(statusOf(await release())).toEqual([201, 'Accepted']);
    expect(env.keyVault.requests.map((r) => r.path.split('?')[0])).not.toContain(
      '/secrets/mde-client-secret/',
    );
  });

  it('the US Government exchange audience against a commercial federated credential: CredentialsRejected (AADSTS700212)', async () => {
    install({ ...federated, MDE_TOKEN_EXCHANGE_AUDIENCE: 'api://AzureADTokenExchangeUSGov' });
    const result = await release();
    expect(statusOf(result)).toEqual([503, 'Failed']);
    const error = errorOf(result)!;
    expect(error.code).toBe('CredentialsRejected');
    for (const text of [
      'AADSTS700212',
      'api://AzureADTokenExchangeUSGov',
      env.mi.issuer,
      env.mi.principalIdOf(APP_IDENTITY.clientId),
      'az ad app federated-credential create',
    ]) {
      expect(error.message).toContain(text);
    }
  });

  it('GCC High picks the US Government audience by itself', async () => {
    install({
      ...federated,
      MDE_CLOUD: 'GCCHigh',
      MDE_API_BASE_URL: env.defender.url,
      MDE_AUTHORITY_HOST: env.entra.url,
      MDE_TOKEN_SCOPE: 'https://api.securitycenter.microsoft.com/.default',
    });
    const result = await release();
    expect(errorOf(result)?.message).toContain('api://AzureADTokenExchangeUSGov');
  });

  it('a system-assigned identity (no AZURE_CLIENT_ID) is refused as a configuration error', async () => {
    const { AZURE_CLIENT_ID: _, ...systemAssigned } = federated;
    install(systemAssigned);
    const result = await release();
    expect(statusOf(result)).toEqual([503, 'Failed']);
    // The caller learns which setting is wrong, never values; the log says what to do.
    expect(errorOf(result)).toMatchObject({
      code: 'ConfigurationError',
      message: expect.stringMatching(/invalid app settings: MDE_CREDENTIAL\)/),
    });
    expect(parseSettings({ ...env.settings, ...systemAssigned }).problems.join('\n')).toMatch(
      /AZURE_CLIENT_ID.*user-assigned.*system-assigned identity cannot be one/s,
    );
    expect(env.entra.requests).toEqual([]);
  });
});

describe('no key material anywhere', () => {
  it('in responses, queue messages, logs or console output', () => {
    const pemBodies = [1, 2].flatMap((n) => {
      const pem = testCertificate.pem(n as 1 | 2);
      const key = pem.slice(0, pem.indexOf('-----END PRIVATE KEY-----'));
      return key.split('\n').filter((line) => line.length > 40);
    });
    const pfx = [1, 2].flatMap((n) =>
      (['aes', 'legacy'] as const).map((f) =>
        testCertificate
          .pfx(n as 1 | 2, f)
          .toString('base64')
          .slice(100, 160),
      ),
    );
    const tokens = env.mi.registry.entries().map((t) => t.token);
    const needles = [
      MDE_APP.clientSecret,
      'PRIVATE KEY',
      ...pemBodies,
      ...pfx,
      ...tokens.map((t) => t.slice(-24)),
    ];
    const texts = [...emitted, ...output.logs, ...output.console];
    expect(emitted.length).toBeGreaterThan(10);
    const leaks = texts.flatMap((text, i) =>
      needles.filter((n) => text.includes(n)).map((n) => `${i}:${n.slice(0, 12)}`),
    );
    expect(leaks).toEqual([]);
    for (const text of texts) expect(text).not.toMatch(/eyJ[\w-]{10,}\.eyJ[\w-]{10,}/);
  });
});
