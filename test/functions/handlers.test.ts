/**
 * The registered functions, invoked through the local host as the Functions worker invokes them, over fake
 * core dependencies: the mapping of outcomes to HTTP responses, queue messages and Service Bus semantics.
 */
import { getDependencies, setDependencies, type AppDependencies } from '../../src/composition';
import { parseSettings } from '../../src/config';
import { FakeDefender, fakeDeps, MACHINE_ID, TransportError } from '../support/fakes';
import { invokeHttp, invokeServiceBus, loadApp, registrations } from '../../dev/host';

function install(defender: FakeDefender, maxDeliveryCount = 10) {
  const { deps, telemetry } = fakeDeps(defender);
  const app: AppDependencies = {
    release: deps,
    config: parseSettings({ KEY_VAULT_URL: 'https://kv.example/' }).config,
    maxDeliveryCount,
    telemetry,
  };
  setDependencies(app);
  return { telemetry };
}

beforeAll(async () => {
  const registered = await loadApp();
  expect([...registered.keys()]).toEqual(
    expect.arrayContaining(['unisolate', 'unisolateMachine', 'unisolateServiceBus']),
  );
});
afterEach(() => setDependencies());

const json = { 'content-type': 'application/json' };

describe('HTTP triggers', () => {
  it('registers the documented routes, auth level and response queue', () => {
    const reg = registrations();
    const routes = ['unisolateMachine', 'unisolate', 'unisolateServiceBus'].map((name) => {
      const r = reg.get(name)!;
      const trigger = Object.values(r.bindings).find((b) => b.direction === 'in')!;
      const out = Object.values(r.bindings).find((b) => b.type === 'serviceBus' && b.direction === 'out')!;
      return [
        r.name,
        trigger.type,
        trigger.route ?? trigger.queueName,
        trigger.authLevel,
        out.queueName,
        out.connection,
      ];
    });
    expect(routes).toEqual(
      expect.arrayContaining([
        [
          'unisolateMachine',
          'httpTrigger',
          'machines/{machineId}/unisolate',
          'function',
          '%RESPONSE_QUEUE_NAME%',
          'ServiceBusConnection',
        ],
        [
          'unisolate',
          'httpTrigger',
          'unisolate',
          'function',
          '%RESPONSE_QUEUE_NAME%',
          'ServiceBusConnection',
        ],
        [
          'unisolateServiceBus',
          'serviceBusTrigger',
          '%REQUEST_QUEUE_NAME%',
          undefined,
          '%RESPONSE_QUEUE_NAME%',
          'ServiceBusConnection',
        ],
      ]),
    );
  });

  it('answers 201 Accepted in MDE shape on the machine route and sends the same outcome to the queue', async () => {
    const defender = new FakeDefender();
    const { telemetry } = install(defender);
    const result = await invokeHttp('unisolateMachine', {
      params: { machineId: MACHINE_ID.toUpperCase() },
      headers: json,
      body: JSON.stringify({ Comment: 'clean', correlationId: 'INC1' }),
    });
    expect(result.status).toBe(201);
    expect(result.body).toMatchObject({
      schemaVersion: 1,
      status: 'Accepted',
      machineId: MACHINE_ID,
      correlationId: 'INC1',
      trigger: 'http',
      attempts: 1,
      error: null,
    });
    expect(result.messages).toEqual([result.body]);
    expect(defender.unisolateCalls).toEqual([{ machineId: MACHINE_ID, comment: 'clean', timeoutMs: 20_000 }]);
    expect(telemetry.outcomes).toHaveLength(1);
  });

  it('answers 400 Invalid with every problem and never calls MDE', async () => {
    const defender = new FakeDefender();
    install(defender);
    const result = await invokeHttp('unisolate', { headers: json, body: '{"machineId":"nope"}' });
    expect(result.status).toBe(400);
    expect(result.body).toMatchObject({ status: 'Invalid', error: { code: 'InvalidRequest' } });
    expect((result.body as { error: { message: string } }).error.message).toMatch(
      /machineId must be 40 hexadecimal.*comment is required/,
    );
    expect(result.messages).toHaveLength(1);
    expect(defender.unisolateCalls).toHaveLength(0);
  });

  it('reports malformed JSON with its position, a wrong content type with 415, a huge body with 413', async () => {
    install(new FakeDefender());
    const bad = await invokeHttp('unisolate', { headers: json, body: '{"comment": "x",}' });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toMatch(/line 1, column 17 \(position 16\)/);
    const text = await invokeHttp('unisolate', { headers: { 'content-type': 'text/plain' }, body: '{}' });
    expect(text.status).toBe(415);
    // No Content-Type declared (fetch then reports text/plain;charset=UTF-8): the body must parse as JSON.
    const undeclared = await invokeHttp('unisolate', {
      headers: {},
      body: JSON.stringify({ machineId: MACHINE_ID, comment: 'x' }),
    });
    expect(undeclared.status).toBe(201);
    const huge = await invokeHttp('unisolate', {
      headers: json,
      body: JSON.stringify({ comment: 'x'.repeat(70_000) }),
    });
    expect(huge.status).toBe(413);
  });

  it.each([
    [{ status: 404, body: { error: { code: 'ResourceNotFound', message: 'nope' } } }, 404, 'NotFound'],
    [{ status: 403, body: { error: { code: 'Forbidden', message: 'no' } } }, 502, 'Forbidden'],
    [
      {
        status: 400,
        body: { error: { code: 'ActiveRequestAlreadyExists', message: 'Action is already in progress' } },
      },
      200,
      'AlreadyInProgress',
    ],
  ])('maps MDE %j to HTTP %i %s', async (answer, http, status) => {
    install(new FakeDefender([answer]));
    const result = await invokeHttp('unisolate', {
      headers: json,
      body: JSON.stringify({ machineId: MACHINE_ID, comment: 'x' }),
    });
    expect([result.status, (result.body as { status: string }).status]).toEqual([http, status]);
  });

  it('answers 429 Throttled with Retry-After when MDE throttles beyond the budget', async () => {
    install(new FakeDefender([{ status: 429, retryAfter: '120', body: {} }]));
    const result = await invokeHttp('unisolate', {
      headers: json,
      body: JSON.stringify({ machineId: MACHINE_ID, comment: 'x' }),
    });
    expect(result.status).toBe(429);
    expect(result.headers.get('retry-after')).toBe('120');
    expect(result.body).toMatchObject({ status: 'Throttled', error: { code: 'MdeThrottled' } });
  });
});

describe('Service Bus trigger', () => {
  const body = { machineId: MACHINE_ID, comment: 'clean' };

  it.each([
    ['an object', body],
    ['a JSON string', JSON.stringify(body)],
    ['bytes', Buffer.from(JSON.stringify(body))],
  ])('accepts %s and uses the message correlation id', async (_, message) => {
    install(new FakeDefender());
    const result = await invokeServiceBus('unisolateServiceBus', message, {
      correlationId: 'SB-1',
      messageId: 'm1',
    });
    expect(result.error).toBeUndefined();
    expect(result.messages).toEqual([
      expect.objectContaining({ status: 'Accepted', correlationId: 'SB-1', trigger: 'serviceBus' }),
    ]);
  });

  it('reports Invalid / NotFound and completes (no throw)', async () => {
    install(new FakeDefender([{ status: 404, body: {} }]));
    const invalid = await invokeServiceBus('unisolateServiceBus', '{oops', { messageId: 'm2' });
    expect(invalid.messages).toEqual([expect.objectContaining({ status: 'Invalid', correlationId: 'm2' })]);
    const missing = await invokeServiceBus('unisolateServiceBus', body);
    expect(missing.messages).toEqual([expect.objectContaining({ status: 'NotFound' })]);
  });

  it('caps a body at 256 KiB in every form: text, bytes and an object the library already parsed', async () => {
    const defender = new FakeDefender();
    install(defender);
    const big = { machineId: MACHINE_ID, comment: 'x', note: 'y'.repeat(300 * 1024) };
    const text = JSON.stringify(big);
    for (const message of [big, text, Buffer.from(text)]) {
      const result = await invokeServiceBus('unisolateServiceBus', message, { messageId: 'big-1' });
      expect(result.messages).toEqual([
        expect.objectContaining({
          status: 'Invalid',
          error: expect.objectContaining({ code: 'RequestTooLarge' }),
        }),
      ]);
    }
    // The host sends the text; the library hands the handler the parsed object.
    const viaWorker = await invokeServiceBus('unisolateServiceBus', text, { messageId: 'big-2' });
    expect(viaWorker.messages).toEqual([
      expect.objectContaining({ status: 'Invalid', correlationId: 'big-2' }),
    ]);
    // Just under the cap still goes through.
    const fits = { machineId: MACHINE_ID, comment: 'x', note: 'y'.repeat(250 * 1024) };
    const ok = await invokeServiceBus('unisolateServiceBus', fits, { messageId: 'fits-1' });
    expect(ok.messages).toEqual([expect.objectContaining({ status: 'Accepted' })]);
    expect(defender.unisolateCalls).toHaveLength(1);
  });

  it('throws on a transient failure for redelivery, and reports it on the last delivery', async () => {
    const reset = () => new TransportError('network', 'ECONNRESET', 'reset');
    install(new FakeDefender(Array.from({ length: 20 }, reset)), 3);
    const early = await invokeServiceBus('unisolateServiceBus', body, { deliveryCount: 2 });
    expect(early.error?.name).toBe('RedeliveryRequested');
    expect(early.messages).toEqual([]);
    const last = await invokeServiceBus('unisolateServiceBus', body, { deliveryCount: 3 });
    expect(last.error).toBeUndefined();
    expect(last.messages).toEqual([
      expect.objectContaining({
        status: 'Failed',
        error: expect.objectContaining({ code: 'MdeUnavailable' }),
      }),
    ]);
  });
});

describe('last-resort guard', () => {
  afterEach(() => jest.restoreAllMocks());
  const body = JSON.stringify({ machineId: MACHINE_ID, comment: 'x', correlationId: 'INC-BUG' });

  it('turns an unexpected error into one Failed outcome (HTTP 502), not a bare host 500', async () => {
    install(new FakeDefender());
    // A bug deep in the release (the budget throws something that is not an UnisolateError).
    jest.spyOn(getDependencies().release.budget, 'acquire').mockRejectedValue(new Error('bug with a detail'));
    const result = await invokeHttp('unisolate', { headers: json, body });
    expect(result.status).toBe(502);
    expect(result.body).toMatchObject({ status: 'Failed', error: { code: 'InternalError' } });
    expect(JSON.stringify(result.body)).not.toContain('bug with a detail');
    expect(result.messages).toHaveLength(1);
  });

  it('Service Bus: redelivers an unexpected error, and reports it on the last delivery', async () => {
    install(new FakeDefender(), 3);
    // A bug deep in the release (the budget throws something that is not an UnisolateError).
    jest.spyOn(getDependencies().release.budget, 'acquire').mockRejectedValue(new Error('bug'));
    const early = await invokeServiceBus('unisolateServiceBus', body, {
      deliveryCount: 1,
      correlationId: 'SB-BUG',
    });
    expect(early.error?.message).toBe('bug');
    const last = await invokeServiceBus('unisolateServiceBus', body, {
      deliveryCount: 3,
      correlationId: 'SB-BUG',
    });
    expect(last.messages).toEqual([
      expect.objectContaining({
        status: 'Failed',
        correlationId: 'SB-BUG',
        error: expect.objectContaining({ code: 'InternalError' }),
      }),
    ]);
  });
});
