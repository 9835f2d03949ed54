import type { AccessToken, TokenCredential } from '@azure/identity';
import { AuthenticationRequiredError } from '@azure/identity';
import { MdeCredentials, type MdeAppSecrets } from '../../src/adapters/mdeCredentials';
import { recordingLogger } from '../support/fakes';

function vault(values: Record<string, string>) {
  const reads: string[] = [];
  let failing: Error | undefined;
  return {
    reads,
    set: (name: string, value: string) => (values[name] = value),
    fail: (error?: Error) => (failing = error),
    client: {
      getSecret: jest.fn(async (name: string) => {
        reads.push(name);
        await new Promise((r) => setTimeout(r, 5));
        if (failing) throw failing;
        return { name, value: values[name], properties: { name, vaultUrl: 'https://kv' } };
      }),
    },
  };
}

function setup(options: { ttlMs?: number } = {}) {
  let now = 1_000_000;
  const kv = vault({ 'mde-tenant-id': 't', 'mde-client-id': 'c', 'mde-client-secret': 's1' });
  const credentialsMade: MdeAppSecrets[] = [];
  const tokenCalls: string[] = [];
  let rejectSecret: string | undefined;
  const credentials = new MdeCredentials({
    secretClient: kv.client,
    secretNames: { tenantId: 'mde-tenant-id', clientId: 'mde-client-id', clientSecret: 'mde-client-secret' },
    authorityHost: 'https://login.microsoftonline.com',
    scope: 'https://api.securitycenter.microsoft.com/.default',
    ttlMs: options.ttlMs ?? 900_000,
    now: () => now,
    log: recordingLogger(),
    createCredential: (secrets): TokenCredential => {
      credentialsMade.push(secrets);
      return {
        getToken: async (): Promise<AccessToken> => {
          tokenCalls.push(secrets.clientSecret);
          if (secrets.clientSecret === rejectSecret) {
            // What MSAL surfaces for a refused secret (see the integration test against the Entra simulator).
            throw new AuthenticationRequiredError({
              scopes: ['https://api.securitycenter.microsoft.com/.default'],
              message:
                'invalid_client: Error(s): 7000215 - Description: AADSTS7000215: Invalid client secret provided.',
            });
          }
          return {
            token: `tok-${secrets.clientSecret}-${tokenCalls.length}`,
            expiresOnTimestamp: now + 3_600_000,
          };
        },
      };
    },
  });
  return {
    credentials,
    kv,
    credentialsMade,
    tokenCalls,
    advance: (ms: number) => (now += ms),
    reject: (secret: string | undefined) => (rejectSecret = secret),
  };
}

describe('MdeCredentials', () => {
  it('shares one Key Vault read and one token request among concurrent cold callers', async () => {
    const { credentials, kv, tokenCalls } = setup();
    const tokens = await Promise.all(Array.from({ length: 20 }, () => credentials.getToken()));
    expect(new Set(tokens).size).toBe(1);
    expect(kv.reads).toHaveLength(3);
    expect(tokenCalls).toHaveLength(1);
  });

  it('reuses the token until shortly before it expires', async () => {
    const { credentials, tokenCalls, advance } = setup({ ttlMs: 86_400_000 });
    await credentials.getToken();
    advance(50 * 60_000);
    await credentials.getToken();
    expect(tokenCalls).toHaveLength(1);
    advance(6 * 60_000); // within 5 minutes of expiry
    await credentials.getToken();
    expect(tokenCalls).toHaveLength(2);
  });

  it('re-reads the secrets after the TTL, keeping the token when they did not change', async () => {
    const { credentials, kv, tokenCalls, advance } = setup({ ttlMs: 60_000 });
    await credentials.getToken();
    advance(61_000);
    await credentials.getToken();
    expect(kv.reads).toHaveLength(6);
    expect(tokenCalls).toHaveLength(1);
  });

  it('keeps the cached credentials when Key Vault is down after the TTL', async () => {
    const { credentials, kv, advance } = setup({ ttlMs: 60_000 });
    const first = await credentials.getToken();
    advance(61_000);
    kv.fail(Object.assign(new Error('Service Unavailable'), { statusCode: 503 }));
    await expect(credentials.getToken()).resolves.toBe(first);
  });

  it('refresh() re-reads a rotated secret and gets a new token with it', async () => {
    const { credentials, kv, credentialsMade } = setup();
    await credentials.getToken();
    kv.set('mde-client-secret', 's2');
    await credentials.refresh();
    const token = await credentials.getToken();
    expect(token).toMatch(/^tok-s2-/);
    expect(credentialsMade.map((c) => c.clientSecret)).toEqual(['s1', 's2']);
  });

  it('retries a rejected secret once with a fresh Key Vault read, then reports CredentialsRejected without the secret', async () => {
    const { credentials, kv, reject } = setup();
    reject('s1');
    const error = await credentials.getToken().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'CredentialsRejected' });
    expect((error as Error).message).toMatch(/AADSTS7000215/);
    expect((error as Error).message).not.toContain('s1');
    expect(kv.reads).toHaveLength(6);
  });

  it('names the missing secret and the command to set it', async () => {
    const { credentials, kv } = setup();
    kv.fail(Object.assign(new Error('SecretNotFound'), { statusCode: 404 }));
    await expect(credentials.getToken()).rejects.toMatchObject({
      code: 'ConfigurationError',
      message: expect.stringMatching(/az keyvault secret set/),
    });
  });
});
