import { processRequest } from '../../src/core/bulk';
import { RedeliveryRequested } from '../../src/core/releaseDevice';
import { parseReleaseRequest } from '../../src/core/request';
import { FakeDefender, fakeDeps, MACHINE_ID, TransportError } from '../support/fakes';

const ids = ['a', 'b', 'c'].map((c) => c.repeat(40));
const bulkBody = {
  comment: 'incident closed',
  correlationId: 'INC9',
  devices: ids.map((machineId) => ({ machineId })),
};

describe('request parsing of deviceName, force and devices', () => {
  it('accepts exactly one of machineId, deviceName or devices', () => {
    expect(parseReleaseRequest({ deviceName: ' ws-01 ', comment: 'x', force: true })).toMatchObject({
      ok: true,
      request: { machineId: null, deviceName: 'ws-01', force: true },
    });
    const both = parseReleaseRequest({ machineId: MACHINE_ID, deviceName: 'ws-01', comment: 'x' });
    expect(!both.ok && both.problems).toEqual([
      expect.stringMatching(/exactly one of machineId, deviceName or devices/),
    ]);
    const route = parseReleaseRequest({ deviceName: 'ws-01', comment: 'x' }, { routeMachineId: MACHINE_ID });
    expect(route.ok).toBe(false);
  });

  it('validates every device item and the 1-100 bound', () => {
    const bad = parseReleaseRequest({
      comment: 'x',
      devices: [
        { machineId: 'nope' },
        { deviceName: 'a b' },
        {},
        { machineId: MACHINE_ID, deviceName: 'x' },
        'str',
      ],
    });
    expect(!bad.ok && bad.problems.map((p) => p.slice(0, 11))).toEqual([
      'devices[0].',
      'devices[1].',
      'devices[2] ',
      'devices[3] ',
      'devices[4] ',
    ]);
    const many = Array.from({ length: 101 }, (_, i) => ({ machineId: i.toString(16).padStart(40, '0') }));
    expect(parseReleaseRequest({ comment: 'x', devices: many }).ok).toBe(false);
    expect(parseReleaseRequest({ comment: 'x', devices: many.slice(0, 100) }).ok).toBe(true);
    expect(parseReleaseRequest({ comment: 'x', devices: [] }).ok).toBe(false);
    const dup = parseReleaseRequest({
      comment: 'x',
      devices: [{ deviceName: 'WS-1' }, { DeviceName: 'ws-1' }],
    });
    expect(!dup.ok && dup.problems).toEqual(['devices[1] repeats devices[0]: list each device once']);
  });

  it('rejects a non-boolean force', () => {
    expect(parseReleaseRequest({ machineId: MACHINE_ID, comment: 'x', force: 'true' }).ok).toBe(false);
  });
});

describe('bulk on Service Bus', () => {
  const safety = { checkIsolationState: false, releasePolicy: null };

  it('one device failing transiently hands the whole message back: no outcome is reported', async () => {
    const resets = Array.from({ length: 30 }, () => new TransportError('network', 'ECONNRESET', 'reset'));
    const defender = new FakeDefender();
    const { deps, telemetry } = fakeDeps(defender);
    // The second device's calls all fail; the others succeed.
    const original = defender.unisolate.bind(defender);
    defender.unisolate = (id, comment, o) =>
      id === ids[1] ? Promise.reject(resets.pop()!) : original(id, comment, o);
    await expect(
      processRequest(
        { body: bulkBody, trigger: 'serviceBus', canRedeliver: true, deliveryCount: 1 },
        { ...deps, safety },
      ),
    ).rejects.toBeInstanceOf(RedeliveryRequested);
    expect(telemetry.outcomes).toHaveLength(0);
    expect(telemetry.redeliveries).toHaveLength(1);
  });

  it('a redelivery checks the history even with the check off, so released devices are not released again', async () => {
    const pending = { ...FakeDefender.action(ids[0]!, 'Pending', '2026-11-28T10:00:00Z'), id: 'earlier' };
    const defender = new FakeDefender();
    defender.historyScript = [
      { status: 200, body: { value: [FakeDefender.isolated(ids[0]!), pending] } },
      { status: 200, body: { value: [FakeDefender.isolated(ids[1]!)] } },
      { status: 200, body: { value: [FakeDefender.isolated(ids[2]!)] } },
    ];
    const { deps } = fakeDeps(defender);
    const result = await processRequest(
      { body: bulkBody, trigger: 'serviceBus', canRedeliver: true, deliveryCount: 2 },
      { ...deps, safety },
    );
    if (result.kind !== 'bulk') throw new Error('bulk expected');
    expect(result.outcomes.map((o) => [o.index, o.status, o.machineAction?.id ?? null])).toEqual([
      [0, 'AlreadyInProgress', 'earlier'],
      [1, 'Accepted', expect.any(String)],
      [2, 'Accepted', expect.any(String)],
    ]);
    expect(defender.unisolateCalls.map((c) => c.machineId).sort()).toEqual([ids[1], ids[2]]);
  });

  it('on the last delivery reports every device, the failed one as Failed, others unaffected', async () => {
    const defender = new FakeDefender();
    const original = defender.unisolate.bind(defender);
    defender.unisolate = (id, comment, o) =>
      id === ids[2]
        ? Promise.reject(new TransportError('network', 'ECONNRESET', 'reset'))
        : original(id, comment, o);
    const { deps, telemetry } = fakeDeps(defender);
    const result = await processRequest(
      { body: bulkBody, trigger: 'serviceBus', canRedeliver: false, deliveryCount: 10 },
      { ...deps, safety },
    );
    if (result.kind !== 'bulk') throw new Error('bulk expected');
    expect(result.outcomes.map((o) => o.status)).toEqual(['Accepted', 'Accepted', 'Failed']);
    expect(result.outcomes.every((o) => o.correlationId === 'INC9')).toBe(true);
    expect(telemetry.outcomes).toHaveLength(3);
    expect(result.retryAfterSeconds).toBeGreaterThan(0);
  });
});
