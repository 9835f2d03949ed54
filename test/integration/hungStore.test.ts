/**
 * A state table that accepts connections and never answers: the real Table Storage adapter against a socket
 * that swallows every request. A request must cost at most one short operation timeout (the circuit breaker
 * then answers for the store at once), never one per device or per step, and still end in its outcomes.
 */
import net from 'node:net';
import { withCircuitBreaker } from '../../src/adapters/circuitBreaker';
import { createReleaseStore } from '../../src/adapters/releaseStore';
import { handleRequest } from '../../src/core/pipeline';
import { SharedBudget } from '../../src/core/sharedBudget';
import { AZURITE_ACCOUNT, AZURITE_KEY } from '../../dev/azurite';
import { FakeDefender, fakeDeps, recordingLogger, stateDeps } from '../support/fakes';

let server: net.Server;
let port: number;
let requests = 0;
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('data', (chunk) => {
      requests += chunk.toString('latin1').match(/^(GET|POST|PUT|PATCH|DELETE|MERGE) /gm)?.length ?? 0;
    });
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;
});
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => server.close(resolve));
});

it('costs a bulk of ten devices one operation timeout, and the next requests none; every device is released', async () => {
  const log = recordingLogger();
  const { deps, defender, clock } = fakeDeps(new FakeDefender());
  const table = createReleaseStore(
    {
      connectionString:
        `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};` +
        `TableEndpoint=http://127.0.0.1:${port}/${AZURITE_ACCOUNT};`,
    },
    { operationTimeoutMs: 300 },
  );
  const store = withCircuitBreaker(table, { now: clock.now, log });
  const budget = new SharedBudget({
    store,
    limits: { perApi: { perMinute: 100, perHour: 1500 }, tracker: { perMinute: 2, perHour: 60 } },
    now: clock.now,
    log,
  });
  const devices = Array.from({ length: 10 }, (_, i) => ({ machineId: i.toString(16).padStart(40, 'b') }));
  const pipelineDeps = {
    ...deps,
    budget,
    safety: { checkIsolationState: false, releasePolicy: null },
    state: stateDeps(store),
  };
  const send = (key: string, body: unknown) =>
    handleRequest(
      { body, trigger: 'serviceBus', canRedeliver: true, deliveryCount: 1, caller: null, key },
      pipelineDeps,
    );
  const answer = await send('message-1', { comment: 'incident closed', correlationId: 'INC-HUNG', devices });
  expect(answer.outcomes.map((o) => o.status)).toEqual(Array.from({ length: 10 }, () => 'Accepted'));
  // The next requests do not wait for the table again.
  for (const n of [2, 3]) {
    const next = await send(`message-${n}`, { comment: 'x', machineId: n.toString(16).padStart(40, 'c') });
    expect(next.outcomes[0]!.status).toBe('Accepted');
  }
  expect(defender.unisolateCalls).toHaveLength(12);
  // One request reached the hung table (and timed out); the breaker answered every later operation.
  expect(requests).toBe(1);
  expect(log.lines.filter((l) => l.includes('State store failed'))).toHaveLength(1);
});
