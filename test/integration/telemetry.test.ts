/**
 * Telemetry through the real applicationinsights SDK to the ingestion simulator: one UnisolateOutcome event
 * per outcome with the documented properties and measurements, the MDE call as a dependency, and an ingestion
 * outage that changes nothing in the outcome.
 */
import { startEnvironment, type LocalEnvironment } from '../../dev/environment';
import { invokeHttp, loadApp } from '../../dev/host';
import { machineIdFor, type Envelope } from '../../dev/simulators';

let env: LocalEnvironment;
beforeAll(async () => {
  await loadApp();
  env = await startEnvironment();
});
afterAll(async () => env.close());

function baseData(envelope: Envelope): Record<string, unknown> {
  return (envelope.data as { baseData: Record<string, unknown> }).baseData;
}

it('sends one UnisolateOutcome event per outcome, with the MDE call as a dependency', async () => {
  const deps = env.install({ CHECK_ISOLATION_STATE: 'false' });
  const name = 'telemetry-1.contoso.local';
  const id = env.defender.addMachine({ id: machineIdFor(name), computerDnsName: name, isolated: true }).id;
  const result = await invokeHttp('unisolateMachine', {
    params: { machineId: id },
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ comment: 'clean', correlationId: 'INC-TEL-1' }),
  });
  const invalid = await invokeHttp('unisolate', {
    headers: { 'content-type': 'application/json' },
    body: '{}',
  });
  expect([result.status, invalid.status]).toEqual([201, 400]);
  await deps.telemetry.flush();
  const events = await env.ingestion.waitFor(
    (e) => e.data?.baseType === 'EventData' && baseData(e).name === 'UnisolateOutcome',
    { count: 2, timeoutMs: 15_000 },
  );
  const accepted = events
    .map(baseData)
    .find((d) => (d.properties as Record<string, string>).status === 'Accepted')!;
  expect(accepted.properties).toMatchObject({
    correlationId: 'INC-TEL-1',
    machineId: id,
    status: 'Accepted',
    trigger: 'http',
    machineActionId: (result.body as { machineAction: { id: string } }).machineAction.id,
    errorCode: '',
  });
  expect(accepted.measurements).toMatchObject({ attempts: 1, durationMs: expect.any(Number) });
  const invalidEvent = events
    .map(baseData)
    .find((d) => (d.properties as Record<string, string>).status === 'Invalid');
  expect(invalidEvent?.properties).toMatchObject({ errorCode: 'InvalidRequest' });
  expect(env.ingestion.events('UnisolateOutcome')).toHaveLength(2);
  const dependency = await env.ingestion.waitFor((e) => e.data?.baseType === 'RemoteDependencyData', {
    timeoutMs: 15_000,
  });
  expect(baseData(dependency[0]!)).toMatchObject({ resultCode: '201', success: true });
}, 30_000);
