/**
 * Idempotent requests: a request carrying an idempotency key (HTTP `Idempotency-Key` header or
 * `idempotencyKey` body field; a Service Bus message's `messageId` by default) runs at most once per key
 * within `IDEMPOTENCY_WINDOW_HOURS`; repeats get the answers of its device releases (replayed) and never call
 * MDE again, except for a device that failed transiently: a repeat of such a request (a claim left `retry`)
 * takes the same request over and runs only those devices again.
 *
 * The key is claimed with an insert that fails on conflict (Table Storage `Insert Entity` answers 409,
 * https://learn.microsoft.com/rest/api/storageservices/insert-entity), so of concurrent duplicates on any
 * number of instances exactly one runs the request. A claim holds a lease, renewed while its request runs; a
 * claim whose lease ran out (its instance stopped), or a Service Bus redelivery of its message, takes it over
 * with an ETag-checked replace (https://learn.microsoft.com/rest/api/storageservices/update-entity2) and
 * resumes the same device releases. Expired claims start a new request.
 *
 * When durable state is not configured, or unreachable, requests run without this module (no idempotency):
 * the release path never depends on Table Storage.
 */
import { createHash } from 'node:crypto';
import { UnisolateError } from './errors';
import { isIdempotencyKey, REQUEST_FIELDS } from './request';
import type { Clock, IdempotencyRecord, Logger, ReleaseStore, Versioned } from './ports';

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

/** The `idempotencyKey` body field (any casing), if present. */
export function bodyIdempotencyKey(body: unknown): unknown {
  if (!isPlainObject(body)) return undefined;
  const key = Object.keys(body).find((k) => k.toLowerCase() === 'idempotencykey');
  return key === undefined ? undefined : Object.getOwnPropertyDescriptor(body, key)?.value;
}

/**
 * Picks the request's idempotency key: the explicit one (HTTP header) and/or the body field, which must
 * agree; else the fallback (Service Bus `messageId`). Returns an error for an unusable key.
 */
export function chooseIdempotencyKey(
  body: unknown,
  explicit: string | null | undefined,
  fallback?: string,
): { key: string | undefined } | { error: UnisolateError } {
  const fromBody = bodyIdempotencyKey(body);
  const invalid = (what: string) =>
    new UnisolateError(
      'InvalidRequest',
      `Invalid request: ${what} must be ${REQUEST_FIELDS.idempotencyKey.rule}.`,
    );
  if (fromBody !== undefined && fromBody !== null) {
    if (typeof fromBody !== 'string' || !isIdempotencyKey(fromBody))
      return { error: invalid('idempotencyKey') };
  }
  if (explicit !== undefined && explicit !== null) {
    if (!isIdempotencyKey(explicit)) return { error: invalid('the Idempotency-Key header') };
    if (typeof fromBody === 'string' && fromBody !== explicit) {
      return {
        error: new UnisolateError(
          'InvalidRequest',
          'Invalid request: the Idempotency-Key header and the idempotencyKey body field differ; send one of them.',
        ),
      };
    }
    return { key: explicit };
  }
  if (typeof fromBody === 'string') return { key: fromBody };
  return { key: fallback && isIdempotencyKey(fallback) ? fallback : undefined };
}

/** Whether a property name is an array index: objects list those first, in numeric order (ECMA-262 OrdinaryOwnPropertyKeys). */
function isArrayIndex(key: string): boolean {
  return /^(?:0|[1-9]\d{0,9})$/.test(key) && Number(key) < 2 ** 32 - 1;
}

function byPropertyOrder(a: string, b: string): number {
  const indexA = isArrayIndex(a);
  const indexB = isArrayIndex(b);
  if (indexA && indexB) return Number(a) - Number(b);
  if (indexA !== indexB) return indexA ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** JSON text of a leaf, or undefined for what JSON.stringify leaves out (undefined, functions, symbols). */
function leafJson(value: unknown): string | undefined {
  return JSON.stringify(value);
}

/**
 * Canonical JSON text of a body: object keys lower-cased (they are matched case-insensitively) and sorted,
 * the idempotency key field left out at every level. Iterative (an explicit stack), so no nesting depth can
 * overflow the call stack. The text is exactly `JSON.stringify` of that canonical form (keys that are array
 * indexes first, as JavaScript orders them), so stored fingerprints stay comparable.
 */
export function canonicalJson(value: unknown): string {
  const out: string[] = [];
  // Work items: a value to write, or literal text. Pushed in reverse so they pop in writing order.
  const work: ({ value: unknown } | string)[] = [{ value }];
  for (let item = work.pop(); item !== undefined; item = work.pop()) {
    if (typeof item === 'string') {
      out.push(item);
      continue;
    }
    const current = item.value;
    if (Array.isArray(current)) {
      const elements = current as unknown[];
      out.push('[');
      work.push(']');
      for (let i = elements.length - 1; i >= 0; i -= 1) {
        work.push({ value: elements[i] });
        if (i > 0) work.push(',');
      }
    } else if (isPlainObject(current)) {
      // Lower-cased names; for names that collide, the last value wins (as Object.fromEntries would).
      const members = new Map<string, unknown>();
      for (const key of Object.keys(current)) {
        const lower = key.toLowerCase();
        if (lower === 'idempotencykey') continue;
        members.set(lower, Object.getOwnPropertyDescriptor(current, key)?.value);
      }
      const names = [...members.keys()]
        .filter((name) => {
          const member = members.get(name);
          return isPlainObject(member) || Array.isArray(member) || leafJson(member) !== undefined;
        })
        .sort(byPropertyOrder);
      out.push('{');
      work.push('}');
      for (let i = names.length - 1; i >= 0; i -= 1) {
        const name = names[i]!;
        work.push({ value: members.get(name) });
        work.push(`${i > 0 ? ',' : ''}${JSON.stringify(name)}:`);
      }
    } else {
      // Leaves, and objects with their own JSON form (a Buffer): no nesting of ours to walk.
      out.push(leafJson(current) ?? 'null');
    }
  }
  return out.join('');
}

/** Fingerprint of what a request asks for: its body (canonical) and route machine id. */
export function requestFingerprint(input: { body: unknown; routeMachineId?: string | undefined }): string {
  const route = JSON.stringify(input.routeMachineId?.toLowerCase() ?? null);
  const text = `{"route":${route},"body":${canonicalJson(input.body)}}`;
  return createHash('sha256').update(text).digest('hex');
}

/** Hash of a key, scoped by trigger (an HTTP key and a Service Bus message id never collide). */
export function keyHashOf(trigger: string, key: string): string {
  return createHash('sha256').update(`${trigger}\n${key}`).digest('hex');
}

/** How claims behave (defaults in {@link CLAIM_DEFAULTS}). */
export interface ClaimOptions {
  /** IDEMPOTENCY_WINDOW_HOURS in ms. */
  windowMs: number;
  /** How long a duplicate waits for the first request to be answered before answering 409. */
  duplicateWaitMs?: number;
  /** Poll interval while waiting. */
  duplicatePollMs?: number;
  /** A claim's lease: renewed while its request runs; once run out, the claim may be taken over. */
  leaseMs?: number;
}

/** Defaults of {@link ClaimOptions}. */
export const CLAIM_DEFAULTS = { duplicateWaitMs: 5_000, duplicatePollMs: 250, leaseMs: 60_000 } as const;

/** What claiming a key gave. */
export type ClaimResult =
  /** This request holds the key: a new request (`fresh`), or one taken over (stopped instance, retry). */
  | { kind: 'held'; claim: HeldClaim; fresh: boolean }
  /** The key's request was answered: replay its answers. */
  | { kind: 'replay'; record: IdempotencyRecord }
  /** The key was used with another body. */
  | { kind: 'reused' }
  /** Another request with the key is still running. */
  | { kind: 'busy' };

/** A claim this request holds: renew it while working, finish it when answered. */
export class HeldClaim {
  constructor(
    private readonly store: ReleaseStore,
    private readonly clock: Clock,
    private readonly log: Logger,
    private record: IdempotencyRecord,
    private etag: string,
    private readonly leaseMs: number,
    /**
     * The request was answered before (a repeat of one left `retry`): the answers it finds recorded were sent
     * then, and are replays now.
     */
    readonly answeredBefore = false,
  ) {}

  get requestId(): string {
    return this.record.requestId;
  }

  /** Extends the lease when half of it has passed. Best effort: a lost claim is logged. */
  async renew(): Promise<void> {
    const now = this.clock.now();
    if (this.record.leaseUntil - now > this.leaseMs / 2) return;
    const next = { ...this.record, leaseUntil: now + this.leaseMs };
    try {
      const etag = await this.store.replaceKey(next, this.etag);
      if (etag) {
        this.record = next;
        this.etag = etag;
      } else this.log.warn('The idempotency claim was taken over while its request ran');
    } catch (error) {
      this.log.warn('Could not renew the idempotency claim', {
        error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
      });
    }
  }

  /**
   * Ends the claim once the request is answered: `done` (repeats replay the answers), or `retry` (a device
   * failed transiently, or still runs elsewhere: a repeat with the same key takes this request over, runs
   * those devices again and replays the others), or `abandoned` (not answered: the message is handed back for
   * redelivery, which takes the request over as after a stopped instance).
   */
  async finish(how: 'done' | 'retry' | 'abandoned'): Promise<void> {
    try {
      const now = this.clock.now();
      const state = how === 'abandoned' ? 'pending' : how;
      const saved = await this.store.replaceKey({ ...this.record, state, leaseUntil: now }, this.etag);
      if (!saved) this.log.warn('The idempotency claim was taken over before its request was answered');
    } catch (error) {
      this.log.warn('Durable state unavailable (finishing the idempotency claim)', {
        error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
      });
    }
  }
}

/** A new request's id under a key: stable while its claim lives (a takeover resumes the same releases). */
function newRequestId(keyHash: string, claimedAt: number): string {
  return createHash('sha256').update(`${keyHash}\n${claimedAt}`).digest('hex').slice(0, 32);
}

/**
 * Claims `keyHash` for a request, or says why not. Waits (bounded) for a duplicate still running elsewhere.
 * A Service Bus redelivery (`redelivered`) takes a pending claim over at once: Service Bus redelivers only when
 * the earlier delivery ended (its lock is renewed while it runs). A claim left `retry` is taken over at once.
 * Throws when the store fails.
 */
export async function claimKey(
  store: ReleaseStore,
  clock: Clock,
  log: Logger,
  request: { keyHash: string; fingerprint: string; correlationId: string; redelivered: boolean },
  options: ClaimOptions,
): Promise<ClaimResult> {
  const waitMs = options.duplicateWaitMs ?? CLAIM_DEFAULTS.duplicateWaitMs;
  const pollMs = options.duplicatePollMs ?? CLAIM_DEFAULTS.duplicatePollMs;
  const leaseMs = options.leaseMs ?? CLAIM_DEFAULTS.leaseMs;
  const started = clock.now();
  const held = (record: IdempotencyRecord, etag: string, fresh: boolean, answered = false): ClaimResult => ({
    kind: 'held',
    claim: new HeldClaim(store, clock, log, record, etag, leaseMs, answered),
    fresh,
  });
  // Bounded: each pass either returns or sleeps pollMs, until waitMs; plus a few passes for lost races.
  const maxPasses = Math.ceil(waitMs / pollMs) + 5;
  for (let pass = 0; pass < maxPasses; pass += 1) {
    const now = clock.now();
    const claim: IdempotencyRecord = {
      keyHash: request.keyHash,
      fingerprint: request.fingerprint,
      state: 'pending',
      claimedAt: now,
      leaseUntil: now + leaseMs,
      correlationId: request.correlationId,
      requestId: newRequestId(request.keyHash, now),
    };
    const inserted = await store.insertKey(claim);
    if (inserted) return held(claim, inserted, true);

    const existing: Versioned<IdempotencyRecord> | undefined = await store.readKey(request.keyHash);
    if (!existing) continue; // released meanwhile (a transient failure): claim again
    const record = existing.value;
    if (record.claimedAt + options.windowMs <= now) {
      const replaced = await store.replaceKey(claim, existing.etag);
      if (replaced) return held(claim, replaced, true);
      continue; // another request renewed it first: look again
    }
    if (record.fingerprint !== request.fingerprint) return { kind: 'reused' };
    if (record.state === 'done') return { kind: 'replay', record };
    if (record.state === 'retry' || record.leaseUntil <= now || request.redelivered) {
      const resumed: IdempotencyRecord = { ...record, state: 'pending', leaseUntil: now + leaseMs };
      const replaced = await store.replaceKey(resumed, existing.etag);
      if (replaced) return held(resumed, replaced, false, record.state === 'retry');
      continue;
    }
    if (now - started >= waitMs) return { kind: 'busy' };
    await clock.sleep(pollMs);
  }
  return { kind: 'busy' };
}
