/**
 * `GET /api/unisolate/{correlationId}`: which ids the route accepts (releases are listed by their request's
 * correlation id, the request's rule: 1-128 printable ASCII characters; nothing else can name them), and who
 * may ask: the callers a release accepts.
 */
import { setDependencies, type CallerChecks } from '../../src/composition';
import { computeSignature, SignatureVerifier } from '../../src/core/signature';
import { installFakeApp } from '../support/fakeApp';
import { stateDeps } from '../support/fakes';
import { invokeHttp, loadApp } from '../../dev/host';

beforeAll(() => loadApp());
afterEach(() => setDependencies());

const install = () => installFakeApp({ state: stateDeps() });

const status = (correlationId: string) =>
  invokeHttp('releaseStatus', {
    method: 'GET',
    url: `http://localhost:7071/api/unisolate/${encodeURIComponent(correlationId)}`,
    params: { correlationId },
    headers: {},
  });

describe('status route ids', () => {
  it.each([
    ['a correlation id of 128 characters', 'a'.repeat(128)],
    ['a correlation id with a colon', 'INC:42'],
  ])('looks up %s', async (_, id) => {
    install();
    const result = await status(id);
    expect(result.status).toBe(404);
    expect(result.body).toMatchObject({ error: { code: 'ReleaseNotFound' } });
  });

  it.each([
    ['129 characters', 'a'.repeat(129)],
    ['140 characters', 'a'.repeat(140)],
    ['a correlation id with an index appended', `${'a'.repeat(128)}:1`],
    ['a control character', 'INC\n1'],
  ])('refuses %s as the message says', async (_, id) => {
    install();
    const result = await status(id);
    expect(result.status).toBe(400);
    expect(result.body).toMatchObject({
      error: { code: 'InvalidRequest', message: expect.stringMatching(/1-128 printable ASCII characters/) },
    });
  });
});

describe('status route callers: the caller checks of the release routes', () => {
  const SECRET = 'status-webhook-secret-0123456789abcdef';
  const callers = (overrides: Partial<CallerChecks>): CallerChecks => ({
    policy: { platformAuthEnabled: false, allowedRoles: [] },
    signatures: new SignatureVerifier({ now: () => Date.now() }),
    ...overrides,
  });
  const lookUp = (headers: Record<string, string>, correlationId = 'INC-STATUS-1') =>
    invokeHttp('releaseStatus', {
      method: 'GET',
      url: `http://localhost:7071/api/unisolate/${correlationId}`,
      params: { correlationId },
      headers,
    });
  /** A GET signs "<timestamp>.GET <path>": the route and id are bound, so a signature serves one look-up. */
  const signedFor = (correlationId: string) => {
    const ts = String(Math.floor(Date.now() / 1000));
    return {
      'x-unisolate-timestamp': ts,
      'x-unisolate-signature': computeSignature(SECRET, ts, `GET /api/unisolate/${correlationId}`),
    };
  };

  it('signed webhooks: an unsigned caller is refused (401) without learning anything; a signed one is answered', async () => {
    installFakeApp({
      state: stateDeps(),
      callers: callers({ webhookSecret: { keys: async () => [SECRET] } }),
    });
    const unsigned = await lookUp({});
    expect([unsigned.status, unsigned.body]).toMatchObject([401, { error: { code: 'SignatureInvalid' } }]);
    const signed = await lookUp(signedFor('INC-STATUS-1'));
    expect([signed.status, signed.body]).toMatchObject([404, { error: { code: 'ReleaseNotFound' } }]);
  });

  it('signed webhooks: two look-ups in the same second are both answered; a signature does not serve another id', async () => {
    installFakeApp({
      state: stateDeps(),
      callers: callers({ webhookSecret: { keys: async () => [SECRET] } }),
    });
    const first = await lookUp(signedFor('INC-STATUS-1'), 'INC-STATUS-1');
    const second = await lookUp(signedFor('INC-STATUS-2'), 'INC-STATUS-2');
    expect([first.status, second.status]).toEqual([404, 404]);
    const moved = await lookUp(signedFor('INC-STATUS-3'), 'INC-STATUS-4');
    expect([moved.status, moved.body]).toMatchObject([401, { error: { code: 'SignatureInvalid' } }]);
  });

  it('app roles: a caller without an allowed role is refused', async () => {
    installFakeApp({
      state: stateDeps(),
      callers: callers({ policy: { platformAuthEnabled: true, allowedRoles: ['Unisolate.Release'] } }),
    });
    const anonymous = await lookUp({});
    expect(anonymous.status).toBe(401);
    const claims = [
      { typ: 'upn', val: 'analyst@contoso.com' },
      { typ: 'roles', val: 'Reader' },
    ];
    const withoutRole = await lookUp({
      'x-ms-client-principal': Buffer.from(JSON.stringify({ auth_typ: 'aad', claims })).toString('base64'),
    });
    expect(withoutRole.status).toBe(403);
  });
});
