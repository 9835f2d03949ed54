/**
 * MdeCredentials: the MDE app's credential built from Key Vault (secret, certificate or federated), cached
 * and refreshed, and bounded by the caller's time budget.
 */
import type { AccessToken, TokenCredential } from '@azure/identity';
import { AuthenticationRequiredError } from '@azure/identity';
import { MdeCredentials, type MdeAppCredential } from '../../src/adapters/mdeCredentials';
import { JOIN_WINDOW_MS } from '../../src/adapters/sharedFlight';
import { VaultReader } from '../../src/adapters/vaultReader';
import { recordingLogger } from '../support/fakes';

function vault(values: Record<string, string>) {
  const reads: string[] = [];
  const signals: AbortSignal[] = [];
  const inFlight = { now: 0, max: 0 };
  let failing: Error | undefined;
  let delayMs = 5;
  return {
    reads,
    signals,
    /** Reads under way at once: now, and the most ever. */
    inFlight,
    set: (name: string, value: string) => (values[name] = value),
    fail: (error?: Error) => (failing = error),
    /** Answers after `ms`; Infinity: never (only the abort signal ends the read, as with the real SDK). */
    delay: (ms: number) => (delayMs = ms),
    client: {
      getSecret: jest.fn(async (name: string, options?: { abortSignal?: AbortSignal }) => {
        reads.push(name);
        const signal = options?.abortSignal;
        if (signal) signals.push(signal);
        inFlight.max = Math.max(inFlight.max, (inFlight.now += 1));
        await new Promise<void>((resolve, reject) => {
          if (delayMs !== Infinity) setTimeout(resolve, delayMs);
          signal?.addEventListener('abort', () =>
            reject(Object.assign(new Error('The operation was aborted.'), { name: 'AbortError' })),
          );
        }).finally(() => (inFlight.now -= 1));
        if (failing) throw failing;
        return { name, value: values[name], properties: { name, vaultUrl: 'https://kv' } };
      }),
    },
  };
}

function setup(options: { ttlMs?: number } = {}) {
  let now = 1_000_000;
  const kv = vault({ 'mde-tenant-id': 't', 'mde-client-id': 'c', 'mde-client-secret': 's1' });
  const credentialsMade: string[] = [];
  const tokenCalls: string[] = [];
  let rejectSecret: string | undefined;
  const credentials = new MdeCredentials({
    mode: 'secret',
    vault: new VaultReader({ client: kv.client, ttlMs: options.ttlMs ?? 900_000, now: () => now }),
    secretNames: { tenantId: 'mde-tenant-id', clientId: 'mde-client-id', clientSecret: 'mde-client-secret' },
    certificateName: 'mde-client-certificate',
    tokenExchangeAudience: 'api://AzureADTokenExchange',
    authorityHost: 'https://login.microsoftonline.com',
    scope: 'https://api.securitycenter.microsoft.com/.default',
    ttlMs: options.ttlMs ?? 900_000,
    now: () => now,
    log: recordingLogger(),
    createCredential: (credential: MdeAppCredential): TokenCredential => {
      const secret = credential.kind === 'secret' ? credential.clientSecret : '';
      credentialsMade.push(secret);
      return {
        getToken: async (): Promise<AccessToken> => {
          tokenCalls.push(secret);
          if (secret === rejectSecret) {
            // What MSAL surfaces for a refused secret (see the integration test against the Entra simulator).
            throw new AuthenticationRequiredError({
              scopes: ['https://api.securitycenter.microsoft.com/.default'],
              message:
                'invalid_client: Error(s): 7000215 - Description: AADSTS7000215: Invalid client secret provided.',
            });
          }
          return {
            token: `tok-${secret}-${tokenCalls.length}`,
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

  it('reads the Key Vault secrets one after another: one connection and one challenge on a cold instance', async () => {
    // Key Vault answers a client's first request with an authentication challenge; reads sent at once would
    // each open a TLS connection and each get that challenge.
    const { credentials, kv } = setup();
    await credentials.getToken();
    expect(kv.reads).toEqual(['mde-tenant-id', 'mde-client-id', 'mde-client-secret']);
    expect(kv.inFlight.max).toBe(1);
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
    expect(credentialsMade).toEqual(['s1', 's2']);
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

  describe("bounded by the caller's budget", () => {
    it('a waiter whose budget runs out gets SecretUnavailable; the shared read goes on for the others', async () => {
      const { credentials, kv, tokenCalls } = setup();
      kv.delay(300);
      const short = credentials.getToken({ remainingMs: 50 }).catch((e: unknown) => e);
      const long = credentials.getToken({ remainingMs: 5000 });
      expect(await short).toMatchObject({ code: 'SecretUnavailable' });
      await expect(long).resolves.toMatch(/^tok-s1-/);
      // One read for both, never aborted (the longer budget still needed it).
      expect(kv.reads).toHaveLength(3);
      expect(kv.signals.some((s) => s.aborted)).toBe(false);
      expect(tokenCalls).toHaveLength(1);
    });

    it('a Key Vault that never answers: the read is aborted when the last waiter gives up', async () => {
      const { credentials, kv } = setup();
      kv.delay(Infinity);
      const results = await Promise.all(
        [30, 80].map((ms) => credentials.getToken({ remainingMs: ms }).catch((e: unknown) => e)),
      );
      expect(results).toEqual([
        expect.objectContaining({ code: 'SecretUnavailable', transient: true }),
        expect.objectContaining({ code: 'SecretUnavailable', transient: true }),
      ]);
      await new Promise((r) => setTimeout(r, 20));
      // The first read (the items are read one after another) is aborted, and nothing more is read.
      expect(kv.reads).toEqual(['mde-tenant-id']);
      expect(kv.signals).toHaveLength(1);
      expect(kv.signals.every((s) => s.aborted)).toBe(true);
      // Key Vault answers again: the next call reads afresh and succeeds.
      kv.delay(5);
      await expect(credentials.getToken({ remainingMs: 1000 })).resolves.toMatch(/^tok-s1-/);
    });

    it('after the TTL, a Key Vault that does not answer leaves the cached credentials in use', async () => {
      const { credentials, kv, advance, tokenCalls } = setup({ ttlMs: 60_000 });
      const first = await credentials.getToken();
      advance(61_000);
      kv.delay(Infinity);
      await expect(credentials.getToken({ remainingMs: 200 })).resolves.toBe(first);
      expect(tokenCalls).toHaveLength(1);
    });

    it('an Entra ID that never answers is TokenUnavailable', async () => {
      const { credentials } = setup();
      const hanging = new MdeCredentials({
        ...(credentials as unknown as { options: ConstructorParameters<typeof MdeCredentials>[0] }).options,
        createCredential: () => ({ getToken: () => new Promise<AccessToken>(() => undefined) }),
      });
      await expect(hanging.getToken({ remainingMs: 100 })).rejects.toMatchObject({
        code: 'TokenUnavailable',
        transient: true,
      });
    });
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

describe('concurrent token flights (a newcomer starts its own after JOIN_WINDOW_MS)', () => {
  afterEach(() => jest.useRealTimers());

  it('a waiter whose time runs out names the phase of its own flight, not of another one', async () => {
    jest.useFakeTimers();
    const { credentials, kv } = setup();
    const entraHangs = new MdeCredentials({
      ...(credentials as unknown as { options: ConstructorParameters<typeof MdeCredentials>[0] }).options,
      createCredential: () => ({ getToken: () => new Promise<AccessToken>(() => undefined) }),
    });
    kv.delay(Infinity);
    // The first flight waits for Key Vault, for a short waiter and a longer one (which keeps it going)...
    const first = entraHangs.getToken({ remainingMs: JOIN_WINDOW_MS + 400 }).catch((e: unknown) => e);
    void entraHangs.getToken({ remainingMs: 10_000 }).catch(() => undefined);
    await jest.advanceTimersByTimeAsync(JOIN_WINDOW_MS + 100);
    // ...while a second one, started later, gets the secrets and waits for Entra ID.
    kv.delay(5);
    const second = entraHangs.getToken({ remainingMs: 2000 }).catch((e: unknown) => e);
    await jest.advanceTimersByTimeAsync(2000);
    expect(await first).toMatchObject({ code: 'SecretUnavailable' });
    expect(await second).toMatchObject({ code: 'TokenUnavailable' });
    await jest.advanceTimersByTimeAsync(10_000);
  });

  it('a federated token request reports its own assertion failure, whatever another request got', async () => {
    jest.useFakeTimers();
    let identityCalls = 0;
    let releaseFirst: () => void = () => undefined;
    const firstFailed = new Promise<void>((resolve) => (releaseFirst = resolve));
    const credentials = new MdeCredentials({
      mode: 'federated',
      vault: new VaultReader({ ttlMs: 900_000, now: () => 0 }),
      secretNames: { tenantId: 't', clientId: 'c', clientSecret: 's' },
      ids: {
        tenantId: '72f988bf-0000-4000-8000-00000000c0de',
        clientId: '5a1e5a1e-0000-4000-8000-0000000a99c1',
      },
      certificateName: 'c',
      tokenExchangeAudience: 'api://AzureADTokenExchange',
      assertionIdentity: {
        getToken: async () => {
          identityCalls += 1;
          if (identityCalls === 1)
            throw Object.assign(new Error('no identity'), { name: 'CredentialUnavailableError' });
          return { token: 'a.e30.s', expiresOnTimestamp: Date.now() + 3_600_000 };
        },
      },
      authorityHost: 'https://login.microsoftonline.com',
      scope: 'https://api.securitycenter.microsoft.com/.default',
      ttlMs: 900_000,
      now: () => 0,
      log: recordingLogger(),
      createCredential: (_credential, context) => ({
        getToken: async (): Promise<AccessToken> => {
          try {
            await context.getAssertion();
          } catch {
            // What MSAL reports when the assertion callback fails, after the other request went through.
            await firstFailed;
            throw new Error('assertion callback failed');
          }
          return { token: 'mde-token', expiresOnTimestamp: Date.now() + 3_600_000 };
        },
      }),
    });
    const first = credentials.getToken({ remainingMs: 10_000 }).catch((e: unknown) => e);
    await jest.advanceTimersByTimeAsync(JOIN_WINDOW_MS + 100);
    await expect(credentials.getToken({ remainingMs: 10_000 })).resolves.toBe('mde-token');
    releaseFirst();
    expect(await first).toMatchObject({
      code: 'TokenUnavailable',
      message: expect.stringMatching(/managed identity \(AZURE_CLIENT_ID\) could not issue its token/),
    });
  });
});
