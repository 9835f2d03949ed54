/**
 * Durable release state in one Azure Table (`@azure/data-tables`): identity-based in Azure
 * (`STATE_TABLE_URL` + the app's managed identity, role Storage Table Data Contributor on the account), a
 * connection string for Azurite locally and in tests.
 *
 * Layout (every look-up is a point read or a single-partition range):
 * | PartitionKey | RowKey | what |
 * |---|---|---|
 * | `key\|<sha256>` | `` (empty) | the claim of one idempotency key (one partition per key: claims never contend) |
 * | `release` | `rec\|<releaseId>` | the latest release of a correlation id (`<id>:<index>` per bulk device) |
 * | `release` | `open\|<releaseId>` | the same record while it is tracked; deleted once it completed |
 *
 * Releases share one partition so that a record and its `open` entry change together in one entity group
 * transaction (https://learn.microsoft.com/en-us/rest/api/storageservices/performing-entity-group-transactions):
 * closing a release is "update `open` If-Match ETag to completed + write `rec`", atomic, so one tracker wins. One partition
 * serves ~2000 entities/s, far above what MDE's 100 calls/minute can produce.
 */
import { TableClient, type TableEntityResult, type TransactionAction } from '@azure/data-tables';
import type { TokenCredential } from '@azure/identity';
import { isLedger, type Ledger } from '../core/budget';
import type { IdempotencyRecord, ReleaseRecord, ReleaseStore, Versioned } from '../core/ports';
import { releaseIdOf } from '../core/tracking';
import { isLoopbackUrl } from './loopback';

const RELEASES = 'release';
const RECORD = 'rec|';
const OPEN = 'open|';
// '}' sorts right after '|': the range [open|, open}) holds exactly the open entries.
const OPEN_END = 'open}';

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

type Entity = { partitionKey: string; rowKey: string } & Record<string, unknown>;

function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

/** Release ids are printable ASCII; '/', '\\', '#', '?' are not allowed in keys, so encode them. */
function rowId(releaseId: string): string {
  return encodeURIComponent(releaseId);
}

function parseJson<T>(text: unknown): T {
  if (typeof text !== 'string') throw new Error('Stored entity has no JSON body');
  return JSON.parse(text) as T;
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
    private readonly client: TableClient,
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

  private keyEntity(record: IdempotencyRecord): Entity {
    return {
      partitionKey: `key|${record.keyHash}`,
      rowKey: '',
      state: record.state,
      fingerprint: record.fingerprint,
      claimedAt: new Date(record.claimedAt).toISOString(),
      body: JSON.stringify(record),
    };
  }

  async readKey(keyHash: string): Promise<Versioned<IdempotencyRecord> | undefined> {
    const entity = await this.get(`key|${keyHash}`, '');
    return entity && { value: parseJson<IdempotencyRecord>(entity.body), etag: entity.etag };
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

  async deleteKey(keyHash: string, etag: string): Promise<void> {
    await this.ensureTable();
    try {
      await this.client.deleteEntity(`key|${keyHash}`, '', { ...this.options(), etag });
    } catch (error) {
      if (statusOf(error) !== 412 && statusOf(error) !== 404) throw error;
    }
  }

  private releaseEntity(record: ReleaseRecord, prefix: string): Entity {
    return {
      partitionKey: RELEASES,
      rowKey: prefix + rowId(releaseIdOf(record)),
      phase: record.phase,
      status: record.outcome.status,
      machineId: record.machineId,
      machineActionId: record.machineActionId ?? '',
      body: JSON.stringify(record),
    };
  }

  async saveRelease(record: ReleaseRecord): Promise<void> {
    await this.ensureTable();
    const actions: TransactionAction[] = [['upsert', this.releaseEntity(record, RECORD), 'Replace']];
    if (record.phase === 'accepted') actions.push(['upsert', this.releaseEntity(record, OPEN), 'Replace']);
    await this.client.submitTransaction(actions, this.options());
  }

  async readRelease(releaseId: string): Promise<ReleaseRecord | undefined> {
    const entity = await this.get(RELEASES, RECORD + rowId(releaseId));
    return entity && parseJson<ReleaseRecord>(entity.body);
  }

  async listOpen(now: number, limit: number): Promise<Versioned<ReleaseRecord>[]> {
    await this.ensureTable();
    // Only unfinished releases are in this range, so it stays small; due ones are picked here.
    const entries: Versioned<ReleaseRecord>[] = [];
    const pages = this.client.listEntities<Entity>({
      ...this.options(),
      queryOptions: {
        filter: `PartitionKey eq '${RELEASES}' and RowKey ge '${OPEN}' and RowKey lt '${OPEN_END}'`,
      },
    });
    for await (const entity of pages) {
      const value = parseJson<ReleaseRecord>(entity.body);
      if (value.phase === 'completed') await this.removeOpen(releaseIdOf(value));
      else if (value.nextPollAt <= now) entries.push({ value, etag: entity.etag });
      if (entries.length >= 10_000) break;
    }
    return entries.sort((a, b) => a.value.nextPollAt - b.value.nextPollAt).slice(0, limit);
  }

  private async transact(actions: TransactionAction[]): Promise<boolean> {
    await this.ensureTable();
    try {
      await this.client.submitTransaction(actions, this.options());
      return true;
    } catch (error) {
      if (statusOf(error) === 412 || statusOf(error) === 404) return false;
      throw error;
    }
  }

  async updateOpen(record: ReleaseRecord, etag: string): Promise<boolean> {
    return this.transact([
      ['update', this.releaseEntity(record, OPEN), 'Replace', { etag }],
      ['upsert', this.releaseEntity(record, RECORD), 'Replace'],
    ]);
  }

  async closeOpen(record: ReleaseRecord, etag: string): Promise<boolean> {
    // A transaction's delete cannot carry If-Match, so the claim is an ETag-checked update of the open
    // entry to phase "completed" (with the record, atomically); only the winner then deletes the entry.
    const won = await this.transact([
      ['update', this.releaseEntity(record, OPEN), 'Replace', { etag }],
      ['upsert', this.releaseEntity(record, RECORD), 'Replace'],
    ]);
    if (won) await this.removeOpen(releaseIdOf(record));
    return won;
  }

  async readLedger(pool: string): Promise<Versioned<Ledger> | undefined> {
    const entity = await this.get(BUDGET, pool);
    if (!entity) return undefined;
    const value = parseJson<unknown>(entity.ledger);
    if (!isLedger(value)) throw new Error(`Stored budget ledger ${pool} is malformed`);
    return { value, etag: entity.etag };
  }

  async writeLedger(pool: string, ledger: Ledger, etag: string | undefined): Promise<string | undefined> {
    await this.ensureTable();
    const entity: Entity = { partitionKey: BUDGET, rowKey: pool, ledger: JSON.stringify(ledger) };
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

  /** Deletes a closed open entry. Best effort: {@link listOpen} skips (and retries deleting) closed ones. */
  private async removeOpen(releaseId: string): Promise<void> {
    await this.client.deleteEntity(RELEASES, OPEN + rowId(releaseId), this.options()).catch(() => undefined);
  }
}

/** Partition of the Defender API budget ledgers (one row per pool, see core/budget.ts). */
const BUDGET = 'budget';

/** Builds the store for a table. */
export function createReleaseStore(
  target: StateTableTarget,
  options: ReleaseStoreOptions = {},
): ReleaseStore {
  return new TableReleaseStore(clientFor(target), options.operationTimeoutMs);
}
