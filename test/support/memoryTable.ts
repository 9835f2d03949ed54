/**
 * An in-memory table with the part of `TableClient`'s behaviour the release store relies on: ETags, insert
 * that fails on conflict (409), If-Match updates and deletes (412), missing entities (404), atomic entity
 * group transactions (all or nothing, one partition, at most 100 operations) and row-key range queries. The
 * store's contract tests run against this and against Azurite, so the fake is held to the real thing.
 * `down = true` makes every call fail like an unreachable account.
 */
import type { TableEntityResult, TableTransactionResponse, TransactionAction } from '@azure/data-tables';
import type { TableLike } from '../../src/adapters/releaseStore';

type Row = Record<string, unknown> & { partitionKey: string; rowKey: string };

/** A RestError-like failure with an HTTP status, as the SDK throws. */
class TableError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'RestError';
  }
}

const key = (pk: string, rk: string): string => `${pk}\u0000${rk}`;

/** In-memory {@link TableLike}. */
export class MemoryTable {
  private rows = new Map<string, { row: Row; etag: string }>();
  private version = 0;
  /** Operations served (reads, writes, transactions, pages), for cost figures. */
  operations = 0;
  down = false;

  private check(): void {
    if (this.down) throw new Error('connect ECONNREFUSED 127.0.0.1:10002');
    this.operations += 1;
  }

  private nextEtag(): string {
    this.version += 1;
    return `W/"datetime'${this.version}'"`;
  }

  /** Entities currently stored (copies), e.g. to assert on the layout. */
  entities(): Row[] {
    return [...this.rows.values()].map((r) => structuredClone(r.row));
  }

  private apply(
    rows: Map<string, { row: Row; etag: string }>,
    kind: 'create' | 'update' | 'upsert' | 'delete',
    entity: Row,
    etag?: string,
  ): string | undefined {
    const id = key(entity.partitionKey, entity.rowKey);
    const existing = rows.get(id);
    if (kind === 'create' && existing) throw new TableError(409, 'EntityAlreadyExists');
    if ((kind === 'update' || kind === 'delete') && !existing && etag !== undefined && etag !== '*') {
      throw new TableError(404, 'ResourceNotFound');
    }
    if (kind === 'update' && !existing) throw new TableError(404, 'ResourceNotFound');
    if (etag !== undefined && etag !== '*' && existing && existing.etag !== etag) {
      throw new TableError(412, 'UpdateConditionNotSatisfied');
    }
    if (kind === 'delete') {
      if (!existing) throw new TableError(404, 'ResourceNotFound');
      rows.delete(id);
      return undefined;
    }
    const next = this.nextEtag();
    rows.set(id, { row: structuredClone(entity), etag: next });
    return next;
  }

  private result(stored: { row: Row; etag: string }): TableEntityResult<Record<string, unknown>> {
    return { ...structuredClone(stored.row), etag: stored.etag };
  }

  readonly client: TableLike = {
    createTable: async () => {
      this.check();
    },
    getEntity: (async (partitionKey: string, rowKey: string) => {
      this.check();
      const found = this.rows.get(key(partitionKey, rowKey));
      if (!found) throw new TableError(404, 'ResourceNotFound');
      return this.result(found);
    }) as TableLike['getEntity'],
    createEntity: async (entity: Row) => {
      this.check();
      return { etag: this.apply(this.rows, 'create', entity) };
    },
    updateEntity: async (entity: Row, _mode?: unknown, options?: { etag?: string }) => {
      this.check();
      return { etag: this.apply(this.rows, 'update', entity, options?.etag ?? '*') };
    },
    upsertEntity: async (entity: Row) => {
      this.check();
      return { etag: this.apply(this.rows, 'upsert', entity) };
    },
    deleteEntity: async (partitionKey: string, rowKey: string, options?: { etag?: string }) => {
      this.check();
      this.apply(this.rows, 'delete', { partitionKey, rowKey }, options?.etag ?? '*');
      return {};
    },
    submitTransaction: async (actions: TransactionAction[]): Promise<TableTransactionResponse> => {
      this.check();
      if (actions.length > 100) throw new TableError(400, 'InvalidInput: more than 100 operations');
      const partitions = new Set(actions.map((a) => a[1].partitionKey));
      if (partitions.size > 1) throw new TableError(400, 'CommandsInBatchActOnDifferentPartitions');
      // All or nothing: apply to a copy, keep it only if every operation succeeds.
      const copy = new Map(this.rows);
      const subResponses = actions.map((action) => {
        const [kind, entity] = action;
        const etag = action[0] === 'update' ? (action[3]?.etag ?? '*') : undefined;
        const written = this.apply(copy, kind, entity, etag);
        return { status: 204, rowKey: entity.rowKey, etag: written };
      });
      this.rows = copy;
      return { status: 202, subResponses, getResponseForEntity: () => undefined };
    },
    listEntities: ((options?: { queryOptions?: { filter?: string } }) => {
      this.check();
      const filter = options?.queryOptions?.filter ?? '';
      const match =
        /^PartitionKey eq '((?:[^']|'')*)' and RowKey ge '((?:[^']|'')*)' and RowKey lt '((?:[^']|'')*)'$/.exec(
          filter,
        );
      if (!match) throw new TableError(400, `unsupported filter in the memory table: ${filter}`);
      const unescape = (v: string): string => v.replace(/''/g, "'");
      const [pk, from, to] = [unescape(match[1]!), unescape(match[2]!), unescape(match[3]!)];
      const found = [...this.rows.values()]
        .filter((r) => r.row.partitionKey === pk && r.row.rowKey >= from && r.row.rowKey < to)
        .sort((a, b) => (a.row.rowKey < b.row.rowKey ? -1 : 1))
        .map((r) => this.result(r));
      return (async function* () {
        for (const entity of found) yield entity;
      })();
    }) as unknown as TableLike['listEntities'],
  };
}
