/**
 * The simulators' OData evaluator: $filter parsing, matching, and the equality a query must carry.
 */
import { ODataError, applyQuery, matches, parseFilter, requiredEquality } from '../../dev/simulators/odata';

const machines = [
  {
    id: 'a1',
    computerDnsName: 'ws-fin-042.contoso.local',
    riskScore: 'High',
    osBuild: 22631,
    machineTags: ['finance'],
    lastSeen: '2025-01-10T08:00:00.0000000Z',
    isAadJoined: true,
  },
  {
    id: 'b2',
    computerDnsName: "o'brien-pc.contoso.local",
    riskScore: 'Low',
    osBuild: 19045,
    machineTags: [],
    lastSeen: '2025-01-12T08:00:00.0000000Z',
    isAadJoined: false,
  },
  {
    id: 'c3',
    computerDnsName: 'SRV-SQL-03.contoso.local',
    riskScore: 'Medium',
    osBuild: null,
    machineTags: ['server', 'sql'],
    lastSeen: '2025-01-11T08:00:00.0000000Z',
    isAadJoined: true,
  },
];

const ids = (filter: string, extra: Record<string, string> = {}): string[] =>
  applyQuery(machines, new URLSearchParams({ $filter: filter, ...extra })).map((m) => m.id as string);

describe('OData query evaluator', () => {
  test.each([
    ["computerDnsName eq 'WS-FIN-042.CONTOSO.LOCAL'", ['a1']],
    ["computerDnsName eq 'o''brien-pc.contoso.local'", ['b2']],
    ["computerDnsName ne 'ws-fin-042.contoso.local'", ['b2', 'c3']],
    ["startswith(computerDnsName,'srv-')", ['c3']],
    ["startswith(computerDnsName, 'ws-') eq false", ['b2', 'c3']],
    ["endswith(computerDnsName,'.local') and contains(computerDnsName,'sql')", ['c3']],
    ["riskScore eq 'High' or riskScore eq 'Medium'", ['a1', 'c3']],
    ["not (riskScore eq 'Low')", ['a1', 'c3']],
    ["riskScore in ('Low','Medium')", ['b2', 'c3']],
    ['osBuild gt 20000', ['a1']],
    ['osBuild eq null', ['c3']],
    ['isAadJoined eq true', ['a1', 'c3']],
    ['isAadJoined', ['a1', 'c3']],
    ['lastSeen gt 2025-01-11T00:00:00Z', ['b2', 'c3']],
    ['lastSeen lt 2025-01-11Z', ['a1']],
    ["machineTags/any(t: t eq 'SQL')", ['c3']],
    ["tolower(computerDnsName) eq 'srv-sql-03.contoso.local'", ['c3']],
    ["'a1' eq id", ['a1']],
  ])('%s', (filter, expected) => {
    expect(ids(filter)).toEqual(expected);
  });

  test('$orderby, $skip, $top and $select', () => {
    const q = new URLSearchParams({
      $orderby: 'lastSeen desc',
      $skip: '1',
      $top: '1',
      $select: 'id,riskScore',
    });
    expect(applyQuery(machines, q)).toEqual([{ id: 'c3', riskScore: 'Medium' }]);
    const multi = new URLSearchParams({ $orderby: 'isAadJoined desc, osBuild asc' });
    expect(applyQuery(machines, multi).map((m) => m.id)).toEqual(['a1', 'c3', 'b2']);
  });

  test.each([
    "computerDnsName eq 'unterminated",
    'computerDnsName eq',
    "computerDnsName eq 'x' and",
    "nosuchprop eq 'x'",
    "computerDnsName xx 'x'",
    '(riskScore eq 1',
  ])('rejects malformed filter %p', (filter) => {
    expect(() => ids(filter)).toThrow(ODataError);
  });

  test('rejects bad $top/$orderby', () => {
    expect(() => applyQuery(machines, new URLSearchParams({ $top: '-1' }))).toThrow(ODataError);
    expect(() => applyQuery(machines, new URLSearchParams({ $top: '10001' }))).toThrow(/limit/);
    expect(() => applyQuery(machines, new URLSearchParams({ $orderby: 'id sideways' }))).toThrow(ODataError);
  });

  test('requiredEquality finds an indexable equality inside and-chains only', () => {
    expect(requiredEquality(parseFilter("machineId eq 'm1' and type eq 'Unisolate'"), 'machineId')).toBe(
      'm1',
    );
    expect(requiredEquality(parseFilter("type eq 'Unisolate' and 'm2' eq machineId"), 'machineid')).toBe(
      'm2',
    );
    expect(
      requiredEquality(parseFilter("machineId eq 'm1' or type eq 'Isolate'"), 'machineId'),
    ).toBeUndefined();
    expect(requiredEquality(parseFilter("startswith(machineId,'m')"), 'machineId')).toBeUndefined();
  });

  test('matches() evaluates a parsed tree against an entity', () => {
    const f = parseFilter("type eq 'Unisolate' and status in ('Pending','InProgress')");
    expect(matches(f, { type: 'Unisolate', status: 'InProgress' })).toBe(true);
    expect(matches(f, { type: 'Unisolate', status: 'Succeeded' })).toBe(false);
  });
});
