/**
 * End-to-end proof that the REAL SDKs work against the simulators, wired the way the app is:
 * managed identity → Key Vault (client secret) → Entra client credentials → Defender API via axios.
 */
import { ClientSecretCredential, ManagedIdentityCredential } from '@azure/identity';
import { SecretClient } from '@azure/keyvault-secrets';
import axios from 'axios';
import {
  MDE_SCOPE,
  startDefender,
  startEntra,
  startKeyVault,
  startManagedIdentity,
  defaultMachines,
  type DefenderSimulator,
  type EntraSimulator,
  type KeyVaultSimulator,
  type ManagedIdentitySimulator,
} from '../../dev/simulators';
import { refusedConnections } from '../../dev/loopbackOnly';

const TENANT = '72f988bf-0000-4000-8000-00000000c0de';
const APP_ID = '5d0c1f7e-2b8a-4a8e-9d1e-5e6f7a8b9c0d';
const APP_SECRET = 'first~secret.value';

describe('real SDK credential chain against the simulators', () => {
  let mi: ManagedIdentitySimulator;
  let kv: KeyVaultSimulator;
  let entra: EntraSimulator;
  let mde: DefenderSimulator;
  const savedEnv = { ...process.env };
  const refusedBefore = refusedConnections().length;

  beforeAll(async () => {
    if (!process.env.NODE_EXTRA_CA_CERTS) {
      throw new Error('run with NODE_EXTRA_CA_CERTS=dev/certs/ca.pem (npm run test:jest does)');
    }
    [mi, kv, entra, mde] = await Promise.all([
      startManagedIdentity(),
      startKeyVault({ secrets: { 'mde-client-secret': APP_SECRET } }),
      startEntra({ tenantId: TENANT, clients: { [APP_ID]: APP_SECRET } }),
      startDefender({ machines: defaultMachines() }),
    ]);
    // ManagedIdentityCredential reads IDENTITY_ENDPOINT/IDENTITY_HEADER in its constructor.
    Object.assign(process.env, mi.env);
  });

  afterAll(async () => {
    process.env = savedEnv;
    await Promise.all([mi.close(), kv.close(), entra.close(), mde.close()]);
  });

  test('MI → Key Vault → Entra → Defender unisolate, then a conflicting repeat', async () => {
    // 1. Managed identity + Key Vault challenge auth.
    const miCredential = new ManagedIdentityCredential();
    const secrets = new SecretClient(kv.url, miCredential, { disableChallengeResourceVerification: true });
    const secret = await secrets.getSecret('mde-client-secret');
    expect(secret.value).toBe(APP_SECRET);
    expect(secret.properties.vaultUrl).toBe(kv.url);
    expect(kv.secretReads).toBe(1);
    // The SDK first probed without a token (challenge), then retried with the MI token.
    const kvCalls = kv.requests.filter((r) => r.path.startsWith('/secrets/mde-client-secret'));
    expect(kvCalls.map((r) => r.headers.authorization === undefined)).toEqual([true, false]);
    expect(kvCalls[1]!.headers.authorization).toMatch(/^Bearer mi-/);
    expect(kvCalls[1]!.path).toMatch(/api%2Dversion=|api-version=/);
    // MSAL used the 2019-08-01 App Service protocol with the identity header, system-assigned identity.
    expect(mi.tokensIssued).toBe(1);
    expect(mi.lastClientId).toBeUndefined();
    const miCall = mi.requests[0]!;
    expect(miCall.method).toBe('GET');
    expect(miCall.path).toContain('api-version=2019-08-01');
    expect(new URL(miCall.path, mi.url).searchParams.get('resource')).toBe('https://vault.azure.net');
    expect(miCall.headers['x-identity-header']).toBe(mi.env.IDENTITY_HEADER);

    // 2. Entra client credentials with the secret from Key Vault.
    const appCredential = new ClientSecretCredential(TENANT, APP_ID, secret.value!, {
      authorityHost: entra.url,
      disableInstanceDiscovery: true,
    });
    const token = await appCredential.getToken(MDE_SCOPE);
    expect(token.token).toMatch(/^eyJ[\w-]+\.[\w-]+\.[\w-]+$/); // a JWT, like Entra's
    expect(token.expiresOnTimestamp).toBeGreaterThan(Date.now() + 3000_000);
    expect(entra.tokensIssued).toBe(1);
    expect(entra.lastScope).toBe(MDE_SCOPE);
    expect(entra.requests.map((r) => `${r.method} ${r.path.split('?')[0]}`)).toEqual([
      `GET /${TENANT}/v2.0/.well-known/openid-configuration`,
      `POST /${TENANT}/oauth2/v2.0/token`,
    ]);
    expect(entra.registry.lookup(token.token)).toMatchObject({ tenantId: TENANT, clientId: APP_ID });

    // 3. Defender unisolate with axios.
    const machine = mde.machines().find((m) => mde.isIsolated(m.id))!;
    const url = `${mde.url}/api/machines/${machine.id}/unisolate`;
    const headers = { Authorization: `Bearer ${token.token}`, 'Content-Type': 'application/json' };
    const first = await axios.post(url, { Comment: 'Released by mde-unisolate test' }, { headers });
    expect(first.status).toBe(201);
    expect(first.data).toMatchObject({
      type: 'Unisolate',
      status: 'Pending',
      machineId: machine.id,
      computerDnsName: machine.computerDnsName,
      requestor: APP_ID,
      requestorComment: 'Released by mde-unisolate test',
    });

    const second = await axios.post(url, { Comment: 'again' }, { headers, validateStatus: () => true });
    expect(second.status).toBe(400);
    expect(second.data.error).toMatchObject({
      code: 'ActiveRequestAlreadyExists',
      message: 'Action is already in progress',
    });
    expect(second.data.error.target).toMatch(/^[0-9a-f-]{36}$/);
    expect(mde.counts.unisolate).toBe(2);

    // Nothing in this chain tried to leave the machine (e.g. MSAL instance discovery, IMDS probes). Azure
    // Monitor background pollers started by other test files are not this chain's doing, so ignore them.
    const refused = refusedConnections()
      .slice(refusedBefore)
      .filter((r) => !/\.monitor\.azure\.com$/.test(r.host ?? ''));
    expect(refused).toEqual([]);
  });

  test('Key Vault rotation: a new version is served; unknown secrets are 404 SecretNotFound', async () => {
    const client = new SecretClient(kv.url, new ManagedIdentityCredential(), {
      disableChallengeResourceVerification: true,
    });
    const before = await client.getSecret('mde-client-secret');
    const newVersion = kv.setSecret('mde-client-secret', 'second~secret');
    const after = await client.getSecret('mde-client-secret');
    expect(after.value).toBe('second~secret');
    expect(after.properties.version).toBe(newVersion);
    expect(before.properties.version).not.toBe(newVersion);
    const old = await client.getSecret('mde-client-secret', { version: before.properties.version! });
    expect(old.value).toBe(before.value);

    await expect(client.getSecret('does-not-exist')).rejects.toMatchObject({
      statusCode: 404,
      code: 'SecretNotFound',
      message: expect.stringContaining(
        'A secret with (name/id) does-not-exist was not found in this key vault',
      ),
    });
  });

  test('Key Vault rejects tokens it did not see issued (401 with a challenge)', async () => {
    const res = await axios.get(`${kv.url}/secrets/mde-client-secret?api-version=7.5`, {
      headers: { Authorization: 'Bearer forged-token' },
      validateStatus: () => true,
    });
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toBe(
      `Bearer authorization="https://login.microsoftonline.com/${kv.tenantId}", resource="https://vault.azure.net"`,
    );
    expect(res.data.error.code).toBe('Unauthorized');
  });

  test('managed identity endpoint rejects a wrong identity header', async () => {
    const res = await axios.get(
      `${mi.env.IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=https://vault.azure.net`,
      {
        headers: { 'X-IDENTITY-HEADER': 'wrong' },
        validateStatus: () => true,
      },
    );
    expect(res.status).toBe(401);
    const missing = await axios.get(`${mi.env.IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=x`, {
      validateStatus: () => true,
    });
    expect(missing.status).toBe(400);
  });

  test('user-assigned identity: client_id is sent and recorded; unknown ids fail', async () => {
    // Same simulator as above on purpose: MSAL caches the MI endpoint process-wide after the first request.
    const uami = '0f0e0d0c-0b0a-4909-8807-060504030201';
    mi.addUserAssignedIdentity(uami);
    const ok = await new ManagedIdentityCredential(uami).getToken('https://vault.azure.net/.default');
    expect(ok.token).toMatch(/^mi-/);
    expect(mi.lastClientId).toBe(uami);
    expect(mi.registry.lookup(ok.token)?.clientId).toBe(uami);
    const before = mi.tokenRequests.length;
    await expect(
      new ManagedIdentityCredential('99999999-9999-4999-8999-999999999999').getToken(
        'https://vault.azure.net/.default',
      ),
    ).rejects.toThrow(/Unable to load the proper Managed Identity/);
    expect(mi.tokenRequests.slice(before).map((r) => [r.clientId, r.ok])).toEqual([
      ['99999999-9999-4999-8999-999999999999', false],
    ]);
  });

  test('Entra secret rotation: the old secret fails with AADSTS7000215, unknown apps with AADSTS700016', async () => {
    const stale = new ClientSecretCredential(TENANT, APP_ID, APP_SECRET, {
      authorityHost: entra.url,
      disableInstanceDiscovery: true,
    });
    entra.setClientSecret(APP_ID, 'rotated-secret');
    await expect(stale.getToken(MDE_SCOPE)).rejects.toThrow(/AADSTS7000215: Invalid client secret provided/);

    const fresh = new ClientSecretCredential(TENANT, APP_ID, 'rotated-secret', {
      authorityHost: entra.url,
      disableInstanceDiscovery: true,
    });
    await expect(fresh.getToken(MDE_SCOPE)).resolves.toMatchObject({ token: expect.stringMatching(/^eyJ/) });
    const graph = await fresh.getToken('https://graph.microsoft.com/.default');
    expect(entra.lastScope).toBe('https://graph.microsoft.com/.default');
    // A token for another audience must not open the Defender API.
    const res = await axios.get(`${mde.url}/api/machines`, {
      headers: { Authorization: `Bearer ${graph.token}` },
      validateStatus: () => true,
    });
    expect(res.status).toBe(401);

    const unknown = new ClientSecretCredential(TENANT, '00000000-dead-4bee-8f00-000000000000', 'x', {
      authorityHost: entra.url,
      disableInstanceDiscovery: true,
    });
    await expect(unknown.getToken(MDE_SCOPE)).rejects.toThrow(/AADSTS700016/);
  });
});
