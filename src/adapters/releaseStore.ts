/**
 * Durable state in one Azure Table (`@azure/data-tables`): identity-based in Azure (`STATE_TABLE_URL` + the
 * app's managed identity, role Storage Table Data Contributor), a connection string for Azurite locally and
 * in tests.
 *
 * Layout (every look-up is a point read or a range of one partition):
 * | PartitionKey | RowKey | what |
 * |---|---|---|
 * | `key\|<sha256>` | `` | the claim of one idempotency key (one partition per key: claims never contend) |
 * | `release` | `r\|<corr>\|<request>\|<index>` | one device release (`<corr>`: the encoded correlation id) |
 * | `release` | `q\|<dueAt>\|<record>` | a parked release by when it is due, a running one by when its lease ends (the resume timer's range) |
 * | `release` | `o\|<record>` | an accepted release being tracked (what the tracker lists) |
 * | `release` | `d\|<corr>\|<request>\|<machineId>` | which index of a bulk request owns a device it reached by name |
 * | `release` | `x\|<expiresAt>\|<corr>\|<request>` | when a request's records (and claim) are deleted |
 * | `release` | `t\|tracker` | when the tracker last polled |
 * | `budget` | `<pool>` | the Defender API budget ledger of one pool (see core/budget.ts) |
 *
 * Releases share one partition so that a record and its index entries change together in one entity group
 * transaction (https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions):
 * every state change is "update the record If-Match its ETag + move its entries", atomic, so exactly one
 * invocation wins each change, and no record is ever without its due entry while it is unfinished (a release
 * whose instance stopped is found when its lease ends). A large request is created in several transactions,
 * each holding whole records with their entries. One partition serves ~2000 entities/s, far above what MDE's 100 calls/minute
 * per API can produce. Time-ordered row keys make the due and expiry ranges cheap to list.
 */
import {
  TableClient,
  type TableEntityResult,
  type TableTransactionResponse,
  type TransactionAction,
} from '@azure/data-tables';
import type { TokenCredential } from '@azure/identity';
import { EMPTY_LEDGER, isLedger, type Ledger } from '../core/budget';
import {
  MalformedDataError,
  type IdempotencyRecord,
  type RecordedRelease,
  type ReleaseStore,
  type TrackedRelease,
  type Versioned,
} from '../core/ports';
import { isReleaseRecord, type ReleaseRecord, type ReleaseRef } from '../core/records';
import { isLoopbackUrl } from './loopback';

const RELEASES = 'release';
const BUDGET = 'budget';
const TRACKER_ROW = 't|tracker';

/** Default table name when only a connection string is given. */
export const DEFAULT_STATE_TABLE = 'releases';

/** Where the table is. */
export type StateTableTarget =
  { tableUrl: string; credential: () => TokenCredential } | { connectionString: string; tableName?: string };

/** Options of {@link createReleaseStore}. */
export interface ReleaseStoreOptions {
  /** Upper bound of one storage operation, so an unreachable account cannot stall a release (default 5 s). */
  operationTimeoutMs?: number;
}

/** The part of `TableClient` the store uses (tests may pass an in-memory table with the same semantics). */
export type TableLike = Pick<
  TableClient,
  | 'createTable'
  | 'getEntity'
  | 'createEntity'
  | 'updateEntity'
  | 'upsertEntity'
  | 'deleteEntity'
  | 'submitTransaction'
  | 'listEntities'
>;

type Entity = { partitionKey: string; rowKey: string } & Record<string, unknown>;

/** Most operations in one entity group transaction. */
const BATCH_LIMIT = 100;
/** Point reads in flight at once when one listing needs many (well within a partition's 2000 entities/s). */
const READ_CONCURRENCY = 16;
/** Table Storage caps a string property at 64 KiB (32K UTF-16 characters); JSON is split into parts below it. */
const PART_CHARS = 30_000;

function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

/** Row keys may not hold '/', '\\', '#', '?' or control characters: correlation ids are encoded. */
function encode(value: string): string {
  return encodeURIComponent(value);
}

/** Fixed-width time, so row keys sort by time. */
function timeKey(ms: number): string {
  return String(Math.max(0, Math.floor(ms))).padStart(15, '0');
}

function requestKey(ref: Pick<ReleaseRef, 'correlationId' | 'requestId'>): string {
  return `${encode(ref.correlationId)}|${ref.requestId}`;
}

function recordKey(ref: ReleaseRef): string {
  return `${requestKey(ref)}|${ref.index === null ? 'single' : String(ref.index).padStart(3, '0')}`;
}

/** JSON in one or more string properties (`body`, `body1`, ...), each under the property limit. */
function jsonProperties(value: unknown): Record<string, string> {
  const text = JSON.stringify(value);
  const parts: Record<string, string> = { body: text.slice(0, PART_CHARS) };
  for (let i = 1; i * PART_CHARS < text.length; i += 1) {
    parts[`body${i}`] = text.slice(i * PART_CHARS, (i + 1) * PART_CHARS);
  }
  return parts;
}

/**
 * The JSON value stored in `entity`'s body parts. A row without a body or with broken JSON is that row's
 * problem (damaged, or written by another version), not an unavailable store: MalformedDataError, which the
 * circuit breaker lets through without opening.
 */
function readJson(entity: Record<string, unknown>): unknown {
  let text = entity.body;
  if (typeof text !== 'string') throw new MalformedDataError('Stored entity has no JSON body');
  for (let i = 1; typeof entity[`body${i}`] === 'string'; i += 1) text += entity[`body${i}`] as string;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new MalformedDataError('Stored entity holds broken JSON');
  }
}

function recordOf(entity: Record<string, unknown>): ReleaseRecord {
  const value = readJson(entity);
  if (!isReleaseRecord(value)) throw new MalformedDataError('Stored release record is malformed');
  return value;
}

/** The record in `entity`, or undefined when it is damaged (MalformedDataError); other errors pass. */
function readableRecord(entity: Record<string, unknown>): ReleaseRecord | undefined {
  try {
    return recordOf(entity);
  } catch (error) {
    if (error instanceof MalformedDataError) return undefined;
    throw error;
  }
}

/** Whether `value` has the shape of a stored idempotency key. */
function isIdempotencyRecord(value: unknown): value is IdempotencyRecord {
  const r = value as Partial<IdempotencyRecord> | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.keyHash === 'string' &&
    typeof r.fingerprint === 'string' &&
    (r.state === 'pending' || r.state === 'retry' || r.state === 'done') &&
    typeof r.claimedAt === 'number' &&
    typeof r.leaseUntil === 'number' &&
    typeof r.correlationId === 'string' &&
    typeof r.requestId === 'string'
  );
}

/** Splits `https://<acct>.table.core.windows.net/<table>` (or Azurite's `http://127.0.0.1:p/<acct>/<table>`). */
export function splitTableUrl(tableUrl: string): { endpoint: string; tableName: string } {
  const url = new URL(tableUrl);
  const parts = url.pathname.split('/').filter(Boolean);
  const tableName = parts.pop();
  if (!tableName) throw new Error('STATE_TABLE_URL must end with the table name');
  return { endpoint: `${url.origin}/${parts.join('/')}`.replace(/\/$/, ''), tableName };
}

function clientFor(target: StateTableTarget): TableClient {
  // The SDK retries on its own; keep that short so a release is never held long by an unreachable store.
  const retryOptions = { maxRetries: 1, retryDelayInMs: 200, maxRetryDelayInMs: 1000 };
  if ('tableUrl' in target) {
    const { endpoint, tableName } = splitTableUrl(target.tableUrl);
    return new TableClient(endpoint, tableName, target.credential(), {
      allowInsecureConnection: isLoopbackUrl(endpoint),
      retryOptions,
    });
  }
  const endpoint = /TableEndpoint=([^;]+)/i.exec(target.connectionString)?.[1] ?? '';
  const loopback = /UseDevelopmentStorage=true/i.test(target.connectionString) || isLoopbackUrl(endpoint);
  return TableClient.fromConnectionString(target.connectionString, target.tableName ?? DEFAULT_STATE_TABLE, {
    // Plain http only for a local emulator (Azurite); Azure is always https.
    allowInsecureConnection: loopback,
    retryOptions,
  });
}

/** {@link ReleaseStore} over Azure Table Storage. */
export class TableReleaseStore implements ReleaseStore {
  private ready: Promise<void> | undefined;

  constructor(
    private readonly client: TableLike,
    private readonly timeoutMs = 5_000,
  ) {}

  private options() {
    return { abortSignal: AbortSignal.timeout(this.timeoutMs) };
  }

  /** Creates the table once per instance (infra creates it in Azure; Azurite starts empty). */
  private async ensureTable(): Promise<void> {
    this.ready ??= this.client.createTable(this.options()).catch((error: unknown) => {
      this.ready = undefined;
      // 403: the identity may not create tables; the table then has to exist (infra creates it).
      if (statusOf(error) !== 403) throw error;
    });
    await this.ready;
  }

  private async get(partitionKey: string, rowKey: string): Promise<TableEntityResult<Entity> | undefined> {
    await this.ensureTable();
    try {
      return await this.client.getEntity<Entity>(partitionKey, rowKey, this.options());
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  /** Entities of one partition with row keys in `[from, to)`. */
  private async range(partitionKey: string, from: string, to: string, limit = Infinity) {
    await this.ensureTable();
    const escape = (v: string): string => v.replace(/'/g, "''");
    const entities: TableEntityResult<Entity>[] = [];
    const pages = this.client.listEntities<Entity>({
      ...this.options(),
      queryOptions: {
        filter: `PartitionKey eq '${escape(partitionKey)}' and RowKey ge '${escape(from)}' and RowKey lt '${escape(to)}'`,
      },
    });
    for await (const entity of pages) {
      entities.push(entity);
      if (entities.length >= limit) break;
    }
    return entities;
  }

  /** Submits one transaction: its response, or undefined when a condition failed (nothing was written). */
  private async transact(actions: TransactionAction[]): Promise<TableTransactionResponse | undefined> {
    const result = await this.submit(actions);
    return typeof result === 'number' ? undefined : result;
  }

  /** Submits one transaction: its response, or the status of the condition that failed (nothing was written). */
  private async submit(actions: TransactionAction[]): Promise<TableTransactionResponse | number> {
    await this.ensureTable();
    try {
      return await this.client.submitTransaction(actions, this.options());
    } catch (error) {
      const status = statusOf(error);
      if (status === 412 || status === 404 || status === 409) return status;
      throw error;
    }
  }

  /**
   * Like {@link transact}, where an index entry to delete may be gone already (written by an earlier layout, or
   * deleted meanwhile): that is no conflict. On 404 the deletes of entries that are gone are left out and the
   * rest is submitted again, once.
   */
  private async transactMoving(actions: TransactionAction[]): Promise<TableTransactionResponse | undefined> {
    const result = await this.submit(actions);
    if (result !== 404) return typeof result === 'number' ? undefined : result;
    const present = await Promise.all(
      actions.map(
        async ([kind, entity]) =>
          kind !== 'delete' || (await this.get(entity.partitionKey, entity.rowKey)) !== undefined,
      ),
    );
    const kept = actions.filter((_, i) => present[i]);
    if (kept.length === actions.length || kept.length === 0) return undefined;
    return this.transact(kept);
  }

  /** The new ETag of the entity written by a transaction's first action. */
  private async etagAfter(response: TableTransactionResponse, rowKey: string): Promise<string | undefined> {
    const sub = response.subResponses.find((r) => r.rowKey === rowKey) ?? response.subResponses[0];
    return sub?.etag ?? (await this.get(RELEASES, rowKey))?.etag;
  }

  // --- idempotency claims ---------------------------------------------------------------------------------

  private keyEntity(record: IdempotencyRecord): Entity {
    return {
      partitionKey: `key|${record.keyHash}`,
      rowKey: '',
      state: record.state,
      claimedAt: new Date(record.claimedAt).toISOString(),
      ...jsonProperties(record),
    };
  }

  async readKey(keyHash: string): Promise<Versioned<IdempotencyRecord> | undefined> {
    const entity = await this.get(`key|${keyHash}`, '');
    if (!entity) return undefined;
    const value = readJson(entity);
    if (!isIdempotencyRecord(value)) throw new MalformedDataError('Stored idempotency key is malformed');
    return { value, etag: entity.etag };
  }

  async insertKey(record: IdempotencyRecord): Promise<string | undefined> {
    await this.ensureTable();
    try {
      const response = await this.client.createEntity(this.keyEntity(record), this.options());
      return response.etag ?? (await this.readKey(record.keyHash))?.etag;
    } catch (error) {
      if (statusOf(error) === 409) return undefined;
      throw error;
    }
  }

  async replaceKey(record: IdempotencyRecord, etag: string): Promise<string | undefined> {
    await this.ensureTable();
    try {
      const response = await this.client.updateEntity(this.keyEntity(record), 'Replace', {
        ...this.options(),
        etag,
      });
      return response.etag ?? (await this.readKey(record.keyHash))?.etag;
    } catch (error) {
      if (statusOf(error) === 412 || statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  // --- device releases --------------------------------------------------------------------------------------

  private recordEntity(record: ReleaseRecord): Entity {
    return {
      partitionKey: RELEASES,
      rowKey: `r|${recordKey(record.ref)}`,
      state: record.state,
      machineId: record.machineId ?? '',
      dueAt: record.dueAt,
      ...jsonProperties(record),
    };
  }

  /** The index entries a record in this state has (row key → entity). */
  private indexEntries(record: ReleaseRecord): Map<string, Entity> {
    const entries = new Map<string, Entity>();
    const key = recordKey(record.ref);
    if (record.state === 'queued' || record.state === 'running') {
      const rowKey = `q|${timeKey(record.dueAt)}|${key}`;
      entries.set(rowKey, { partitionKey: RELEASES, rowKey, record: key });
    }
    if (record.state === 'accepted' && record.machineId) {
      const tracked: TrackedRelease = {
        ref: record.ref,
        machineId: record.machineId,
        machineActionId: record.machineActionId,
        receivedAt: record.ask.receivedAt,
        actionCreatedAt: Math.min(
          record.ask.receivedAt,
          Date.parse(record.answer?.machineAction?.creationDateTimeUtc ?? '') || record.ask.receivedAt,
        ),
        actionStatus: record.answer?.machineAction?.status ?? null,
        trackUntil: record.trackUntil,
      };
      const rowKey = `o|${key}`;
      entries.set(rowKey, { partitionKey: RELEASES, rowKey, ...jsonProperties(tracked) });
    }
    return entries;
  }

  async createReleases(
    records: readonly ReleaseRecord[],
    expiry: { expiresAt: number; keyHash?: string },
  ): Promise<(RecordedRelease | undefined)[]> {
    if (records.length === 0) return [];
    if (records.length > BATCH_LIMIT) throw new Error(`At most ${BATCH_LIMIT} releases per request`);
    const first = records[0]!.ref;
    const expiryEntry: Entity = {
      partitionKey: RELEASES,
      rowKey: `x|${timeKey(expiry.expiresAt)}|${requestKey(first)}`,
      correlationId: first.correlationId,
      requestId: first.requestId,
      keyHash: expiry.keyHash ?? '',
    };
    const recorded = new Map<string, RecordedRelease>();
    let missing = records;
    // The expiry entry goes with the first records: if any record of the request exists, so does it.
    let withExpiry = true;
    try {
      for (let pass = 0; pass < 3 && missing.length > 0; pass += 1) {
        if (await this.createBatches(missing, withExpiry ? expiryEntry : undefined, recorded)) break;
        // Recorded already, whole or in part (an earlier invocation of this request stopped between
        // transactions): take the stored records as they are, and record the rest.
        for (const version of await this.readReleases(first.correlationId, first.requestId)) {
          const key = recordKey(version.value.ref);
          if (!recorded.has(key)) recorded.set(key, { ...version, created: false });
        }
        missing = records.filter((r) => !recorded.has(recordKey(r.ref)));
        withExpiry = false;
      }
    } catch (error) {
      // Nothing written: the store is unavailable. Written in part: the caller goes on with what is recorded.
      if (recorded.size === 0) throw error;
    }
    return records.map((r) => recorded.get(recordKey(r.ref)));
  }

  /**
   * Creates records in as few transactions as fit (each record with its index entries, the expiry entry in
   * the first), adding each to `recorded`. False when a record existed already (that transaction wrote nothing).
   */
  private async createBatches(
    records: readonly ReleaseRecord[],
    expiryEntry: Entity | undefined,
    recorded: Map<string, RecordedRelease>,
  ): Promise<boolean> {
    const batches: { actions: TransactionAction[]; records: ReleaseRecord[] }[] = [];
    let batch = { actions: [] as TransactionAction[], records: [] as ReleaseRecord[] };
    if (expiryEntry) batch.actions.push(['upsert', expiryEntry, 'Replace']);
    for (const record of records) {
      const actions: TransactionAction[] = [['create', this.recordEntity(record)]];
      for (const entry of this.indexEntries(record).values()) actions.push(['upsert', entry, 'Replace']);
      if (batch.actions.length + actions.length > BATCH_LIMIT) {
        batches.push(batch);
        batch = { actions: [], records: [] };
      }
      batch.actions.push(...actions);
      batch.records.push(record);
    }
    batches.push(batch);
    for (const { actions, records: written } of batches) {
      const response = await this.transact(actions);
      if (!response) return false;
      for (const record of written) {
        const rowKey = `r|${recordKey(record.ref)}`;
        const etag =
          response.subResponses.find((r) => r.rowKey === rowKey)?.etag ??
          (await this.get(RELEASES, rowKey))?.etag;
        if (etag !== undefined) recorded.set(recordKey(record.ref), { value: record, etag, created: true });
      }
    }
    return true;
  }

  async readReleases(correlationId: string, requestId?: string): Promise<Versioned<ReleaseRecord>[]> {
    const prefix = `r|${requestId === undefined ? `${encode(correlationId)}|` : `${requestKey({ correlationId, requestId })}|`}`;
    const entities = await this.range(RELEASES, prefix, `${prefix.slice(0, -1)}}`);
    return entities.map((e) => ({ value: recordOf(e), etag: e.etag }));
  }

  async readRelease(ref: ReleaseRef): Promise<Versioned<ReleaseRecord> | undefined> {
    const entity = await this.get(RELEASES, `r|${recordKey(ref)}`);
    return entity && { value: recordOf(entity), etag: entity.etag };
  }

  async updateRelease(
    record: ReleaseRecord,
    previous: Versioned<ReleaseRecord>,
  ): Promise<string | undefined> {
    const before = this.indexEntries(previous.value);
    const after = this.indexEntries(record);
    const actions: TransactionAction[] = [
      ['update', this.recordEntity(record), 'Replace', { etag: previous.etag }],
    ];
    for (const [rowKey, entity] of before) {
      if (!after.has(rowKey)) actions.push(['delete', entity]);
    }
    for (const entity of after.values()) actions.push(['upsert', entity, 'Replace']);
    const response = await this.transactMoving(actions);
    return response && this.etagAfter(response, `r|${recordKey(record.ref)}`);
  }

  async listDue(until: number, limit: number): Promise<Versioned<ReleaseRecord>[]> {
    const entries = await this.range(RELEASES, 'q|', `q|${timeKey(until)}~`, limit);
    // The records are point reads of their own, independent of each other: read them a few at a time.
    const records = new Array<TableEntityResult<Entity> | undefined>(entries.length);
    let next = 0;
    const reader = async (): Promise<void> => {
      for (let i = next++; i < entries.length; i = next++) {
        records[i] = await this.get(RELEASES, `r|${String(entries[i]!.record)}`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, entries.length) }, reader));
    // A damaged record (MalformedDataError) is skipped, so it cannot hold up every other hand-back; it goes
    // when its request expires (deleteExpired).
    return records.flatMap((record) => {
      const value = record && readableRecord(record);
      return value ? [{ value, etag: record.etag }] : [];
    });
  }

  async listTracked(limit: number): Promise<TrackedRelease[]> {
    const entries = await this.range(RELEASES, 'o|', 'o}', limit);
    return entries.map((e) => readJson(e) as TrackedRelease);
  }

  async claimDevice(ref: ReleaseRef, machineId: string): Promise<number> {
    const rowKey = `d|${requestKey(ref)}|${machineId}`;
    const index = ref.index ?? 0;
    await this.ensureTable();
    try {
      await this.client.createEntity({ partitionKey: RELEASES, rowKey, index }, this.options());
      return index;
    } catch (error) {
      if (statusOf(error) !== 409) throw error;
      const owner = await this.get(RELEASES, rowKey);
      return typeof owner?.index === 'number' ? owner.index : index;
    }
  }

  async deleteExpired(now: number, limit: number): Promise<number> {
    const expired = await this.range(RELEASES, 'x|', `x|${timeKey(now)}~`, limit);
    for (const entry of expired) {
      const ref = { correlationId: String(entry.correlationId), requestId: String(entry.requestId) };
      const prefix = requestKey(ref);
      const records = await this.range(RELEASES, `r|${prefix}|`, `r|${prefix}}`);
      const owners = await this.range(RELEASES, `d|${prefix}|`, `d|${prefix}}`);
      const doomed: Entity[] = [...owners];
      for (const entity of records) {
        doomed.push(entity);
        // A damaged record's index entries cannot be named; the record itself still goes.
        const value = readableRecord(entity);
        if (value) doomed.push(...this.indexEntries(value).values());
      }
      for (let i = 0; i < doomed.length; i += BATCH_LIMIT) {
        const actions = doomed
          .slice(i, i + BATCH_LIMIT)
          .map((e): TransactionAction => ['delete', { partitionKey: e.partitionKey, rowKey: e.rowKey }]);
        await this.transactMoving(actions);
      }
      if (typeof entry.keyHash === 'string' && entry.keyHash) {
        await this.client.deleteEntity(`key|${entry.keyHash}`, '', this.options()).catch((error: unknown) => {
          if (statusOf(error) !== 404) throw error;
        });
      }
      await this.client.deleteEntity(RELEASES, entry.rowKey, this.options()).catch((error: unknown) => {
        if (statusOf(error) !== 404) throw error;
      });
    }
    return expired.length;
  }

  async readTrackerPoll(): Promise<number> {
    const entity = await this.get(RELEASES, TRACKER_ROW);
    return typeof entity?.lastPollAt === 'number' ? entity.lastPollAt : 0;
  }

  async writeTrackerPoll(at: number): Promise<void> {
    await this.ensureTable();
    await this.client.upsertEntity(
      { partitionKey: RELEASES, rowKey: TRACKER_ROW, lastPollAt: at },
      'Replace',
      this.options(),
    );
  }

  // --- budget ledgers ---------------------------------------------------------------------------------------

  /**
   * A ledger that cannot be read (damaged, or written by another version) is taken as empty, with its ETag, so
   * the next lease replaces it: it only paces calls (MDE's 429 stays the guard), and failing every lease on it
   * would keep the budget off the table for good.
   */
  async readLedger(pool: string): Promise<Versioned<Ledger> | undefined> {
    const entity = await this.get(BUDGET, pool);
    if (!entity) return undefined;
    let value: unknown;
    try {
      value = readJson(entity);
    } catch {
      value = undefined;
    }
    return { value: isLedger(value) ? value : EMPTY_LEDGER, etag: entity.etag };
  }

  async writeLedger(pool: string, ledger: Ledger, etag: string | undefined): Promise<string | undefined> {
    await this.ensureTable();
    const entity: Entity = { partitionKey: BUDGET, rowKey: pool, ...jsonProperties(ledger) };
    try {
      const response =
        etag === undefined
          ? await this.client.createEntity(entity, this.options())
          : await this.client.updateEntity(entity, 'Replace', { ...this.options(), etag });
      return response.etag ?? (await this.get(BUDGET, pool))?.etag;
    } catch (error) {
      const status = statusOf(error);
      if (status === 409 || status === 412 || status === 404) return undefined;
      throw error;
    }
  }
}

/** Builds the store for a table. */
export function createReleaseStore(
  target: StateTableTarget,
  options: ReleaseStoreOptions = {},
): ReleaseStore {
  return new TableReleaseStore(clientFor(target), options.operationTimeoutMs);
}
