/**
 * App Service Authentication's X-MS-CLIENT-PRINCIPAL: decoding, app-role checks, and the audit text.
 */
import {
  authorizeCaller,
  decodeClientPrincipal,
  describeRequester,
  parseRoleList,
  type CallerPolicy,
} from '../../src/core/callerPrincipal';

/** Encodes a principal the way the platform does. */
function principalHeader(claims: Record<string, string | string[]>, extra: object = {}): string {
  const list = Object.entries(claims).flatMap(([typ, val]) =>
    (Array.isArray(val) ? val : [val]).map((v) => ({ typ, val: v })),
  );
  return Buffer.from(
    JSON.stringify({ auth_typ: 'aad', claims: list, name_typ: 'name', role_typ: 'roles', ...extra }),
  ).toString('base64');
}

const APP_ID = '4a1b2c3d-0000-4000-8000-123456789abc';
const enforcing: CallerPolicy = { platformAuthEnabled: true, allowedRoles: ['Unisolate.Invoke'] };

describe('decodeClientPrincipal', () => {
  it('reads name, app id and roles from a user token (v2: azp, preferred_username)', () => {
    const header = principalHeader({
      preferred_username: 'analyst@contoso.com',
      name: 'Ana Lyst',
      azp: APP_ID,
      roles: ['Unisolate.Invoke', 'Reader'],
    });
    expect(decodeClientPrincipal(header)).toEqual({
      principal: {
        authType: 'aad',
        name: 'analyst@contoso.com',
        appId: APP_ID,
        roles: ['Unisolate.Invoke', 'Reader'],
      },
    });
  });

  it('reads an app-only token (v1: appid, no name) and roles under the mapped role claim type', () => {
    const roleUri = 'http://schemas.microsoft.com/ws/2008/06/identity/claims/role';
    const header = principalHeader({ appid: APP_ID, [roleUri]: 'Unisolate.Invoke' }, { role_typ: roleUri });
    expect(decodeClientPrincipal(header)).toEqual({
      principal: { authType: 'aad', name: null, appId: APP_ID, roles: ['Unisolate.Invoke'] },
    });
  });

  it('strips control characters from claim values (they end up in outcomes and logs)', () => {
    const header = principalHeader({ upn: 'evil\r\nuser@contoso.com\u2028x', appid: APP_ID });
    const decoded = decodeClientPrincipal(header);
    expect(decoded).toMatchObject({ principal: { name: 'evil  user@contoso.com x' } });
  });

  it.each([
    ['empty', ''],
    ['not base64', '!!!not-base64!!!'],
    ['base64 of non-JSON', Buffer.from('hello').toString('base64')],
    ['base64 of a JSON string', Buffer.from('"x"').toString('base64')],
    ['base64 of JSON without claims', Buffer.from('{"auth_typ":"aad"}').toString('base64')],
    ['base64 of JSON with claims not an array', Buffer.from('{"claims":{}}').toString('base64')],
    ['huge', 'A'.repeat(100_000)],
  ])('reports a malformed header (%s) without throwing', (_name, header) => {
    expect(decodeClientPrincipal(header)).toEqual({
      problem: expect.stringContaining('X-MS-CLIENT-PRINCIPAL'),
    });
  });

  it('ignores malformed claims inside an otherwise valid principal', () => {
    const header = Buffer.from(
      JSON.stringify({
        claims: [null, 1, { typ: 'roles' }, { typ: 'roles', val: 7 }, { typ: 'roles', val: 'R' }],
      }),
    ).toString('base64');
    expect(decodeClientPrincipal(header)).toEqual({
      principal: { authType: '', name: null, appId: null, roles: ['R'] },
    });
  });
});

describe('authorizeCaller', () => {
  const withRole = principalHeader({ upn: 'analyst@contoso.com', roles: 'Unisolate.Invoke' });
  const withoutRole = principalHeader({ upn: 'intruder@contoso.com', roles: 'Reader' });

  it('allows a caller holding one of the roles (case-insensitive) and returns the principal', () => {
    expect(authorizeCaller(withRole, enforcing)).toMatchObject({
      ok: true,
      principal: { name: 'analyst@contoso.com' },
    });
    expect(
      authorizeCaller(withRole, { platformAuthEnabled: true, allowedRoles: ['other', 'unisolate.invoke'] }),
    ).toMatchObject({ ok: true });
  });

  it('refuses an authenticated caller without the role with CallerNotAllowed (403), keeping who it was', () => {
    const decision = authorizeCaller(withoutRole, enforcing);
    expect(decision).toMatchObject({
      ok: false,
      principal: { name: 'intruder@contoso.com' },
      error: { code: 'CallerNotAllowed', message: expect.stringContaining('Unisolate.Invoke') },
    });
  });

  it.each([
    ['no header', null],
    ['an empty header', ''],
    ['garbage', 'garbage%%%'],
    ['base64 of garbage', Buffer.from('{"claims": [').toString('base64')],
  ])('refuses %s with CallerUnauthenticated (401) when roles are required', (_name, header) => {
    expect(authorizeCaller(header, enforcing)).toMatchObject({
      ok: false,
      principal: null,
      error: { code: 'CallerUnauthenticated' },
    });
  });

  it('fails closed (ConfigurationError) when roles are required but App Service Authentication is off', () => {
    // Without the platform, anyone holding a function key could forge the header.
    expect(
      authorizeCaller(withRole, { platformAuthEnabled: false, allowedRoles: ['Unisolate.Invoke'] }),
    ).toMatchObject({ ok: false, principal: null, error: { code: 'ConfigurationError' } });
  });

  it('with no roles required: allows everyone, trusting the principal only when the platform set it', () => {
    expect(authorizeCaller(null, { platformAuthEnabled: true, allowedRoles: [] })).toEqual({
      ok: true,
      principal: null,
    });
    expect(authorizeCaller('garbage', { platformAuthEnabled: true, allowedRoles: [] })).toEqual({
      ok: true,
      principal: null,
    });
    expect(authorizeCaller(withRole, { platformAuthEnabled: true, allowedRoles: [] })).toMatchObject({
      ok: true,
      principal: { name: 'analyst@contoso.com' },
    });
    // A forged header while the platform is off is ignored, not recorded.
    expect(authorizeCaller(withRole, { platformAuthEnabled: false, allowedRoles: [] })).toEqual({
      ok: true,
      principal: null,
    });
  });
});

describe('describeRequester', () => {
  const user = { authType: 'aad', name: 'analyst@contoso.com', appId: APP_ID, roles: [] };
  const app = { authType: 'aad', name: null, appId: APP_ID, roles: [] };

  it.each([
    [null, null, null],
    [null, 'self-declared', 'self-declared'],
    [user, null, `analyst@contoso.com (via app ${APP_ID})`],
    [user, 'ANALYST@contoso.com', `analyst@contoso.com (via app ${APP_ID})`],
    [user, 'someone else', `analyst@contoso.com (via app ${APP_ID}) for "someone else"`],
    [app, null, `app ${APP_ID}`],
    [app, 'analyst@contoso.com', `app ${APP_ID} for "analyst@contoso.com"`],
    [{ ...user, appId: null }, null, 'analyst@contoso.com'],
  ])('principal %o + declared %p -> %p', (principal, declared, expected) => {
    expect(describeRequester(principal, declared)).toBe(expected);
  });
});

describe('parseRoleList', () => {
  it('splits on commas and spaces, drops empties and duplicates', () => {
    expect(parseRoleList(' Unisolate.Invoke, Admin ,,Admin  Other')).toEqual([
      'Unisolate.Invoke',
      'Admin',
      'Other',
    ]);
    expect(parseRoleList(undefined)).toEqual([]);
    expect(parseRoleList('')).toEqual([]);
  });
});
