/**
 * Device look-up: the machine queries built for a name or id, matching results, reading isolation state
 * from action history, and the release policy.
 */
import { machineQueryFor, matchDevices, odataString } from '../../src/core/deviceLookup';
import { deriveIsolationState } from '../../src/core/isolationState';
import { blockReasons, parseReleasePolicy } from '../../src/core/healthGate';

const m = (id: string, computerDnsName: string) => ({ id: id.repeat(40).slice(0, 40), computerDnsName });

describe('device look-up', () => {
  it('doubles quotes so caller text cannot close the OData literal', () => {
    expect(odataString("o'brien")).toBe("'o''brien'");
    expect(machineQueryFor("x' or true or computerDnsName eq 'y.z").filter).toBe(
      "computerDnsName eq 'x'' or true or computerDnsName eq ''y.z'",
    );
  });

  it('uses eq for a full DNS name and startswith for a short one', () => {
    expect(machineQueryFor('ws-01.contoso.local')).toEqual({
      filter: "computerDnsName eq 'ws-01.contoso.local'",
      top: 100,
    });
    expect(machineQueryFor('ws-01').filter).toBe("startswith(computerDnsName,'ws-01')");
  });

  it('matches the whole name or the first label, ignoring case, and nothing else', () => {
    const fleet = [
      m('a', 'WS-01.contoso.local'),
      m('b', 'ws-010.contoso.local'),
      m('c', 'ws-01'),
      m('d', 'ws-01x.contoso.local'),
      { id: 'not-an-id', computerDnsName: 'ws-01' },
    ];
    expect(matchDevices('ws-01', fleet).map((d) => d.computerDnsName)).toEqual([
      'WS-01.contoso.local',
      'ws-01',
    ]);
    expect(matchDevices('WS-01.CONTOSO.LOCAL', fleet).map((d) => d.id[0])).toEqual(['a']);
    expect(matchDevices('ws-01.contoso', fleet)).toEqual([]);
  });
});

describe('isolation state', () => {
  const act = (type: string, status: string, minute: number) => ({
    id: `${type}-${status}-${minute}`,
    type,
    status,
    creationDateTimeUtc: `2026-11-28T10:${String(minute).padStart(2, '0')}:00Z`,
  });

  it.each([
    ['never isolated', [], 'NotIsolated'],
    ['only other actions', [act('RunAntiVirusScan', 'Succeeded', 5)], 'NotIsolated'],
    ['isolated', [act('Isolate', 'Succeeded', 1), act('RunAntiVirusScan', 'Pending', 9)], 'Isolated'],
    ['released', [act('Isolate', 'Succeeded', 1), act('Unisolate', 'Succeeded', 2)], 'NotIsolated'],
    [
      'isolation pending',
      [act('Unisolate', 'Succeeded', 1), act('Isolate', 'Pending', 2)],
      'IsolationPending',
    ],
    ['isolation in progress', [act('Isolate', 'InProgress', 2)], 'IsolationPending'],
    [
      'release pending',
      [act('Isolate', 'Succeeded', 1), act('Unisolate', 'InProgress', 2)],
      'ReleasePending',
    ],
    ['failed release ignored', [act('Isolate', 'Succeeded', 1), act('Unisolate', 'Failed', 2)], 'Isolated'],
    [
      'cancelled isolate ignored',
      [act('Unisolate', 'Succeeded', 1), act('Isolate', 'Cancelled', 2)],
      'NotIsolated',
    ],
    ['timed-out isolate ignored', [act('Isolate', 'Succeeded', 1), act('Isolate', 'TimeOut', 3)], 'Isolated'],
  ])('%s', (_name, actions, kind) => {
    // Order of the page does not matter: the newest decides.
    expect(deriveIsolationState([...actions].reverse(), false).kind).toBe(kind);
  });

  it('is Unknown (not NotIsolated) when a full page holds no Isolate/Unisolate', () => {
    const scans = Array.from({ length: 100 }, (_, i) => act('RunAntiVirusScan', 'Succeeded', i % 60));
    expect(deriveIsolationState(scans, true).kind).toBe('Unknown');
  });
});

describe('release policy', () => {
  it('parses keys and values case-insensitively; empty or off means no gate', () => {
    expect(parseReleasePolicy('blockriskscore=high; BlockAlertSeverity=Medium')).toEqual({
      policy: { blockRiskScore: 'High', blockAlertSeverity: 'Medium' },
      problems: [],
    });
    expect(parseReleasePolicy(undefined).policy).toBeNull();
    expect(parseReleasePolicy(' off ').policy).toBeNull();
  });

  it('lists every problem', () => {
    const { policy, problems } = parseReleasePolicy('blockRiskScore=Huge;maxAlerts=3;oops');
    expect(policy).toBeNull();
    expect(problems).toHaveLength(3);
    expect(problems[0]).toMatch(/blockRiskScore must be one of/);
  });

  it('blocks at or above the risk level and on unresolved alerts at or above the severity', () => {
    const policy = { blockRiskScore: 'Medium' as const, blockAlertSeverity: 'High' as const };
    expect(blockReasons(policy, { riskScore: 'Low' }, [])).toEqual([]);
    expect(blockReasons(policy, { riskScore: 'Medium' }, [])).toEqual([
      'risk score Medium is at or above Medium',
    ]);
    const alerts = [
      { id: 'a1', severity: 'High', status: 'Resolved' },
      { id: 'a2', severity: 'Medium', status: 'New' },
    ];
    expect(blockReasons(policy, { riskScore: 'None' }, alerts)).toEqual([]);
    expect(
      blockReasons(policy, null, [...alerts, { id: 'a3', severity: 'High', status: 'InProgress' }]),
    ).toEqual(['1 unresolved alert of severity High or higher (a3)']);
  });
});
