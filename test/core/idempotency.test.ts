/**
 * Idempotency over an in-memory store with the adapter's conflict semantics: replays, the window,
 * concurrent duplicates, key reuse, transient failures and an unavailable store.
 */
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import {
  canonicalJson,
  chooseIdempotencyKey,
  keyHashOf,
  requestFingerprint,
} from '../../src/core/idempotency';
import { handleRequest, type PipelineDeps, type RequestInput, type StateDeps } from '../../src/core/pipeline';
import { FakeDefender, fakeDeps, MACHINE_ID, memoryStore, stateDeps, TransportError } from '../support/fakes';

const HOUR = 3_600_000;

function setup(defender = new FakeDefender()) {
  const fake = fakeDeps(defender);
  const { store, table } = memoryStore();
  const state = stateDeps(store);
  return { ...fake, store, table, state };
}

function input(body: Record<string, unknown> = {}, overrides: Partial<RequestInput> = {}): RequestInput {
  return {
    body: { machineId: MACHINE_ID, comment: 'clean', correlationId: 'INC1', ...body },
    trigger: 'http',
    canRedeliver: false,
    caller: null,
    ...overrides,
  };
}

/** One single-device request with an idempotency key through the pipeline. */
async function processReleaseOnce(
  request: RequestInput,
  key: string | undefined,
  deps: PipelineDeps,
  state: StateDeps,
) {
  const answer = await handleRequest(
    { ...request, ...(key !== undefined ? { key } : {}) },
    { ...deps, state },
  );
  return {
    kind: answer.kind,
    outcome: answer.outcomes[0]!,
    messages: answer.messages,
    replayed: answer.replayed,
    retryAfterSeconds: answer.retryAfterSeconds,
  };
}

describe('idempotent requests', () => {
  it('replays the stored outcome for a repeat within the window, without calling MDE again', async () => {
    const { deps, defender, state, clock } = setup();
    const first = await processReleaseOnce(input(), 'key-1', deps, state);
    clock.time += 23 * HOUR;
    const second = await processReleaseOnce(input(), 'key-1', deps, state);
    expect(defender.unisolateCalls).toHaveLength(1);
    expect(first).toMatchObject({ kind: 'single', replayed: false });
    expect(second).toMatchObject({ kind: 'single', replayed: true });
    expect(second.outcome).toEqual(first.outcome);
    expect(second.messages).toEqual([{ ...first.outcome, replayed: true }]);
    expect(first.outcome).toMatchObject({ status: 'Accepted', phase: 'accepted' });
  });

  it('releases again once the window has passed', async () => {
    const { deps, defender, state, clock } = setup();
    await processReleaseOnce(input(), 'key-1', deps, state);
    clock.time += 24 * HOUR + 1;
    const again = await processReleaseOnce(input(), 'key-1', deps, state);
    expect(defender.unisolateCalls).toHaveLength(2);
    expect(again.replayed).toBe(false);
  });

  it('rejects a key reused with a different body (422) without calling MDE', async () => {
    const { deps, defender, state } = setup();
    await processReleaseOnce(input(), 'key-1', deps, state);
    const reused = await processReleaseOnce(input({ comment: 'another reason' }), 'key-1', deps, state);
    expect(defender.unisolateCalls).toHaveLength(1);
    expect(reused.outcome).toMatchObject({
      status: 'Invalid',
      correlationId: 'INC1',
      error: { code: 'IdempotencyKeyReused' },
    });
  });

  it('treats key casing of body fields and the key field itself as the same request', () => {
    const a = requestFingerprint({ body: { machineId: MACHINE_ID, Comment: 'x', idempotencyKey: 'k' } });
    const b = requestFingerprint({ body: { comment: 'x', MachineId: MACHINE_ID } });
    expect(a).toBe(b);
    expect(requestFingerprint({ body: { comment: 'y', machineId: MACHINE_ID } })).not.toBe(a);
  });

  it('lets exactly one of two concurrent duplicates call MDE; the other gets its outcome', async () => {
    const { deps, defender, state, clock } = setup();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const original = defender.unisolate.bind(defender);
    defender.unisolate = async (...args) => {
      await gate;
      return original(...args);
    };
    // The waiting duplicate's sleeps yield to the event loop; the first release finishes during the wait.
    clock.sleep = async (ms) => {
      clock.time += ms;
      release();
      await new Promise((resolve) => setImmediate(resolve));
    };
    const [a, b] = await Promise.all([
      processReleaseOnce(input(), 'key-1', deps, state),
      processReleaseOnce(input(), 'key-1', deps, state),
    ]);
    expect(defender.unisolateCalls).toHaveLength(1);
    expect([a.replayed, b.replayed].sort()).toEqual([false, true]);
    expect(a.outcome).toEqual(b.outcome);
  });

  it('answers 409 (IdempotencyKeyInUse) when the first duplicate is still running after the wait', async () => {
    const { deps, defender, state } = setup();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const original = defender.unisolate.bind(defender);
    defender.unisolate = async (...args) => {
      await gate;
      return original(...args);
    };
    const first = processReleaseOnce(input(), 'key-1', deps, { ...state, duplicateWaitMs: 1000 });
    await new Promise((resolve) => setImmediate(resolve));
    const second = await processReleaseOnce(input(), 'key-1', deps, { ...state, duplicateWaitMs: 1000 });
    release();
    await first;
    expect(defender.unisolateCalls).toHaveLength(1);
    expect(second).toMatchObject({ replayed: false, retryAfterSeconds: 1 });
    expect(second.outcome).toMatchObject({ error: { code: 'IdempotencyKeyInUse' }, duplicate: true });
  });

  it('answers a Service Bus copy of a message still running with a message marked duplicate (no redelivery)', async () => {
    const { deps, state, store, defender } = setup();
    await store.insertKey({
      keyHash: keyHashOf('serviceBus', 'msg-1'),
      fingerprint: requestFingerprint(input()),
      state: 'pending',
      claimedAt: deps.clock.now(),
      leaseUntil: deps.clock.now() + 60_000,
      correlationId: 'INC1',
      requestId: '0'.repeat(32),
    });
    const copy = await processReleaseOnce(
      input({}, { trigger: 'serviceBus', canRedeliver: true, deliveryCount: 1 }),
      'msg-1',
      deps,
      { ...state, duplicateWaitMs: 500 },
    );
    expect(copy.messages).toEqual([
      expect.objectContaining({
        error: expect.objectContaining({ code: 'IdempotencyKeyInUse' }),
        duplicate: true,
      }),
    ]);
    expect(defender.unisolateCalls).toHaveLength(0);
  });

  it('takes over a claim abandoned by a stopped instance (lease expired)', async () => {
    const { deps, state, store, defender } = setup();
    const hash = keyHashOf('http', 'key-1');
    await store.insertKey({
      keyHash: hash,
      fingerprint: requestFingerprint(input()),
      state: 'pending',
      claimedAt: deps.clock.now() - 10 * 60_000,
      leaseUntil: deps.clock.now() - 1,
      correlationId: 'INC1',
      requestId: '1'.repeat(32),
    });
    const result = await processReleaseOnce(input(), 'key-1', deps, state);
    expect(defender.unisolateCalls).toHaveLength(1);
    expect(result.replayed).toBe(false);
    expect((await store.readKey(hash))?.value.state).toBe('done');
  });

  it('keeps a transient failure retryable: a retry with the same key runs the release again', async () => {
    const defender = new FakeDefender([
      { status: 503, body: {} },
      { status: 503, body: {} },
      { status: 503, body: {} },
      { status: 503, body: {} },
      { status: 503, body: {} },
      { status: 503, body: {} },
      { status: 503, body: {} },
      { status: 503, body: {} },
      { status: 503, body: {} },
      { status: 503, body: {} },
      new TransportError('network', 'ECONNRESET', 'reset'),
    ]);
    const { deps, state } = setup(defender);
    const failed = await processReleaseOnce(input(), 'key-1', deps, state);
    expect(failed.outcome.status).toBe('Failed');
    defender.script = [];
    const calls = defender.unisolateCalls.length;
    const retried = await processReleaseOnce(input(), 'key-1', deps, state);
    expect(defender.unisolateCalls.length).toBe(calls + 1);
    expect(retried.outcome.status).toBe('Accepted');
  });

  it('parks a Service Bus release after a transient failure instead of handing the message back', async () => {
    const defender = new FakeDefender(Array.from({ length: 20 }, () => ({ status: 503, body: {} })));
    const { deps, state } = setup(defender);
    const sb = input({}, { trigger: 'serviceBus', canRedeliver: true, deliveryCount: 1 });
    const parked = await processReleaseOnce(sb, 'msg-1', deps, state);
    expect(parked.outcome).toMatchObject({ status: 'Queued', phase: 'queued' });
    expect(parked.messages).toHaveLength(1);
  });

  it('keeps the core contract when the store is unavailable: the release happens, without idempotency', async () => {
    const { deps, defender, state, table, log } = setup();
    table.down = true;
    const first = await processReleaseOnce(input(), 'key-1', deps, state);
    const second = await processReleaseOnce(input(), 'key-1', deps, state);
    expect(first.outcome.status).toBe('Accepted');
    expect(second.replayed).toBe(false);
    expect(defender.unisolateCalls).toHaveLength(2);
    expect(log.lines.join('\n')).toMatch(/Durable state unavailable/);
  });

  it('records accepted releases for tracking, with their MachineAction id', async () => {
    const { deps, state, store } = setup();
    const result = await processReleaseOnce(input(), undefined, deps, state);
    const [record] = await store.readReleases('INC1');
    expect(record?.value).toMatchObject({
      state: 'accepted',
      machineId: MACHINE_ID,
      machineActionId: result.outcome.machineAction?.id,
    });
    expect(await store.listTracked(10)).toHaveLength(1);
  });
});

describe('chooseIdempotencyKey', () => {
  it('takes the header, the body field, or the fallback, in that order', () => {
    expect(chooseIdempotencyKey({ idempotencyKey: 'b' }, 'b')).toEqual({ key: 'b' });
    expect(chooseIdempotencyKey({ IdempotencyKey: 'b' }, null)).toEqual({ key: 'b' });
    expect(chooseIdempotencyKey({}, null, 'msg-1')).toEqual({ key: 'msg-1' });
    expect(chooseIdempotencyKey({}, null)).toEqual({ key: undefined });
  });

  it('rejects unusable keys and a header that contradicts the body', () => {
    expect(chooseIdempotencyKey({ idempotencyKey: 'a' }, 'b')).toHaveProperty('error.code', 'InvalidRequest');
    expect(chooseIdempotencyKey({ idempotencyKey: 5 }, null)).toHaveProperty('error.code', 'InvalidRequest');
    expect(chooseIdempotencyKey({}, 'x'.repeat(256))).toHaveProperty('error.code', 'InvalidRequest');
    expect(chooseIdempotencyKey({}, 'tab\there')).toHaveProperty('error.code', 'InvalidRequest');
  });
});

describe('requestFingerprint', () => {
  /** The recursive definition the fingerprint has always had; stored fingerprints were made with it. */
  function reference(input: { body: unknown; routeMachineId?: string }): string {
    const isPlain = (v: unknown): v is Record<string, unknown> =>
      typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
    const canonical = (value: unknown): unknown => {
      if (Array.isArray(value)) return value.map(canonical);
      if (!isPlain(value)) return value;
      const out: [string, unknown][] = [];
      for (const key of Object.keys(value)) {
        const lower = key.toLowerCase();
        if (lower === 'idempotencykey') continue;
        out.push([lower, canonical(Object.getOwnPropertyDescriptor(value, key)?.value)]);
      }
      out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return Object.fromEntries(out);
    };
    const text = JSON.stringify({
      route: input.routeMachineId?.toLowerCase() ?? null,
      body: canonical(input.body) ?? null,
    });
    return createHash('sha256').update(text).digest('hex');
  }

  it('is the same text as before for any JSON body (array-index keys, colliding casings, nesting)', () => {
    const key = fc.oneof(
      fc.constantFrom(
        'a',
        'A',
        'b',
        'B',
        'idempotencyKey',
        'IDEMPOTENCYKEY',
        '0',
        '1',
        '10',
        '2',
        '__proto__',
      ),
      fc.string({ maxLength: 4 }),
    );
    const { value } = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: 'small' },
        fc.oneof(fc.string(), fc.double(), fc.integer(), fc.boolean(), fc.constant(null)),
        fc.array(tie('value'), { maxLength: 4 }),
        fc.dictionary(key, tie('value'), { maxKeys: 5 }),
      ),
    }));
    fc.assert(
      fc.property(
        value,
        fc.option(fc.constantFrom(MACHINE_ID, MACHINE_ID.toUpperCase()), { nil: undefined }),
        (body, route) => {
          // Through JSON, as a body arrives (a "__proto__" key then is an own property).
          const parsed = JSON.parse(JSON.stringify(body) ?? 'null') as unknown;
          const input = { body: parsed, routeMachineId: route };
          expect(requestFingerprint(input)).toBe(reference(input));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('canonicalises any depth without recursion', () => {
    let deep: unknown = { Comment: 'x' };
    for (let i = 0; i < 200_000; i += 1) deep = [deep];
    expect(() => reference({ body: deep })).toThrow(RangeError);
    expect(requestFingerprint({ body: deep })).toMatch(/^[0-9a-f]{64}$/);
    expect(canonicalJson([{ B: 1, a: [2, { IdempotencyKey: 'k', C: null }] }])).toBe(
      '[{"a":[2,{"c":null}],"b":1}]',
    );
  });
});
