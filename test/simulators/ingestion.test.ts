/**
 * The local Application Insights ingestion simulator: what the real SDK sends arrives and is recorded, and its
 * faults (rejected batches, slow answers, refused connections) behave as the SDK meets them in Azure.
 */
import https from 'node:https';
import { gzipSync } from 'node:zlib';
import * as appInsights from 'applicationinsights';
import axios from 'axios';
import {
  connectionString,
  shutdownApplicationInsights,
  startIngestion,
  type IngestionSimulator,
} from '../../dev/simulators';
import { refusedConnections } from '../../dev/loopbackOnly';

/** POSTs raw bytes to the simulator (so gzip can be tested independently of the SDK). */
function post(
  url: string,
  body: Buffer,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method: 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const envelope = (name: string): Record<string, unknown> => ({
  name: 'Microsoft.ApplicationInsights.Event',
  time: new Date().toISOString(),
  iKey: '00000000-0000-0000-0000-000000000000',
  data: { baseType: 'EventData', baseData: { ver: 2, name, properties: { k: 'v' } } },
});

describe('Application Insights ingestion simulator', () => {
  let ing: IngestionSimulator;
  const refusedBefore = refusedConnections().length;

  beforeAll(async () => {
    ing = await startIngestion();
    // The exact setup the app can use in tests: everything pointed at the simulator, no live metrics, no
    // auto-collection noise, no disk retry cache.
    appInsights
      .setup(connectionString(ing))
      .setSendLiveMetrics(false)
      .setAutoCollectConsole(false)
      .setAutoCollectExceptions(false)
      .setAutoCollectPerformance(false, false)
      .setAutoCollectPreAggregatedMetrics(false)
      .setAutoCollectHeartbeat(false)
      .setAutoCollectRequests(false)
      .setAutoCollectDependencies(false)
      .setUseDiskRetryCaching(false)
      // Default tracing uses a 5 traces/s rate-limited sampler that drops spans right after start-up, so
      // trackDependency would be flaky; sample everything instead.
      .setAzureMonitorOptions({ tracesPerSecond: 0, samplingRatio: 1 })
      .start();
  });

  afterAll(async () => {
    // shutdown() + dispose() + stopping the exporter's OneSettings poller, so nothing outlives this file.
    await shutdownApplicationInsights(appInsights);
    await ing.close();
  });

  beforeEach(() => ing.reset());

  test('the real SDK: trackEvent + flush() delivers the custom event', async () => {
    appInsights.defaultClient.trackEvent({ name: 'X', properties: { a: 'b' } });
    await appInsights.defaultClient.flush();
    const [event] = await ing.waitFor((e) => e.data?.baseData?.name === 'X', { timeoutMs: 3000 });
    expect(event).toMatchObject({
      name: 'Microsoft.ApplicationInsights.Event',
      iKey: '00000000-0000-0000-0000-000000000000',
      data: { baseType: 'EventData', baseData: { name: 'X', properties: { a: 'b' } } },
    });
    expect(ing.events('X')).toHaveLength(1);
    expect(ing.events('other')).toHaveLength(0);
    const track = ing.requests.find((r) => r.path === '/v2.1/track')!;
    expect(track.method).toBe('POST');
    // Nothing else was contacted: no statsbeat, no live metrics, no metadata probe.
    expect(ing.requests.every((r) => r.path === '/v2.1/track')).toBe(true);
    expect(refusedConnections().length).toBe(refusedBefore);
  });

  test('the real SDK: trackDependency shows up in dependencies()', async () => {
    appInsights.defaultClient.trackDependency({
      name: 'POST /api/machines/{id}/unisolate',
      data: 'https://api.securitycenter.microsoft.com/api/machines/x/unisolate',
      target: 'api.securitycenter.microsoft.com',
      dependencyTypeName: 'HTTP',
      duration: 12,
      resultCode: 201,
      success: true,
    });
    await appInsights.defaultClient.flush();
    const deps = await ing.waitFor((e) => e.data?.baseType === 'RemoteDependencyData', { timeoutMs: 3000 });
    expect(deps[0]!.data?.baseData?.name).toBe('POST /api/machines/{id}/unisolate');
    expect(ing.dependencies()).toHaveLength(1);
  });

  test('accepts gzip and plain JSON arrays and answers with item counts', async () => {
    const body = JSON.stringify([envelope('gz-1'), envelope('gz-2')]);
    const gz = await post(`${ing.url}/v2.1/track`, gzipSync(body), {
      'content-type': 'application/json',
      'content-encoding': 'gzip',
    });
    expect(gz.status).toBe(200);
    expect(JSON.parse(gz.body)).toEqual({ itemsReceived: 2, itemsAccepted: 2, appId: null, errors: [] });
    const plain = await post(`${ing.url}/v2.1/track`, Buffer.from(JSON.stringify([envelope('plain')])), {
      'content-type': 'application/json',
    });
    expect(JSON.parse(plain.body)).toMatchObject({ itemsReceived: 1, itemsAccepted: 1 });
    expect(ing.events().map((e) => e.data?.baseData?.name)).toEqual(['gz-1', 'gz-2', 'plain']);
    expect(ing.batches).toBe(2);
  });

  test('setStatus(503) rejects batches (nothing stored) until cleared', async () => {
    ing.setStatus(503);
    const res = await post(`${ing.url}/v2.1/track`, Buffer.from(JSON.stringify([envelope('lost')])), {});
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toMatchObject({ itemsReceived: 1, itemsAccepted: 0 });
    expect(ing.envelopes).toHaveLength(0);
    expect(ing.rejectedBatches).toBe(1);
    ing.setStatus(undefined);
    expect(
      (await post(`${ing.url}/v2.1/track`, Buffer.from(JSON.stringify([envelope('ok')])), {})).status,
    ).toBe(200);
    expect(ing.events('ok')).toHaveLength(1);
  });

  test('the real SDK drops a batch ingestion rejects (400) and keeps working', async () => {
    // (A 503 works too, but the exporter's HTTP pipeline then retries ~3 times with back-off, so flush()
    // takes ~3 s; 400 is not retried.)
    ing.setStatus(400);
    appInsights.defaultClient.trackEvent({ name: 'rejected' });
    await appInsights.defaultClient.flush();
    expect(ing.rejectedBatches).toBe(1);
    expect(ing.envelopes).toHaveLength(0);
    ing.setStatus(undefined);
    appInsights.defaultClient.trackEvent({ name: 'accepted' });
    await appInsights.defaultClient.flush();
    await ing.waitFor((e) => e.data?.baseData?.name === 'accepted', { timeoutMs: 3000 });
    expect(ing.events('rejected')).toHaveLength(0);
  });

  test('slow mode delays answers; down mode refuses connections; other paths answer fast', async () => {
    ing.setSlow(150);
    const t0 = Date.now();
    await post(`${ing.url}/v2.1/track`, Buffer.from('[]'), {});
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    ing.setSlow(0);

    const ping = await axios.post(
      `${ing.url}/QuickPulseService.svc/ping?ikey=x`,
      {},
      { validateStatus: () => true },
    );
    expect(ping.status).toBe(200);
    expect(ping.headers['x-ms-qps-subscribed']).toBe('false');
    expect((await axios.get(`${ing.url}/anything`)).status).toBe(200);

    await ing.setDown(true);
    const err: unknown = await post(`${ing.url}/v2.1/track`, Buffer.from('[]'), {}).catch((e: unknown) => e);
    expect((err as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');
    await ing.setDown(false);
    expect((await post(`${ing.url}/v2.1/track`, Buffer.from('[]'), {})).status).toBe(200);
  });

  test('connectionString() points ingestion and live metrics at the simulator', () => {
    expect(connectionString(ing)).toBe(
      `InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=${ing.url}/;LiveEndpoint=${ing.url}/`,
    );
  });
});
