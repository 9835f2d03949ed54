/**
 * The SDK client as the app configures it (`createSdkClient`) against the ingestion simulator: what it sends,
 * and that it sends nothing anywhere else, even once its background jobs (remote configuration, statsbeat) are
 * due. Every test runs twice: as built into `dist/telemetrySdk.js` (what the app loads; its exporter and
 * remote-configuration poller are copies of their own, `scripts/telemetrySdkBuild.cjs`) and with the installed
 * package (the fallback when that file is missing).
 */
import dns from 'node:dns';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TelemetryClient } from 'applicationinsights';
import { createSdkClient } from '../../src/adapters/telemetrySdk';
import { buildTelemetrySdk, type BuiltSdk } from '../support/telemetrySdkBuild';
import { isLoopbackHost, refusedConnections, TELEMETRY_ENV_DEFAULTS } from '../../dev/loopbackOnly';
import { connectionString, startIngestion, type IngestionSimulator } from '../../dev/simulators';

/** The variables that switch the SDK's self-reporting off, and those that spare it the VM metadata probe. */
const SDK_SWITCHES = [
  ...Object.keys(TELEMETRY_ENV_DEFAULTS),
  'APPLICATION_INSIGHTS_NO_STATSBEAT',
  'FUNCTIONS_WORKER_RUNTIME',
];

let ing: IngestionSimulator;
let saved: Record<string, string | undefined>;
const clients: TelemetryClient[] = [];
let bundled: BuiltSdk;

beforeAll(async () => {
  [ing, bundled] = await Promise.all([startIngestion(), buildTelemetrySdk()]);
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.shutdown()));
  await ing.close();
  bundled.remove();
});
beforeEach(() => {
  ing.reset();
  // What the app does must suffice: none of the test guard's telemetry defaults (statsbeat off,
  // WEBSITE_SITE_NAME) apply here.
  saved = Object.fromEntries(SDK_SWITCHES.map((name) => [name, process.env[name]]));
  for (const name of SDK_SWITCHES) delete process.env[name];
});
afterEach(() => {
  jest.useRealTimers();
  jest.restoreAllMocks();
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

type Create = typeof createSdkClient;
const variants: [string, () => Create][] = [
  ['installed package', () => createSdkClient],
  [
    'as built into dist/telemetrySdk.js',
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    () => (require(bundled.file) as { createSdkClient: Create }).createSdkClient,
  ],
];

describe.each(variants)('SDK client (%s)', (_name, create) => {
  async function client(): Promise<TelemetryClient> {
    const created = await create()({ connectionString: connectionString(ing) });
    clients.push(created);
    return created;
  }

  function dependency(i: number): Parameters<TelemetryClient['trackDependency']>[0] {
    return {
      name: 'POST /api/machines/{id}/unisolate',
      data: 'POST /api/machines/{id}/unisolate',
      target: 'api.securitycenter.microsoft.com',
      duration: 12,
      resultCode: '201',
      success: true,
      dependencyTypeName: 'HTTP',
      properties: { correlationId: `INC-${i}`, 'http.method': 'POST', 'http.status_code': 201 },
    };
  }

  it('talks to the ingestion endpoint only, also once remote configuration and statsbeat are due', async () => {
    // Every host name the process looks up (the loopback guard answers ENOTFOUND for all but localhost) and
    // every address it connects to (the guard refuses all but loopback) is seen here.
    const lookup = jest.spyOn(dns, 'lookup');
    const refusedBefore = refusedConnections().length;
    // The remote-configuration poller starts 5-15 s after the exporters, statsbeat's first export after 15 s.
    jest.useFakeTimers({
      doNotFake: ['Date', 'hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate'],
    });
    const sdk = await client();
    sdk.trackEvent({ name: 'Probe', properties: { k: 'v' } });
    await jest.advanceTimersByTimeAsync(20_000);
    jest.useRealTimers();
    await sdk.flush();
    await ing.waitFor((e) => e.data?.baseData?.name === 'Probe');
    // Whatever the due jobs started has had time to reach DNS.
    await new Promise((resolve) => setTimeout(resolve, 200));

    const looked = lookup.mock.calls.map(([host]) => String(host)).filter((host) => !isLoopbackHost(host));
    const refused = refusedConnections()
      .slice(refusedBefore)
      .map((r) => `${r.host ?? '?'}:${String(r.port)}`);
    expect({ looked, refused }).toEqual({ looked: [], refused: [] });
    expect(ing.requests.map((r) => `${r.method} ${r.path}`)).toEqual(
      ing.requests.map(() => 'POST /v2.1/track'),
    );
  });

  it('keeps every dependency of a burst (no sampling)', async () => {
    const sdk = await client();
    for (let i = 0; i < 300; i += 1) sdk.trackDependency(dependency(i));
    await sdk.flush();
    const received = await ing.waitFor((e) => e.data?.baseType === 'RemoteDependencyData', { count: 300 });
    expect(new Set(received.map((e) => e.data?.baseData?.properties?.correlationId)).size).toBe(300);
    expect(received[0]?.data?.baseData).toMatchObject({ resultCode: '201', success: true });
  });

  it('writes nothing to disk when ingestion refuses a batch (no offline cache)', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'mde-telemetry-cache-'));
    try {
      // The exporter's offline storage lives under os.tmpdir(), read when the client is created.
      jest.spyOn(os, 'tmpdir').mockReturnValue(tmp);
      const sdk = await client();
      // 401 is "retriable" for the exporter (it would store the batch to resend it) and not retried in place.
      ing.setStatus(401);
      sdk.trackEvent({ name: 'Refused' });
      await sdk.flush();
      expect(ing.rejectedBatches).toBeGreaterThanOrEqual(1);
      expect(readdirSync(tmp, { recursive: true })).toEqual([]);
    } finally {
      ing.setStatus(undefined);
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
