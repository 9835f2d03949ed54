/**
 * The release store's contract, run against Azurite (the real Table service) and against the in-memory table
 * the core tests use, so the fake is held to the real thing.
 */
import { TableClient } from '@azure/data-tables';
import { randomUUID } from 'node:crypto';
import { TableReleaseStore, type TableLike } from '../../src/adapters/releaseStore';
import type { ReleaseStore } from '../../src/core/ports';
import type { ReleaseRecord, ReleaseRef } from '../../src/core/records';
import { startAzuriteTables, type AzuriteTables } from '../../dev/azurite';
import { MemoryTable } from '../support/memoryTable';

let azurite: AzuriteTables;
beforeAll(async () => {
  azurite = await startAzuriteTables();
});
afterAll(async () => azurite?.stop());

const NOW = Date.parse('2026-12-01T10:00:00Z');

function record(ref: ReleaseRef, patch: Partial<ReleaseRecord> = {}): ReleaseRecord {
  return {
    ref,
    ask: {
      target: { machineId: 'a'.repeat(40) },
      comment: 'clean',
      requestedBy: null,
      force: false,
      trigger: 'serviceBus',
      receivedAt: NOW,
    },
    machineId: 'a'.repeat(40),
    state: 'running',
    dueAt: NOW + 120_000,
    runs: 1,
    failures: 0,
    queuedAt: null,
    queuedSent: false,
    answer: null,
    completion: null,
    machineActionId: null,
    trackUntil: NOW + 24 * 3_600_000,
    ...patch,
  };
}

function bulk(correlationId: string, devices: number): ReleaseRecord[] {
  const requestId = randomUUID().replace(/-/g, '');
  return Array.from({ length: devices }, (_, index) => record({ correlationId, requestId, index }));
}

const backends: [string, () => TableLike][] = [
  [
    'Azurite',
    () =>
      TableClient.fromConnectionString(
        azurite.connectionString,
        `t${randomUUID().replace(/-/g, '').slice(0, 16)}`,
        { allowInsecureConnection: true },
      ),
  ],
  ['memory table', () => new MemoryTable().client],
];

describe.each(backends)('release store on %s', (_name, newTable) => {
  let table: TableLike;
  let store: ReleaseStore;
  beforeEach(() => {
    table = newTable();
    store = new TableReleaseStore(table);
  });

  it('records a 100-device request once, each running release due when its lease ends', async () => {
    const records = bulk('INC-BULK', 100);
    const created = await store.createReleases(records, { expiresAt: NOW + 1000 });
    expect(created.map((v) => v?.created)).toEqual(records.map(() => true));
    expect(created.every((v) => typeof v?.etag === 'string' && v.etag.length > 0)).toBe(true);
    // A second call (a redelivery) finds every record as stored.
    const again = await store.createReleases(records, { expiresAt: NOW + 1000 });
    expect(again.map((v) => [v?.created, v?.etag])).toEqual(created.map((v) => [false, v!.etag]));
    const read = await store.readReleases('INC-BULK');
    expect(read.map((v) => v.value.ref.index)).toEqual(records.map((r) => r.ref.index));
    expect(await store.listDue(NOW + 119_999, 200)).toEqual([]);
    expect(await store.listDue(NOW + 120_000, 200)).toHaveLength(100);
  });

  it('completes a request an earlier invocation recorded in part (it stopped between transactions)', async () => {
    const records = bulk('INC-PART', 60);
    await store.createReleases(records.slice(0, 10), { expiresAt: NOW });
    const recorded = await store.createReleases(records, { expiresAt: NOW });
    expect(recorded.map((v) => v?.created)).toEqual(records.map((_, i) => i >= 10));
    expect(await store.readReleases('INC-PART')).toHaveLength(60);
  });

  it('moves a running release whose due entry is missing (recorded before running releases had one)', async () => {
    const [version] = await store.createReleases(bulk('INC-LAYOUT', 1), { expiresAt: NOW });
    const key = `${version!.value.ref.correlationId}|${version!.value.ref.requestId}|000`;
    await table.deleteEntity('release', `q|${String(NOW + 120_000).padStart(15, '0')}|${key}`);
    const done = { ...version!.value, state: 'done' as const };
    expect(await store.updateRelease(done, version!)).toBeDefined();
    expect((await store.readRelease(done.ref))?.value.state).toBe('done');
    // Still one writer: the old version loses.
    expect(await store.updateRelease({ ...done, state: 'queued' }, version!)).toBeUndefined();
  });

  it('lists by correlation id exactly: INC4 is not INC42, and odd characters are fine', async () => {
    for (const id of ['INC4', 'INC42', 'a/b?c#d\\e', "o'brien"]) {
      await store.createReleases([record({ correlationId: id, requestId: randomUUID(), index: null })], {
        expiresAt: NOW,
      });
    }
    expect((await store.readReleases('INC4')).map((v) => v.value.ref.correlationId)).toEqual(['INC4']);
    expect(await store.readReleases('a/b?c#d\\e')).toHaveLength(1);
    expect(await store.readReleases("o'brien")).toHaveLength(1);
  });

  it('moves a release between the due and tracked indexes with its state, atomically, one writer wins', async () => {
    const [first] = await store.createReleases(bulk('INC-MOVE', 1), { expiresAt: NOW });
    const queued = { ...first!.value, state: 'queued' as const, dueAt: NOW + 60_000, queuedAt: NOW };
    const etag = await store.updateRelease(queued, first!);
    expect(etag).toBeDefined();
    // A second writer holding the old ETag loses, and changes nothing.
    expect(await store.updateRelease({ ...first!.value, state: 'done' }, first!)).toBeUndefined();
    expect(await store.listDue(NOW + 59_999, 10)).toEqual([]);
    const due = await store.listDue(NOW + 60_000, 10);
    expect(due.map((v) => v.value.state)).toEqual(['queued']);

    const accepted = { ...queued, state: 'accepted' as const, machineActionId: 'act-1' };
    const etag2 = await store.updateRelease(accepted, { value: queued, etag: etag! });
    expect(etag2).toBeDefined();
    expect(await store.listDue(NOW + 3_600_000, 10)).toEqual([]);
    expect(await store.listTracked(10)).toEqual([
      expect.objectContaining({ machineId: 'a'.repeat(40), machineActionId: 'act-1', ref: queued.ref }),
    ]);

    const completed = { ...accepted, state: 'completed' as const };
    expect(await store.updateRelease(completed, { value: accepted, etag: etag2! })).toBeDefined();
    expect(await store.listTracked(10)).toEqual([]);
    expect((await store.readRelease(queued.ref))?.value.state).toBe('completed');
  });

  it('lists due releases earliest first, up to the limit', async () => {
    const records = bulk('INC-DUE', 3);
    const created = await store.createReleases(records, { expiresAt: NOW });
    const dueTimes = [NOW + 3000, NOW + 1000, NOW + 2000];
    for (const [i, version] of created.entries()) {
      await store.updateRelease({ ...version!.value, state: 'queued', dueAt: dueTimes[i]! }, version!);
    }
    const due = await store.listDue(NOW + 5000, 2);
    expect(due.map((v) => v.value.ref.index)).toEqual([1, 2]);
  });

  it('gives a device to the first index that claims it', async () => {
    const ref = { correlationId: 'INC-DUP', requestId: 'r1', index: 3 };
    expect(await store.claimDevice(ref, 'b'.repeat(40))).toBe(3);
    expect(await store.claimDevice({ ...ref, index: 7 }, 'b'.repeat(40))).toBe(3);
    expect(await store.claimDevice({ ...ref, index: 7 }, 'c'.repeat(40))).toBe(7);
  });

  it('keeps records larger than one property (long texts, many candidates)', async () => {
    const big = record(
      { correlationId: 'INC-BIG', requestId: 'r', index: null },
      { answer: { warnings: Array.from({ length: 400 }, () => 'x'.repeat(300)) } as never },
    );
    await store.createReleases([big], { expiresAt: NOW });
    expect((await store.readRelease(big.ref))?.value.answer).toEqual(big.answer);
  });

  it('deletes expired requests: records, index entries, device claims and the idempotency claim', async () => {
    const keyHash = 'f'.repeat(64);
    await store.insertKey({
      keyHash,
      fingerprint: 'x',
      state: 'done',
      claimedAt: NOW,
      leaseUntil: NOW,
      correlationId: 'INC-OLD',
      requestId: 'old',
    });
    const old = [record({ correlationId: 'INC-OLD', requestId: 'old', index: 0 })];
    const [version] = await store.createReleases(old, { expiresAt: NOW - 1, keyHash });
    await store.updateRelease({ ...version!.value, state: 'accepted' }, version!);
    await store.claimDevice(old[0]!.ref, 'a'.repeat(40));
    const kept = [record({ correlationId: 'INC-NEW', requestId: 'new', index: null })];
    await store.createReleases(kept, { expiresAt: NOW + 1000 });

    expect(await store.deleteExpired(NOW, 10)).toBe(1);
    expect(await store.readReleases('INC-OLD')).toEqual([]);
    expect(await store.listTracked(10)).toEqual([]);
    expect(await store.readKey(keyHash)).toBeUndefined();
    expect(await store.claimDevice({ ...old[0]!.ref, index: 5 }, 'a'.repeat(40))).toBe(5);
    expect(await store.readReleases('INC-NEW')).toHaveLength(1);
    expect(await store.deleteExpired(NOW, 10)).toBe(0);
  });

  it('a damaged release row is skipped by the hand-back and deleted when its request expires', async () => {
    const [good, damaged] = [bulk('INC-GOOD', 1), bulk('INC-DAMAGED', 1)];
    await store.createReleases(good, { expiresAt: NOW - 1 });
    await store.createReleases(damaged, { expiresAt: NOW - 1 });
    // The record's row: r|<correlation id>|<request id>|<index, 3 digits>.
    const rowKey = `r|INC-DAMAGED|${damaged[0]!.ref.requestId}|000`;
    await table.upsertEntity({ partitionKey: 'release', rowKey, body: '{"ask": ' }, 'Replace');
    // Both are due at their lease end: the good one is handed back, the damaged one does not stop it.
    expect((await store.listDue(NOW + 120_000, 10)).map((r) => r.value.ref.correlationId)).toEqual([
      'INC-GOOD',
    ]);
    expect(await store.deleteExpired(NOW, 10)).toBe(2);
    expect(await store.readReleases('INC-DAMAGED')).toEqual([]);
    expect(await store.readReleases('INC-GOOD')).toEqual([]);
  });

  it('keeps the budget ledgers with ETag semantics', async () => {
    expect(await store.readLedger('unisolate')).toBeUndefined();
    const first = await store.writeLedger('unisolate', { grants: [[NOW, 5]], pausedUntil: 0 }, undefined);
    expect(first).toBeDefined();
    expect(await store.writeLedger('unisolate', { grants: [], pausedUntil: 0 }, undefined)).toBeUndefined();
    const second = await store.writeLedger('unisolate', { grants: [[NOW, 6]], pausedUntil: 0 }, first);
    expect(second).toBeDefined();
    expect(await store.writeLedger('unisolate', { grants: [], pausedUntil: 0 }, first)).toBeUndefined();
    expect(await store.readLedger('unisolate')).toEqual({
      value: { grants: [[NOW, 6]], pausedUntil: 0 },
      etag: second,
    });
  });

  it('remembers when the tracker last polled', async () => {
    expect(await store.readTrackerPoll()).toBe(0);
    await store.writeTrackerPoll(NOW);
    expect(await store.readTrackerPoll()).toBe(NOW);
  });
});

describe('release store I/O', () => {
  it('reads the records of due releases in parallel, listed earliest first', async () => {
    const { client } = new MemoryTable();
    const get = client.getEntity.bind(client);
    let reading = 0;
    let most = 0;
    client.getEntity = async (partitionKey: string, rowKey: string) => {
      reading += 1;
      most = Math.max(most, reading);
      await new Promise((resolve) => setImmediate(resolve));
      try {
        return await get(partitionKey, rowKey);
      } finally {
        reading -= 1;
      }
    };
    const store = new TableReleaseStore(client);
    const records = bulk('INC-PAR', 20);
    await store.createReleases(records, { expiresAt: NOW });
    const due = await store.listDue(NOW + 120_000, 50);
    expect(due.map((v) => v.value.ref.index)).toEqual(records.map((r) => r.ref.index));
    expect(most).toBeGreaterThan(1);
  });
});
