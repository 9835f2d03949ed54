/**
 * Self-test helpers: the app roles a token must carry and reading them from a token.
 */
import { requiredRoles, rolesOf } from '../../src/core/selfTest';

const jwt = (payload: object) =>
  `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`;

describe('self-test helpers', () => {
  it('reads the roles of an access token; none is an empty list; an opaque token is unreadable', () => {
    expect(rolesOf(jwt({ roles: ['Machine.Isolate', 7] }))).toEqual(['Machine.Isolate']);
    expect(rolesOf(jwt({ appid: 'x' }))).toEqual([]);
    expect(rolesOf('opaque-token')).toBeNull();
  });

  it('requires Machine.Isolate always, the read permissions only for features that read', () => {
    const none = { isolationCheck: false, tracking: false, riskGate: false, alertGate: false };
    expect(requiredRoles(none).map((r) => r.role)).toEqual(['Machine.Isolate']);
    expect(requiredRoles({ ...none, tracking: true, alertGate: true }).map((r) => r.role)).toEqual([
      'Machine.Isolate',
      'Machine.Read.All',
      'Alert.Read.All',
    ]);
  });
});
