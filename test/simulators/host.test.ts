/**
 * The local Functions host of `dev/host.ts` (used by every function test, the sandbox and the benchmarks):
 * its router, its check of binding expressions, and what it reports of an invocation.
 */
import { setDependencies } from '../../src/composition';
import { parseSettings } from '../../src/config';
import { invokeHttp, invokeServiceBus, loadApp, registrations, request, route } from '../../dev/host';
import { FakeDefender, fakeDeps, MACHINE_ID } from '../support/fakes';

beforeAll(() => loadApp());
beforeEach(() => {
  const { deps, telemetry } = fakeDeps(new FakeDefender());
  setDependencies({
    release: deps,
    config: parseSettings({ KEY_VAULT_URL: 'https://kv.example/' }).config,
    maxDeliveryCount: 10,
    telemetry,
  });
});
afterEach(() => setDependencies());

/** The function and parameters a request is routed to. */
const routed = (method: string, url: string) => {
  const found = route(method, url);
  return found && [found.registration.name, found.params];
};

describe('router', () => {
  it('matches the method and the route template under /api/, literals case-insensitively', () => {
    expect(routed('POST', `/api/machines/${MACHINE_ID}/unisolate`)).toEqual([
      'unisolateMachine',
      { machineId: MACHINE_ID },
    ]);
    expect(routed('post', 'https://fn.example.test/API/Unisolate')).toEqual(['unisolate', {}]);
    expect(routed('GET', '/api/unisolate/INC%3A42?x=1')).toEqual([
      'releaseStatus',
      { correlationId: 'INC:42' },
    ]);
    expect(routed('GET', '/api/openapi.json')).toEqual(['openapi', {}]);
  });

  it('finds no function for another method, another prefix, an empty parameter or extra segments', () => {
    expect(routed('GET', '/api/unisolate')).toBeUndefined();
    expect(routed('POST', '/unisolate')).toBeUndefined();
    expect(routed('POST', '/api/machines//unisolate')).toBeUndefined();
    expect(routed('POST', `/api/machines/${MACHINE_ID}/unisolate/now`)).toBeUndefined();
  });

  it('keeps a malformed escape as sent instead of failing the request', () => {
    expect(routed('GET', '/api/unisolate/100%')).toEqual(['releaseStatus', { correlationId: '100%' }]);
  });

  it('answers 404 for a request no function serves, invoking nothing', async () => {
    const result = await request('http://localhost:7071/api/nothing', { method: 'POST', body: '{}' });
    expect([result.status, result.messages]).toEqual([404, []]);
  });
});

describe('indexing', () => {
  it('refuses an app whose binding expression names no app setting, as the host does', async () => {
    const saved = process.env.RESPONSE_QUEUE_NAME;
    delete process.env.RESPONSE_QUEUE_NAME;
    try {
      await expect(loadApp()).rejects.toThrow(/unisolate: %RESPONSE_QUEUE_NAME%/);
    } finally {
      process.env.RESPONSE_QUEUE_NAME = saved;
    }
  });
});

describe('invocation results', () => {
  it('reports output messages by queue name, resolved from the app settings', async () => {
    const saved = process.env.RESPONSE_QUEUE_NAME;
    process.env.RESPONSE_QUEUE_NAME = 'answers-elsewhere';
    try {
      const result = await invokeServiceBus('unisolateServiceBus', '{oops', { messageId: 'm-1' });
      expect(Object.keys(result.queues)).toEqual(['answers-elsewhere']);
      expect(result.queues['answers-elsewhere']).toEqual([
        expect.objectContaining({ status: 'Invalid', correlationId: 'm-1' }),
      ]);
      expect(result.messages).toEqual(result.queues['answers-elsewhere']);
    } finally {
      process.env.RESPONSE_QUEUE_NAME = saved;
    }
  });

  it('answers 500 with no output when an HTTP function throws, and reports the error', async () => {
    const reg = registrations().get('openapi')!;
    const handler = reg.handler;
    reg.handler = () => {
      throw new Error('boom');
    };
    try {
      const result = await invokeHttp('openapi');
      expect([result.status, result.error?.message, result.messages]).toEqual([500, 'boom', []]);
    } finally {
      reg.handler = handler;
    }
  });
});
