/**
 * The simulators speak certificate and federated credentials as the real services do, proven with the REAL
 * SDK credentials: Key Vault serves a certificate's secret (PEM or base64 PKCS#12, with `kid` and a version
 * per rotation), `ClientCertificateCredential` signs an assertion the Entra simulator checks against the
 * registered certificate, and a user-assigned managed identity's token for `api://AzureADTokenExchange` is
 * exchanged with `ClientAssertionCredential` against the registered federated identity credential. Each
 * wrong variant fails with Entra's own AADSTS code.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  ClientAssertionCredential,
  ClientCertificateCredential,
  ManagedIdentityCredential,
} from '@azure/identity';
import { SecretClient } from '@azure/keyvault-secrets';
import {
  CERTS_DIR,
  decodeJwt,
  MDE_SCOPE,
  startEntra,
  startKeyVault,
  startManagedIdentity,
  type EntraSimulator,
  type KeyVaultSimulator,
  type ManagedIdentitySimulator,
} from '../../dev/simulators';

const TENANT = '72f988bf-0000-4000-8000-00000000c0de';
const CERT_APP = 'ce47ce47-0000-4000-8000-0000000ce470';
const FED_APP = 'fed0fed0-0000-4000-8000-0000000fed00';
const UAMI = 'a1b2c3d4-0000-4000-8000-00000000ua01';
const EXCHANGE = 'api://AzureADTokenExchange';

const pem = (n: 1 | 2) => readFileSync(path.join(CERTS_DIR, `mde-app-${n}.pem`), 'utf8');
const certificateOnly = (text: string) => text.slice(text.indexOf('-----BEGIN CERTIFICATE-----'));

let mi: ManagedIdentitySimulator;
let kv: KeyVaultSimulator;
let entra: EntraSimulator;
const savedEnv = { ...process.env };

beforeAll(async () => {
  mi = await startManagedIdentity({ tenantId: TENANT, userAssignedClientIds: [UAMI] });
  [kv, entra] = await Promise.all([
    startKeyVault(),
    startEntra({
      tenantId: TENANT,
      clients: {},
      certificates: { [CERT_APP]: [certificateOnly(pem(1))] },
      federatedCredentials: {
        [FED_APP]: [{ issuer: mi.issuer, subject: mi.principalIdOf(UAMI), audiences: [EXCHANGE] }],
      },
      trustedIssuers: { [mi.issuer]: mi.jwks },
      roles: { [CERT_APP]: ['Machine.Isolate', 'Machine.Read.All'] },
    }),
  ]);
  Object.assign(process.env, mi.env);
});

afterAll(async () => {
  process.env = savedEnv;
  await Promise.all([mi.close(), kv.close(), entra.close()]);
});

const options = () => ({ authorityHost: entra.url, disableInstanceDiscovery: true });

describe('Key Vault certificates', () => {
  it('serves the secret of a certificate as PEM or base64 PKCS#12, with kid and a new version per rotation', async () => {
    const client = new SecretClient(kv.url, new ManagedIdentityCredential(UAMI), {
      disableChallengeResourceVerification: true,
    });
    const v1 = kv.setCertificate('mde-client-certificate', { pem: pem(1) });
    const first = await client.getSecret('mde-client-certificate');
    expect(first.value).toBe(pem(1));
    expect(first.properties).toMatchObject({
      contentType: 'application/x-pem-file',
      version: v1,
      managed: true,
      certificateKeyId: `${kv.url}/keys/mde-client-certificate/${v1}`,
    });
    const pfx = readFileSync(path.join(CERTS_DIR, 'mde-app-2-legacy.pfx'));
    const v2 = kv.setCertificate('mde-client-certificate', { pfx });
    const second = await client.getSecret('mde-client-certificate');
    expect(second.properties).toMatchObject({ contentType: 'application/x-pkcs12', version: v2 });
    expect(Buffer.from(second.value!, 'base64').equals(pfx)).toBe(true);
  });
});

describe('certificate credentials', () => {
  it('a registered certificate gets a token with the app roles; x5c is accepted too', async () => {
    const token = await new ClientCertificateCredential(
      TENANT,
      CERT_APP,
      { certificate: pem(1) },
      options(),
    ).getToken(MDE_SCOPE);
    expect(decodeJwt(token.token)?.payload).toMatchObject({
      appid: CERT_APP,
      tid: TENANT,
      aud: 'https://api.securitycenter.microsoft.com',
      roles: ['Machine.Isolate', 'Machine.Read.All'],
    });
    const chained = new ClientCertificateCredential(
      TENANT,
      CERT_APP,
      { certificate: pem(1) },
      { ...options(), sendCertificateChain: true },
    );
    await expect(chained.getToken(MDE_SCOPE)).resolves.toMatchObject({ token: expect.any(String) });
    // MSAL signs with PS256 and names the certificate by its SHA-256 thumbprint.
    const assertion = new URLSearchParams(entra.requests.at(-1)!.body).get('client_assertion')!;
    expect(decodeJwt(assertion)?.header).toMatchObject({ alg: 'PS256', 'x5t#S256': expect.any(String) });
  });

  it('a certificate the app does not know: AADSTS700027', async () => {
    await expect(
      new ClientCertificateCredential(TENANT, CERT_APP, { certificate: pem(2) }, options()).getToken(
        MDE_SCOPE,
      ),
    ).rejects.toThrow(
      /AADSTS700027: The certificate with identifier used to sign the client assertion is not registered/,
    );
  });

  it('after the new certificate is uploaded, both work (rotation overlap); removed, the old one fails', async () => {
    entra.addCertificate(CERT_APP, certificateOnly(pem(2)));
    await expect(
      new ClientCertificateCredential(TENANT, CERT_APP, { certificate: pem(2) }, options()).getToken(
        MDE_SCOPE,
      ),
    ).resolves.toBeDefined();
    entra.removeCertificate(CERT_APP, certificateOnly(pem(1)));
    await expect(
      new ClientCertificateCredential(TENANT, CERT_APP, { certificate: pem(1) }, options()).getToken(
        MDE_SCOPE,
      ),
    ).rejects.toThrow(/AADSTS700027/);
  });
});

describe('federated credentials (managed identity as the assertion)', () => {
  const assertionFrom = (clientId?: string, audience = EXCHANGE) => {
    const identity = clientId ? new ManagedIdentityCredential(clientId) : new ManagedIdentityCredential();
    return async () => (await identity.getToken(`${audience}/.default`)).token;
  };

  it('the managed identity issues a real JWT for the exchange audience', async () => {
    const token = await assertionFrom(UAMI)();
    expect(decodeJwt(token)?.payload).toMatchObject({
      aud: EXCHANGE,
      iss: `https://login.microsoftonline.com/${TENANT}/v2.0`,
      sub: mi.principalIdOf(UAMI),
      oid: mi.principalIdOf(UAMI),
      azp: UAMI,
    });
  });

  it('exchanged for a token of the MDE app', async () => {
    const credential = new ClientAssertionCredential(TENANT, FED_APP, assertionFrom(UAMI), options());
    const token = await credential.getToken(MDE_SCOPE);
    expect(decodeJwt(token.token)?.payload).toMatchObject({ appid: FED_APP, tid: TENANT });
  });

  it('wrong audience (US Government exchange audience on a commercial credential): AADSTS700212', async () => {
    const credential = new ClientAssertionCredential(
      TENANT,
      FED_APP,
      assertionFrom(UAMI, 'api://AzureADTokenExchangeUSGov'),
      options(),
    );
    await expect(credential.getToken(MDE_SCOPE)).rejects.toThrow(
      /AADSTS700212: No matching federated identity record found for presented assertion audience/,
    );
  });

  it('the system-assigned identity is no federated credential of the app: AADSTS700213', async () => {
    const credential = new ClientAssertionCredential(TENANT, FED_APP, assertionFrom(), options());
    await expect(credential.getToken(MDE_SCOPE)).rejects.toThrow(
      /AADSTS700213: No matching federated identity record found for presented assertion subject/,
    );
  });

  it('another issuer: AADSTS700211; a forged signature: AADSTS700027', async () => {
    const real = await assertionFrom(UAMI)();
    const jwt = decodeJwt(real)!;
    const reissued = (payload: Record<string, unknown>) =>
      `${Buffer.from(JSON.stringify(jwt.header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${real.split('.')[2]}`;
    const other = new ClientAssertionCredential(
      TENANT,
      FED_APP,
      async () => reissued({ ...jwt.payload, iss: 'https://token.actions.githubusercontent.com' }),
      options(),
    );
    await expect(other.getToken(MDE_SCOPE)).rejects.toThrow(/AADSTS700211/);
    const forged = new ClientAssertionCredential(
      TENANT,
      FED_APP,
      async () => reissued({ ...jwt.payload, exp: (jwt.payload.exp as number) + 1 }),
      options(),
    );
    await expect(forged.getToken(MDE_SCOPE)).rejects.toThrow(/AADSTS700027/);
  });
});
