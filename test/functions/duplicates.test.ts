/**
 * A duplicate that arrives while the first request with the same idempotency key is still running gets
 * `IdempotencyKeyInUse`. Its message on the response queue is not the request's outcome (that one comes from
 * the first request, with the same correlation id), so it is marked `"duplicate": true`.
 */
import { setDependencies, type AppDependencies } from '../../src/composition';
import { parseSettings } from '../../src/config';
import type { Outcome } from '../../src/core/outcome';
import { FakeDefender, fakeDeps, MACHINE_ID, memoryStore, stateDeps } from '../support/fakes';
import { invokeHttp, invokeServiceBus, loadApp } from '../../dev/host';

/** A Defender whose release waits until `open()` is called: the first request stays in flight. */
function slowDefender() {
  const defender = new FakeDefender();
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const original = defender.unisolate.bind(defender);
  defender.unisolate = async (...args) => {
    await gate;
    return original(...args);
  };
  return { defender, open };
}

function install(defender: FakeDefender) {
  const { deps, telemetry } = fakeDeps(defender);
  const app: AppDependencies = {
    release: deps,
    config: parseSettings({ KEY_VAULT_URL: 'https://kv.example/' }).config,
    maxDeliveryCount: 3,
    telemetry,
    state: stateDeps(memoryStore().store, { duplicateWaitMs: 1000 }),
  };
  setDependencies(app);
}

beforeAll(() => loadApp());
afterEach(() => setDependencies());

const tick = () => new Promise((resolve) => setImmediate(resolve));
const text = JSON.stringify({ machineId: MACHINE_ID, comment: 'clean', correlationId: 'INC-DUP' });

describe('a duplicate while the first request is running', () => {
  it('HTTP: the duplicate answer and its queue message are marked duplicate; the real outcome is not', async () => {
    const { defender, open } = slowDefender();
    install(defender);
    const headers = { 'content-type': 'application/json', 'idempotency-key': 'k-dup' };
    const first = invokeHttp('unisolate', { headers, body: text });
    await tick();
    const second = await invokeHttp('unisolate', { headers, body: text });
    open();
    const done = await first;

    expect(second.status).toBe(409);
    expect(second.body).toMatchObject({
      status: 'Failed',
      correlationId: 'INC-DUP',
      error: { code: 'IdempotencyKeyInUse' },
      duplicate: true,
    });
    expect(second.messages).toEqual([second.body]);
    expect(done.body).toMatchObject({ status: 'Accepted', correlationId: 'INC-DUP' });
    expect(done.messages).toEqual([expect.not.objectContaining({ duplicate: expect.anything() })]);
    expect(defender.unisolateCalls).toHaveLength(1);
  });

  it('Service Bus: a copy of the message sent while the first still runs gets a message marked duplicate', async () => {
    const { defender, open } = slowDefender();
    install(defender);
    const first = invokeServiceBus('unisolateServiceBus', text, { messageId: 'm-dup', deliveryCount: 1 });
    await tick();
    const copy = await invokeServiceBus('unisolateServiceBus', text, {
      messageId: 'm-dup',
      deliveryCount: 1,
    });
    open();
    const done = await first;
    expect(copy.error).toBeUndefined();
    expect(copy.messages).toEqual([
      expect.objectContaining({
        status: 'Failed',
        error: expect.objectContaining({ code: 'IdempotencyKeyInUse' }),
        duplicate: true,
      }),
    ]);
    expect((done.messages as Outcome[]).map((o) => [o.status, o.duplicate])).toEqual([
      ['Accepted', undefined],
    ]);
    expect(defender.unisolateCalls).toHaveLength(1);
  });

  it('Service Bus: a redelivery while the first delivery still runs sends nothing; the first answers once', async () => {
    const { defender, open } = slowDefender();
    install(defender);
    const first = invokeServiceBus('unisolateServiceBus', text, { messageId: 'm-redo', deliveryCount: 1 });
    await tick();
    const redelivery = await invokeServiceBus('unisolateServiceBus', text, {
      messageId: 'm-redo',
      deliveryCount: 2,
    });
    open();
    const done = await first;
    expect(redelivery.error).toBeUndefined();
    expect(redelivery.messages).toEqual([]);
    expect((done.messages as Outcome[]).map((o) => o.status)).toEqual(['Accepted']);
    expect(defender.unisolateCalls).toHaveLength(1);
  });
});
