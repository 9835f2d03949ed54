/**
 * 150 requests at once on one instance, against a Defender simulator enforcing MDE's real limits
 * (100/minute, 1500/hour) on the same scaled clock as the app: the app's limiter paces them, so MDE never
 * answers 429, and every request ends in exactly one outcome.
 */
import { ScaledClock } from '../../dev/clock';
import { startEnvironment, type LocalEnvironment } from '../../dev/environment';
import { invokeServiceBus, loadApp } from '../../dev/host';
import { machineIdFor } from '../../dev/simulators';

// 1 virtual minute = 3 real seconds.
const clock = new ScaledClock(20);
let env: LocalEnvironment;

beforeAll(async () => {
  await loadApp();
  env = await startEnvironment({
    defender: { clock, limits: { perMinute: 100, perHour: 1500 } },
    telemetry: false,
  });
});
afterAll(async () => env.close());

it('150 Service Bus requests at once: no 429 caused by us, one outcome each', async () => {
  env.install({ MDE_RETRY_BUDGET_MS: '600000' }, clock);
  const ids = Array.from({ length: 150 }, (_, i) => {
    const name = `burst-${i}.contoso.local`;
    return env.defender.addMachine({ id: machineIdFor(name), computerDnsName: name, isolated: true }).id;
  });
  const results = await Promise.all(
    ids.map((machineId, i) =>
      invokeServiceBus('unisolateServiceBus', { machineId, comment: 'x' }, { messageId: `m${i}` }),
    ),
  );
  expect(env.defender.throttledCount).toBe(0);
  expect(results.map((r) => r.messages.length)).toEqual(ids.map(() => 1));
  expect(results.map((r) => (r.messages[0] as { status: string }).status)).toEqual(ids.map(() => 'Accepted'));
  expect(env.defender.counts.unisolate).toBe(150);
  // The limiter made the last 50 wait for the next minute window.
  expect(Math.max(...clock.sleeps)).toBeGreaterThan(30_000);
}, 60_000);
