/**
 * Service Bus ids as the sender set them. The host passes `MessageId` / `CorrelationId` as RPC strings, and
 * `@azure/functions` JSON-parses string trigger metadata, so `"12345"` reaches a handler as the number 12345
 * and a long digit string as a rounded number. These tests send the host's RPC request through the app's
 * programming model (the library's real conversion), as the worker does (`dev/host`).
 */
import type { ReleaseStore } from '../../src/core/ports';
import { setDependencies, type AppDependencies } from '../../src/composition';
import { parseSettings } from '../../src/config';
import type { Outcome } from '../../src/core/outcome';
import { FakeDefender, fakeDeps, MACHINE_ID, memoryStore, stateDeps } from '../support/fakes';
import { invokeServiceBus, loadApp } from '../../dev/host';

function install(defender = new FakeDefender(), store?: ReleaseStore) {
  const { deps, telemetry } = fakeDeps(defender);
  const app: AppDependencies = {
    release: deps,
    config: parseSettings({ KEY_VAULT_URL: 'https://kv.example/' }).config,
    maxDeliveryCount: 10,
    telemetry,
    ...(store ? { state: stateDeps(store) } : {}),
  };
  setDependencies(app);
  return { defender };
}

beforeAll(() => loadApp());
afterEach(() => setDependencies());

const body = JSON.stringify({ machineId: MACHINE_ID, comment: 'clean' });
/** Trigger metadata; the host sends it with PascalCase names, strings as RPC `string`, numbers as RPC `int`. */
const metadata = (messageId: string, correlationId?: string, deliveryCount = 1) => ({
  messageId,
  correlationId,
  deliveryCount,
});
const only = (messages: unknown[]): Outcome => {
  expect(messages).toHaveLength(1);
  return messages[0] as Outcome;
};

describe('Service Bus ids through the worker', () => {
  it.each([
    ['a number-like correlation id', '987654321', '12345', '12345'],
    ['a number-like message id (no correlation id)', '987654321', undefined, '987654321'],
    [
      'digits beyond double precision',
      '12345678901234567890123',
      '900719925474099312345',
      '900719925474099312345',
    ],
    ['a message id beyond double precision', '12345678901234567890123', undefined, '12345678901234567890123'],
    ['JSON-looking text', '"quoted"', 'true', 'true'],
    ['an ordinary GUID', '6f7b1c1e-0d1f-4c2a-9b8e-1f0e2d3c4b5a', 'INC0012345', 'INC0012345'],
  ])('keeps %s exactly as the sender set it', async (_, messageId, correlationId, expected) => {
    install();
    const result = await invokeServiceBus('unisolateServiceBus', body, metadata(messageId, correlationId));
    expect(result.error).toBeUndefined();
    expect(only(result.messages)).toMatchObject({ status: 'Accepted', correlationId: expected });
  });

  it('recognises a redelivered message with a numeric id as a repeat: one release, one correlation id', async () => {
    const { defender } = install(new FakeDefender(), memoryStore().store);
    const first = await invokeServiceBus('unisolateServiceBus', body, metadata('12345678901234567890123'));
    const again = await invokeServiceBus(
      'unisolateServiceBus',
      body,
      metadata('12345678901234567890123', undefined, 2),
    );
    expect(only(first.messages)).toMatchObject({
      status: 'Accepted',
      correlationId: '12345678901234567890123',
    });
    expect(only(again.messages)).toMatchObject({
      status: 'Accepted',
      correlationId: '12345678901234567890123',
      replayed: true,
    });
    expect(defender.unisolateCalls).toHaveLength(1);
    // Two different long ids that round to the same double stay two messages.
    await invokeServiceBus('unisolateServiceBus', body, metadata('12345678901234567890124'));
    expect(defender.unisolateCalls).toHaveLength(2);
  });

  it('without a raw string (ids sent as numbers), takes a converted number only when it is exact (a safe integer)', async () => {
    install();
    // Numbers go as RPC ints: the raw request holds no string to recover, only the converted value.
    const exact = await invokeServiceBus('unisolateServiceBus', body, {
      messageId: 987654321,
      correlationId: 12345,
    });
    expect(only(exact.messages).correlationId).toBe('12345');
    const rounded = await invokeServiceBus('unisolateServiceBus', body, {
      // What JSON.parse makes of "12345678901234567890123" and "900719925474099312345".
      messageId: JSON.parse('12345678901234567890123') as number,
      correlationId: JSON.parse('900719925474099312345') as number,
    });
    // No id rather than a wrong one: a fresh UUID, never "1.2345678901234568e+22".
    expect(only(rounded.messages).correlationId).toMatch(/^[0-9a-f-]{36}$/);
  });
});
