/**
 * The circuit breaker around the state store, and malformed stored data: a row this version cannot read is a
 * problem of that row, not an unavailable store, so it never turns durable state off.
 */
import { StoreUnavailableError, withCircuitBreaker } from '../../src/adapters/circuitBreaker';
import { EMPTY_LEDGER } from '../../src/core/budget';
import { MalformedDataError, type ReleaseStore } from '../../src/core/ports';
import { SharedBudget } from '../../src/core/sharedBudget';
import { FakeClock, memoryStore, recordingLogger } from '../support/fakes';

const LIMITS = { perApi: { perMinute: 100, perHour: 1500 }, tracker: { perMinute: 2, perHour: 60 } };
const REF = { correlationId: 'INC-1', requestId: 'a'.repeat(32), index: null };

/** `store` with `readRelease` failing as given. */
function failingReads(store: ReleaseStore, error: () => Error): ReleaseStore {
  return Object.assign(Object.create(store) as ReleaseStore, {
    readRelease: () => Promise.reject(error()),
  });
}

describe('withCircuitBreaker', () => {
  it('lets malformed data through without opening', async () => {
    const clock = new FakeClock();
    const log = recordingLogger();
    const { store } = memoryStore();
    const guarded = withCircuitBreaker(
      failingReads(store, () => new MalformedDataError('Stored release record is malformed')),
      { now: clock.now, log },
    );
    await expect(guarded.readRelease(REF)).rejects.toBeInstanceOf(MalformedDataError);
    // The store answered: the next operation is asked, not refused.
    await expect(guarded.readKey('k')).resolves.toBeUndefined();
    await expect(guarded.readRelease(REF)).rejects.toBeInstanceOf(MalformedDataError);
    expect(log.lines).toEqual([]);
  });

  it('opens on a store failure', async () => {
    const clock = new FakeClock();
    const { store } = memoryStore();
    const guarded = withCircuitBreaker(
      failingReads(store, () => new Error('connect ECONNREFUSED')),
      { now: clock.now, log: recordingLogger() },
    );
    await expect(guarded.readRelease(REF)).rejects.toThrow('ECONNREFUSED');
    await expect(guarded.readKey('k')).rejects.toBeInstanceOf(StoreUnavailableError);
  });
});

describe('a malformed budget ledger', () => {
  const bodies: [string, Record<string, unknown>][] = [
    ['JSON of another shape', { body: JSON.stringify({ grants: 'many', pausedUntil: 0 }) }],
    ['text that is not JSON', { body: '{"grants": [[1, ' }],
    ['no body at all', {}],
  ];

  it.each(bodies)('with %s reads as empty with its ETag, and the next write replaces it', async (_, row) => {
    const { store, table } = memoryStore();
    await table.client.upsertEntity({ partitionKey: 'budget', rowKey: 'unisolate', ...row });
    const read = await store.readLedger('unisolate');
    expect(read).toEqual({ value: EMPTY_LEDGER, etag: expect.any(String) });
    const next = { grants: [[1_000, 3]] as [number, number][], pausedUntil: 0 };
    expect(await store.writeLedger('unisolate', next, read!.etag)).toBeDefined();
    expect((await store.readLedger('unisolate'))?.value).toEqual(next);
  });

  it('leaves durable state on and the budget shared', async () => {
    const { store: table, table: memory } = memoryStore();
    await memory.client.upsertEntity({ partitionKey: 'budget', rowKey: 'unisolate', body: '"damaged"' });
    const clock = new FakeClock();
    const log = recordingLogger();
    const store = withCircuitBreaker(table, { now: clock.now, log });
    const budget = new SharedBudget({ store, limits: LIMITS, now: clock.now, log });
    expect((await budget.acquire('unisolate', 'release')).granted).toBe(true);
    // The call was leased from the shared ledger (which replaced the damaged row), not from a local fallback.
    expect((await table.readLedger('unisolate'))?.value.grants).toEqual([[clock.time + 1_500, 1]]);
    await expect(store.readKey('k')).resolves.toBeUndefined();
    expect(log.lines).toEqual([]);
  });
});

describe('a malformed release record or idempotency key', () => {
  const damaged: [string, Record<string, unknown>][] = [
    ['JSON of another shape', { body: JSON.stringify({ ask: 'nothing' }) }],
    ['text that is not JSON', { body: '{"ask": ' }],
    ['no body at all', {}],
  ];

  it.each(damaged)(
    "with %s is that row's problem: MalformedDataError, the breaker stays closed",
    async (_, row) => {
      const { store: table, table: memory } = memoryStore();
      const ref = { correlationId: 'INC-1', requestId: 'b'.repeat(32), index: null };
      // The store's row key of a single-device release: r|<correlation id>|<request id>|single.
      const rowKey = `r|${ref.correlationId}|${ref.requestId}|single`;
      await memory.client.upsertEntity({ partitionKey: 'release', rowKey, ...row });
      await memory.client.upsertEntity({ partitionKey: 'key|k', rowKey: '', ...row });
      const clock = new FakeClock();
      const log = recordingLogger();
      const store = withCircuitBreaker(table, { now: clock.now, log });
      await expect(store.readRelease(ref)).rejects.toBeInstanceOf(MalformedDataError);
      await expect(store.readKey('k')).rejects.toBeInstanceOf(MalformedDataError);
      // The store answered each time: it is still asked, not refused.
      await expect(store.readKey('other')).resolves.toBeUndefined();
      expect(log.lines).toEqual([]);
    },
  );
});
