/**
 * Caller checks in the registered HTTP handlers (docs/security.md): signed webhooks, Entra ID app roles via
 * App Service Authentication, the authenticated caller in `requestedBy`, and failing closed.
 */
import type { ReleaseStore } from '../../src/core/ports';
import {
  buildDependencies,
  getDependencies,
  setDependencies,
  type CallerChecks,
} from '../../src/composition';
import { parseSettings } from '../../src/config';
import fc from 'fast-check';
import { parseRoleList } from '../../src/core/callerPrincipal';
import { UnisolateError } from '../../src/core/errors';
import { computeSignature, SignatureVerifier } from '../../src/core/signature';
import { installFakeApp } from '../support/fakeApp';
import { FakeClock, MACHINE_ID, memoryStore, stateDeps } from '../support/fakes';
import { invokeHttp, invokeServiceBus, loadApp, onLog } from '../../dev/host';

/** What the app logged through `context.log` & co. (every invocation of this file). */
const capturedLogs: string[] = [];
onLog((entry) => capturedLogs.push(`[${entry.level}] ${entry.message}`));

const SECRET = 'caller-checks-webhook-secret-0123456789abcdef';
const APP_ID = '4a1b2c3d-0000-4000-8000-123456789abc';

function principal(claims: Record<string, string>): string {
  const list = Object.entries(claims).map(([typ, val]) => ({ typ, val }));
  return Buffer.from(JSON.stringify({ auth_typ: 'aad', claims: list })).toString('base64');
}

function install(callers: Partial<CallerChecks>, store?: ReleaseStore) {
  const clock = new FakeClock();
  return installFakeApp({
    clock,
    ...(store ? { state: stateDeps(store) } : {}),
    callers: {
      policy: { platformAuthEnabled: false, allowedRoles: [] },
      signatures: new SignatureVerifier({ now: clock.now }),
      ...callers,
    },
  });
}

const body = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ comment: 'Clean and validated', correlationId: 'INC1', ...extra });

function signed(raw: string, nowMs: number, secret = SECRET): Record<string, string> {
  const ts = String(Math.floor(nowMs / 1000));
  return {
    'content-type': 'application/json',
    'x-unisolate-timestamp': ts,
    'x-unisolate-signature': computeSignature(secret, ts, raw),
  };
}

const release = (headers: Record<string, string>, raw: string) =>
  invokeHttp('unisolateMachine', { params: { machineId: MACHINE_ID }, headers, body: raw });

beforeAll(() => loadApp());
afterEach(() => setDependencies());

describe('signed webhooks', () => {
  const webhookSecret = { keys: async () => [SECRET] };

  it('accept a correctly signed request and release the device', async () => {
    const { defender, clock } = install({ webhookSecret });
    const raw = body({ machineId: MACHINE_ID });
    const result = await release(signed(raw, clock.now()), raw);
    expect(result).toMatchObject({ status: 201, body: { status: 'Accepted' } });
    expect(defender.unisolateCalls).toHaveLength(1);
  });

  it('refuse an unsigned request with 401 Unauthorized SignatureInvalid, one outcome, no Defender call', async () => {
    const { defender } = install({ webhookSecret });
    const result = await release({ 'content-type': 'application/json' }, body());
    expect(result.status).toBe(401);
    expect(result.body).toMatchObject({
      status: 'Unauthorized',
      machineId: MACHINE_ID,
      error: { code: 'SignatureInvalid', message: expect.stringMatching(/X-Unisolate-Signature/) },
    });
    expect(result.messages).toEqual([result.body]);
    expect(defender.unisolateCalls).toHaveLength(0);
  });

  it('require the device in the signed body on the machine route (the URL is not signed)', async () => {
    const { defender, clock } = install({ webhookSecret });
    const raw = body();
    const result = await release(signed(raw, clock.now()), raw);
    expect(result.status).toBe(401);
    expect(result.body).toMatchObject({
      status: 'Unauthorized',
      error: { code: 'SignatureInvalid', message: expect.stringMatching(/machineId.*in the body/) },
    });
    expect(defender.unisolateCalls).toHaveLength(0);
    // Signed for one device, sent to another: the signed body wins, nothing is released.
    const other = body({ machineId: 'f'.repeat(40) });
    const redirected = await release(signed(other, clock.now()), other);
    expect(redirected.status).toBe(400);
    expect(defender.unisolateCalls).toHaveLength(0);
  });

  it('check the signature before the content type or JSON (an unsigned bad body is 401, not 415/400)', async () => {
    install({ webhookSecret });
    expect((await release({ 'content-type': 'text/plain' }, '{')).status).toBe(401);
  });

  it('answer 503 with Retry-After and call nothing when the signing secret cannot be read', async () => {
    const { defender } = install({
      webhookSecret: {
        keys: () =>
          Promise.reject(new UnisolateError('SecretUnavailable', 'Key Vault is unreachable. Retry later.')),
      },
    });
    const raw = body();
    const result = await release(signed(raw, Date.now()), raw);
    expect(result.status).toBe(503);
    expect(result.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(result.body).toMatchObject({ status: 'Failed', error: { code: 'SecretUnavailable' } });
    expect(defender.unisolateCalls).toHaveLength(0);
  });
});

describe('Entra ID callers (App Service Authentication)', () => {
  const enforcing = { platformAuthEnabled: true, allowedRoles: ['Unisolate.Invoke'] };

  it('allow a caller with the role and record who it is in requestedBy', async () => {
    const { defender } = install({ policy: enforcing });
    const result = await release(
      {
        'content-type': 'application/json',
        'x-ms-client-principal': principal({
          upn: 'analyst@contoso.com',
          azp: APP_ID,
          roles: 'Unisolate.Invoke',
        }),
      },
      body({ requestedBy: 'ticket owner' }),
    );
    expect(result.status).toBe(201);
    expect(result.body).toMatchObject({
      requestedBy: `analyst@contoso.com (via app ${APP_ID}) for "ticket owner"`,
    });
    expect(defender.unisolateCalls).toHaveLength(1);
  });

  it('record the authenticated caller in every outcome: a reused idempotency key (422), a bug (502)', async () => {
    const store = memoryStore().store;
    const { defender } = install({ policy: enforcing }, store);
    const as = (upn: string, key = 'key-7') => ({
      'content-type': 'application/json',
      'idempotency-key': key,
      'x-ms-client-principal': principal({ upn, roles: 'Unisolate.Invoke' }),
    });
    const first = await release(as('analyst@contoso.com'), body({ requestedBy: 'ciso@contoso.com' }));
    expect(first.body).toMatchObject({
      status: 'Accepted',
      requestedBy: 'analyst@contoso.com for "ciso@contoso.com"',
    });
    const reused = await release(
      as('mallory@contoso.com'),
      body({ requestedBy: 'ciso@contoso.com', comment: 'something else' }),
    );
    expect(reused.status).toBe(422);
    expect(reused.body).toMatchObject({
      status: 'Invalid',
      error: { code: 'IdempotencyKeyReused' },
      requestedBy: 'mallory@contoso.com for "ciso@contoso.com"',
    });
    expect(reused.messages).toEqual([reused.body]);
    expect(defender.unisolateCalls).toHaveLength(1);

    // A bug deep in the release (the budget throws something that is not an UnisolateError).
    const bug = jest.spyOn(getDependencies().release.budget, 'acquire').mockRejectedValue(new Error('bug'));
    try {
      const failed = await release(
        as('mallory@contoso.com', 'key-8'),
        body({ requestedBy: 'ciso@contoso.com' }),
      );
      expect(failed.status).toBe(502);
      // The body is not read after an internal error; who really called still is recorded.
      expect(failed.body).toMatchObject({
        error: { code: 'InternalError' },
        requestedBy: 'mallory@contoso.com',
      });
    } finally {
      bug.mockRestore();
    }
  });

  it('refuse a caller without the role with 403 CallerNotAllowed, still recording who tried', async () => {
    const { defender } = install({ policy: enforcing });
    const result = await release(
      {
        'content-type': 'application/json',
        'x-ms-client-principal': principal({ appid: APP_ID, roles: 'Reader' }),
      },
      body(),
    );
    expect(result.status).toBe(403);
    expect(result.body).toMatchObject({
      status: 'Unauthorized',
      requestedBy: `app ${APP_ID}`,
      error: { code: 'CallerNotAllowed' },
    });
    expect(defender.unisolateCalls).toHaveLength(0);
  });

  it.each([[undefined], ['%%%'], [Buffer.from('{"claims":').toString('base64')]])(
    'refuse a missing or malformed principal (%p) with 401 CallerUnauthenticated',
    async (header) => {
      const { defender } = install({ policy: enforcing });
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (header !== undefined) headers['x-ms-client-principal'] = header;
      const result = await release(headers, body());
      expect([result.status, (result.body as { error: { code: string } }).error.code]).toEqual([
        401,
        'CallerUnauthenticated',
      ]);
      expect(defender.unisolateCalls).toHaveLength(0);
    },
  );

  it('ignore a forged principal when App Service Authentication is off (requestedBy stays self-declared)', async () => {
    install({ policy: { platformAuthEnabled: false, allowedRoles: [] } });
    const result = await release(
      {
        'content-type': 'application/json',
        'x-ms-client-principal': principal({ upn: 'ceo@contoso.com', roles: 'Unisolate.Invoke' }),
      },
      body({ requestedBy: 'analyst@contoso.com' }),
    );
    expect(result.body).toMatchObject({ status: 'Accepted', requestedBy: 'analyst@contoso.com' });
  });

  it('fail closed (503 ConfigurationError) when roles are required but App Service Authentication is off', async () => {
    const { defender } = install({
      policy: { platformAuthEnabled: false, allowedRoles: ['Unisolate.Invoke'] },
    });
    const result = await release(
      {
        'content-type': 'application/json',
        'x-ms-client-principal': principal({ upn: 'a@contoso.com', roles: 'Unisolate.Invoke' }),
      },
      body(),
    );
    expect(result).toMatchObject({ status: 503, body: { error: { code: 'ConfigurationError' } } });
    expect(defender.unisolateCalls).toHaveLength(0);
  });
});

describe('settings', () => {
  it('read WEBHOOK_SIGNING_SECRET_NAME, ALLOWED_CALLER_ROLES and WEBSITE_AUTH_ENABLED', () => {
    const { config, problems } = parseSettings({
      KEY_VAULT_URL: 'https://kv.example/',
      WEBHOOK_SIGNING_SECRET_NAME: 'unisolate-webhook',
      ALLOWED_CALLER_ROLES: 'Unisolate.Invoke, Unisolate.Admin',
      WEBSITE_AUTH_ENABLED: 'True',
    });
    expect(problems).toEqual([]);
    expect(config.callers).toEqual({
      webhookSigningSecretName: 'unisolate-webhook',
      allowedRoles: ['Unisolate.Invoke', 'Unisolate.Admin'],
      platformAuthEnabled: true,
    });
    expect(parseSettings({ KEY_VAULT_URL: 'https://kv.example/' }).config.callers).toEqual({
      webhookSigningSecretName: undefined,
      allowedRoles: [],
      platformAuthEnabled: false,
    });
  });

  it('read ALLOWED_CALLER_ROLES with the one role-list rule (parseRoleList)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('Unisolate.Invoke', 'Admin', ',', ' ', '\t', ',,', 'X')),
        (parts) => {
          const value = parts.join('');
          expect(
            parseSettings({ KEY_VAULT_URL: 'https://kv.example/', ALLOWED_CALLER_ROLES: value }).config
              .callers.allowedRoles,
          ).toEqual(parseRoleList(value));
        },
      ),
    );
  });

  it('reject a WEBHOOK_SIGNING_SECRET_NAME that is not a Key Vault secret name', () => {
    expect(
      parseSettings({ KEY_VAULT_URL: 'https://kv.example/', WEBHOOK_SIGNING_SECRET_NAME: 'a/b' }).problems,
    ).toEqual([expect.stringMatching(/^WEBHOOK_SIGNING_SECRET_NAME/)]);
  });

  it('build the webhook secret reader only when a secret name is set', () => {
    const base = { KEY_VAULT_URL: 'https://kv.example/', IDENTITY_ENDPOINT: 'http://127.0.0.1:1/msi' };
    expect(buildDependencies(base).callers?.webhookSecret).toBeUndefined();
    expect(
      buildDependencies({ ...base, WEBHOOK_SIGNING_SECRET_NAME: 'hook' }).callers?.webhookSecret,
    ).toBeDefined();
  });
});

describe('invalid settings never switch the caller checks off', () => {
  // The real composition root, from settings: nothing is called (an invalid setting stops every release, and
  // the caller checks refuse before any Key Vault read).
  const base = {
    KEY_VAULT_URL: 'https://kv-mde.vault.azure.net/',
    IDENTITY_ENDPOINT: 'http://127.0.0.1:1/msi',
    ALLOWED_CALLER_ROLES: 'Unisolate.Invoke',
    WEBSITE_AUTH_ENABLED: 'True',
  };
  const typo = { MDE_CLOUD: 'Commercal' };
  const withRole = principal({ upn: 'analyst@contoso.com', roles: 'Unisolate.Invoke' });
  const GENERIC =
    'The service is misconfigured; an administrator must fix the app settings (details in the function log).';

  function installFrom(env: Record<string, string>) {
    const error = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      setDependencies(buildDependencies(env));
      return error.mock.calls.map((args) => args.map(String).join(' ')).join('\n');
    } finally {
      error.mockRestore();
    }
  }
  const leaks = (result: unknown, ...values: string[]) =>
    values.filter((v) => JSON.stringify(result).includes(v));

  it('signing and roles on, one typo elsewhere: an unsigned anonymous caller gets 401, and no setting', async () => {
    installFrom({ ...base, ...typo, WEBHOOK_SIGNING_SECRET_NAME: 'unisolate-webhook' });
    const result = await release({ 'content-type': 'application/json' }, body({ machineId: MACHINE_ID }));
    expect(result.status).toBe(401);
    expect(result.body).toMatchObject({ status: 'Unauthorized', error: { code: 'CallerUnauthenticated' } });
    expect(leaks(result, 'MDE_CLOUD', 'Commercal', 'unisolate-webhook', 'kv-mde')).toEqual([]);
  });

  it('roles on, one typo elsewhere: a caller with the role learns which setting is invalid, not its value', async () => {
    const logged = installFrom({ ...base, ...typo });
    const result = await release(
      { 'content-type': 'application/json', 'x-ms-client-principal': withRole },
      body(),
    );
    expect(result.status).toBe(503);
    expect(result.body).toMatchObject({
      status: 'Failed',
      requestedBy: 'analyst@contoso.com',
      error: { code: 'ConfigurationError', message: expect.stringMatching(/MDE_CLOUD/) },
    });
    expect(leaks(result, 'Commercal', 'kv-mde', 'Commercial, GCC')).toEqual([]);
    // The log has the whole story.
    expect(logged).toMatch(
      /MDE_CLOUD must be one of Commercial, GCC, GCCHigh, DoD \(got \\?"Commercal\\?"\)/,
    );
    // Without the role: refused as before.
    const anonymous = await release({ 'content-type': 'application/json' }, body());
    expect(anonymous.status).toBe(401);
  });

  it('no caller checks, one typo: a function-key caller and the response queue get names, never values', async () => {
    installFrom({ KEY_VAULT_URL: 'https://kv-mde.vault.azure.net/', MAX_DELIVERY_COUNT: 'ten', ...typo });
    const result = await release({ 'content-type': 'application/json' }, body());
    expect(result.status).toBe(503);
    const message = (result.body as { error: { message: string } }).error.message;
    expect(message).toMatch(/MDE_CLOUD/);
    expect(message).toMatch(/MAX_DELIVERY_COUNT/);
    expect(leaks(result, 'Commercal', '(got', 'kv-mde')).toEqual([]);
    const queued = await invokeServiceBus('unisolateServiceBus', body({ machineId: MACHINE_ID }), {
      deliveryCount: 10,
    });
    expect(queued.messages).toEqual([
      expect.objectContaining({
        status: 'Failed',
        error: expect.objectContaining({ code: 'ConfigurationError' }),
      }),
    ]);
    expect(leaks(queued.messages, 'Commercal', 'kv-mde')).toEqual([]);
  });

  it.each([
    [
      'a caller-check setting itself is invalid',
      { WEBHOOK_SIGNING_SECRET_NAME: 'not/a/secret' },
      'not/a/secret',
    ],
    [
      'the signing key cannot be read (invalid KEY_VAULT_URL)',
      { WEBHOOK_SIGNING_SECRET_NAME: 'unisolate-webhook', KEY_VAULT_URL: 'kv-mde' },
      'kv-mde',
    ],
  ])('fail closed when %s: every HTTP release is refused, saying only that', async (_, env, value) => {
    const logged = installFrom({ ...base, ...env });
    for (const headers of [
      { 'content-type': 'application/json' } as Record<string, string>,
      { 'content-type': 'application/json', 'x-ms-client-principal': withRole },
    ]) {
      capturedLogs.length = 0;
      const result = await release(headers, body({ machineId: MACHINE_ID }));
      expect(result).toMatchObject({
        status: 503,
        body: { status: 'Failed', error: { code: 'ConfigurationError', message: GENERIC } },
      });
      expect(result.messages).toEqual([result.body]);
      // Each refusal logs the problems, with their values, for the administrator.
      expect(capturedLogs.join('\n')).toContain(value);
    }
    expect(logged).toContain(value);
  });

  it('roles without App Service Authentication: refused, with the detail in the log only', async () => {
    installFrom({ ...base, WEBSITE_AUTH_ENABLED: 'False' });
    capturedLogs.length = 0;
    const result = await release({ 'content-type': 'application/json' }, body());
    expect(result).toMatchObject({
      status: 503,
      body: { error: { code: 'ConfigurationError', message: GENERIC } },
    });
    expect(capturedLogs.join('\n')).toMatch(/App Service Authentication is not enabled/);
  });
});
