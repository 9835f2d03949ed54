/**
 * The telemetry adapter as deployed: the SDK client module built with esbuild as for `dist/telemetrySdk.js`,
 * against the ingestion simulator; its fall-back to the installed package; and when the SDK loads and items
 * reach it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createTelemetry } from '../../src/adapters/telemetry';
import type { Outcome } from '../../src/core/outcome';
import { recordingLogger } from '../support/fakes';
import {
  connectionString,
  startIngestion,
  type Envelope,
  type IngestionSimulator,
} from '../../dev/simulators';
import { buildTelemetrySdk, type BuiltSdk } from '../support/telemetrySdkBuild';

let ing: IngestionSimulator;
let sdk: BuiltSdk;
beforeAll(async () => {
  [ing, sdk] = await Promise.all([startIngestion(), buildTelemetrySdk()]);
});
afterAll(async () => {
  sdk.remove();
  await ing.close();
});
beforeEach(() => ing.reset());

const MACHINE = '1e5bc9d7e413ddd7902c2932e418702b84d0cc07';

function outcome(overrides: Partial<Outcome> = {}): Outcome {
  return {
    schemaVersion: 1,
    correlationId: 'INC-TELEMETRY-1',
    machineId: MACHINE,
    status: 'Accepted',
    machineAction: { id: 'action-1', type: 'Unisolate', status: 'Pending' },
    error: null,
    trigger: 'serviceBus',
    requestedBy: null,
    receivedAt: '2025-01-01T00:00:00.000Z',
    completedAt: '2025-01-01T00:00:01.000Z',
    attempts: 2,
    ...overrides,
  };
}

const named = (name: string) => (e: Envelope) => e.data?.baseData?.name === name;

/** Tracks one of each item through `telemetry` and waits until ingestion has all four. */
async function trackEachKind(telemetry: ReturnType<typeof createTelemetry>): Promise<Envelope[]> {
  telemetry.trackOutcome(outcome(), 1234);
  telemetry.trackRedelivery(outcome({ status: 'Throttled' }), 3);
  telemetry.trackCompletion(
    outcome({
      status: 'Released',
      machineAction: { id: 'action-1', type: 'Unisolate', status: 'Succeeded' },
    }),
    60_000,
  );
  telemetry.trackDependency({
    name: 'POST /api/machines/{id}/unisolate',
    target: 'api.securitycenter.microsoft.com',
    resultCode: '201',
    success: true,
    durationMs: 42,
    correlationId: 'INC-TELEMETRY-1',
  });
  await telemetry.flush();
  return Promise.all([
    ing.waitFor(named('UnisolateOutcome')),
    ing.waitFor(named('UnisolateRedelivery')),
    ing.waitFor(named('UnisolateCompleted')),
    ing.waitFor((e) => e.data?.baseType === 'RemoteDependencyData'),
  ]).then((found) => found.flat());
}

it('runs the built SDK: every kind of item reaches ingestion, and nothing else is sent', async () => {
  const log = recordingLogger();
  const telemetry = createTelemetry({
    connectionString: connectionString(ing),
    log,
    sdkFile: sdk.file,
  });
  const [event, redelivery, completion, dependency] = await trackEachKind(telemetry);

  expect(event?.data?.baseData).toMatchObject({
    properties: {
      correlationId: 'INC-TELEMETRY-1',
      machineId: MACHINE,
      status: 'Accepted',
      trigger: 'serviceBus',
    },
    measurements: { durationMs: 1234, attempts: 2 },
  });
  expect(redelivery?.data?.baseData).toMatchObject({
    properties: { status: 'Throttled', deliveryCount: '3' },
  });
  expect(completion?.data?.baseData).toMatchObject({
    properties: { status: 'Released', machineActionStatus: 'Succeeded' },
    measurements: { timeToCompletionMs: 60_000 },
  });
  expect(dependency?.data?.baseData).toMatchObject({ resultCode: '201', success: true });
  // No fall-back to the installed package was needed (it would have said so), and no other paths.
  expect(log.lines).toEqual([]);
  expect(new Set(ing.requests.map((r) => `${r.method} ${r.path}`))).toEqual(new Set(['POST /v2.1/track']));
});

it('loads the installed package, saying so, when no SDK file was built', async () => {
  const log = recordingLogger();
  const telemetry = createTelemetry({
    connectionString: connectionString(ing),
    log,
    sdkFile: path.join(path.dirname(sdk.file), 'missing', 'telemetrySdk.js'),
  });
  await trackEachKind(telemetry);
  expect(log.lines).toEqual([expect.stringMatching(/^warn No telemetry SDK file was built/)]);
});

it('turns telemetry off, saying so, when the SDK file cannot load; releases are not affected', async () => {
  const dir = mkdtempSync(path.join(path.dirname(sdk.file), 'broken-'));
  const broken = path.join(dir, 'telemetrySdk.js');
  writeFileSync(broken, "throw new Error('SDK file broken');\n");
  try {
    const log = recordingLogger();
    const telemetry = createTelemetry({ connectionString: connectionString(ing), log, sdkFile: broken });
    telemetry.trackOutcome(outcome(), 10);
    await telemetry.flush();
    expect(log.lines).toEqual([
      expect.stringMatching(
        /^warn Application Insights could not be started; telemetry is off.*SDK file broken/,
      ),
    ]);
    expect(() => telemetry.trackOutcome(outcome(), 10)).not.toThrow();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('when the SDK loads', () => {
  const fakeClient = () => ({
    trackEvent: jest.fn(),
    trackDependency: jest.fn(),
    flush: jest.fn(async () => undefined),
  });
  afterEach(() => jest.useRealTimers());

  it('loads it a while after the first item, so the invocation that tracked it answers first', async () => {
    jest.useFakeTimers();
    const client = fakeClient();
    const load = jest.fn(async () => client);
    const telemetry = createTelemetry({
      connectionString: 'InstrumentationKey=k',
      log: recordingLogger(),
      load,
    });
    telemetry.trackOutcome(outcome(), 10);
    await jest.advanceTimersByTimeAsync(100);
    expect(load).not.toHaveBeenCalled();
    await jest.advanceTimersByTimeAsync(1000);
    expect(load).toHaveBeenCalledTimes(1);
    expect(client.trackEvent).toHaveBeenCalledTimes(1);
  });

  it('hands items to the SDK a timer tick after they are tracked, in one batch, not during the request', async () => {
    jest.useFakeTimers();
    const client = fakeClient();
    const telemetry = createTelemetry({
      connectionString: 'InstrumentationKey=k',
      log: recordingLogger(),
      load: async () => client,
    });
    await telemetry.ready();
    telemetry.trackOutcome(outcome(), 10);
    telemetry.trackOutcome(outcome({ correlationId: 'INC-TELEMETRY-2' }), 20);
    expect(client.trackEvent).not.toHaveBeenCalled();
    await jest.advanceTimersByTimeAsync(100);
    const tracked = client.trackEvent.mock.calls as [{ properties: { correlationId: string } }][];
    expect(tracked.map(([e]) => e.properties.correlationId)).toEqual(['INC-TELEMETRY-1', 'INC-TELEMETRY-2']);
  });

  it('loads it at once when asked to flush, with every item tracked before', async () => {
    const client = fakeClient();
    const load = jest.fn(async () => client);
    const telemetry = createTelemetry({
      connectionString: 'InstrumentationKey=k',
      log: recordingLogger(),
      load,
      loadDelayMs: 3_600_000,
    });
    telemetry.trackOutcome(outcome(), 10);
    telemetry.trackOutcome(outcome({ correlationId: 'INC-TELEMETRY-2' }), 20);
    await telemetry.flush();
    expect(client.trackEvent).toHaveBeenCalledTimes(2);
    expect(client.flush).toHaveBeenCalledTimes(1);
  });
});
