/**
 * The local sandbox behind `npm start`: the app's registered functions served on http://localhost:7071/api/...
 * like `func start` would, with no Azure account needed. Requests are routed and invoked by the local host of
 * `dev/host.ts`, the one the tests and the benchmarks use.
 *
 * - Without Azure settings (no KEY_VAULT_URL): local simulators of managed identity, Key Vault, Entra ID and
 *   the Defender API (seeded with a few isolated devices whose actions complete after 15 s), and
 *   Azurite's Table service for idempotency and tracking. Everything stays on 127.0.0.1.
 * - With real settings in the environment: the real services, except Service Bus (the sandbox has no broker:
 *   response-queue messages are printed, and requests can be posted to the local queue endpoint below). Unset
 *   queue names take the values of `local.settings.sample.json`, as with `func start` (`dev/appSettings.ts`).
 *
 * Extras of the sandbox (not of the deployed app): `POST /sandbox/queue` runs the Service Bus trigger with the
 * body as the message (redelivering on transient failures, like Service Bus), and so does every message an
 * invocation sends to the request queue (the resume timer's hand-backs of parked releases); the response
 * queue's messages are printed. The timers (the tracker, with a share of the budget that covers every run,
 * and the resume timer) run every 5 s. Function keys are not checked here.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import '../dev/appSettings';
import {
  invokeHttp,
  invokeServiceBus,
  invokeTimer,
  loadApp,
  onLog,
  registrations,
  request,
  type InvocationResult,
} from '../dev/host';

const PORT = Number(process.env.SANDBOX_PORT ?? 7071);
/** How often the sandbox runs its timers (the tracker and the resume timer). */
export const TRACK_EVERY_MS = 5000;
/**
 * The tracker's list calls a minute that let it poll on every run: one more than its runs per minute, because
 * the shared budget counts a call a little longer than its window (its lease and margin, see `Ledger` in
 * `src/core/budget.ts`).
 */
const TRACK_CALLS_PER_MINUTE = Math.ceil(60_000 / TRACK_EVERY_MS) + 1;
/**
 * The tracker's settings in local mode. Its share of the budget covers every run, so a simulated release's
 * completion comes on the first run after the simulated action ends (the default share, 2 a minute, would hold
 * it back for about a minute). The simulated Defender API allows this: nothing else shares the app's budget.
 */
export const LOCAL_TRACKER_SETTINGS: Readonly<Record<string, string>> = {
  TRACK_SCHEDULE: `*/${TRACK_EVERY_MS / 1000} * * * * *`,
  TRACK_RATE_LIMIT_PER_MINUTE: String(TRACK_CALLS_PER_MINUTE),
  TRACK_RATE_LIMIT_PER_HOUR: String(60 * TRACK_CALLS_PER_MINUTE),
};

function log(line: string): void {
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

/**
 * Prints what an invocation sent to its output queues (there is no broker here), and delivers the request
 * queue's messages to the Service Bus trigger, as the broker would.
 */
function printQueues(result: InvocationResult): void {
  const serviceBus = functionWith('serviceBusTrigger');
  for (const [queue, messages] of Object.entries(result.queues)) {
    for (const message of messages) {
      const text = typeof message === 'string' ? message : JSON.stringify(message);
      log(`${queue} <- ${text}`);
      if (queue === process.env.REQUEST_QUEUE_NAME && serviceBus) {
        void runServiceBus(serviceBus, text, Number(process.env.MAX_DELIVERY_COUNT ?? 10));
      }
    }
  }
}

/** The first registered function with a trigger of this type. */
function functionWith(triggerType: string): string | undefined {
  return [...registrations().values()].find((r) =>
    Object.values(r.bindings).some((b) => b.type === triggerType),
  )?.name;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 1024 * 1024) break; // the app enforces its own, smaller limit
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function runServiceBus(name: string, message: string, maxDeliveries: number): Promise<void> {
  const messageId = Math.random().toString(16).slice(2);
  for (let deliveryCount = 1; deliveryCount <= maxDeliveries; deliveryCount += 1) {
    const result = await invokeServiceBus(name, message, { deliveryCount, messageId });
    if (!result.error) {
      printQueues(result);
      return;
    }
    log(`[${name}] delivery ${deliveryCount} failed (${result.error.message}); Service Bus would redeliver`);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', `http://localhost:${PORT}`);
  const body = await readBody(req);
  const serviceBus = functionWith('serviceBusTrigger');
  if (url.pathname === '/sandbox/queue' && req.method === 'POST' && serviceBus) {
    void runServiceBus(serviceBus, body.toString('utf8'), Number(process.env.MAX_DELIVERY_COUNT ?? 10));
    res.writeHead(202, { 'content-type': 'application/json' }).end('{"queued":true}');
    return;
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
  const result = await request(url.toString(), {
    method: req.method ?? 'GET',
    headers,
    ...(body.length > 0 ? { body } : {}),
  });
  res.writeHead(result.status, Object.fromEntries(result.headers));
  res.end(typeof result.body === 'string' ? result.body : JSON.stringify(result.body));
  log(`${req.method} ${url.pathname} -> ${result.status}`);
  if (result.error) log(`handler error: ${result.error.message}`);
  printQueues(result);
}

/** Runs the registered self-test function once and prints each check (what `GET /api/selftest` answers). */
async function printSelfTest(): Promise<void> {
  if (!registrations().has('selfTest')) return;
  const report = (await invokeHttp('selfTest')).body as {
    ok: boolean;
    cloud: string;
    credential: string;
    checks: { name: string; ok: boolean; detail: string; fix: string | null }[];
  };
  log(`Self-test (${report.credential}, ${report.cloud}): ${report.ok ? 'all checks pass' : 'FAILED'}`);
  for (const check of report.checks) {
    log(
      `  ${check.ok ? 'ok  ' : 'FAIL'} ${check.name}: ${check.detail}${check.fix ? ` -> ${check.fix}` : ''}`,
    );
  }
}

async function main(): Promise<void> {
  const local = !process.env.KEY_VAULT_URL;
  let sampleId = '<40-hex machine id>';
  let sampleName = '<host name>';
  const stops: (() => Promise<void>)[] = [];
  if (local) {
    // Local mode talks to 127.0.0.1 only: refuse anything else (and keep telemetry from phoning home).
    await import('../dev/loopbackOnly');
    const { startEnvironment } = await import('../dev/environment');
    const { startAzuriteTables } = await import('../dev/azurite');
    const [env, azurite] = await Promise.all([
      startEnvironment({
        defender: { autoProgress: { toInProgressMs: 5000, toSucceededMs: 15_000 } },
        // Telemetry goes to the local ingestion simulator, so the self-test's telemetry check passes here too.
      }),
      startAzuriteTables(),
    ]);
    stops.push(
      () => env.close(),
      () => azurite.stop(),
    );
    Object.assign(process.env, env.settings, {
      STATE_TABLE_CONNECTION_STRING: azurite.connectionString,
      ...LOCAL_TRACKER_SETTINGS,
    });
    const isolated = env.defender.machines().filter((m) => env.defender.isIsolated(m.id));
    sampleId = isolated[0]?.id ?? sampleId;
    sampleName = isolated[1]?.computerDnsName ?? sampleName;
    log(
      'Local simulators: managed identity, Key Vault, Entra ID, Defender API, Azurite tables (127.0.0.1 only)',
    );
    log(`Isolated devices: ${isolated.map((m) => `${m.computerDnsName} (${m.id})`).join(', ')}`);
  } else {
    log('Using the Azure settings in the environment; Service Bus output is printed, not sent.');
  }
  onLog((entry) => {
    if (entry.level !== 'trace' && entry.level !== 'debug') log(`[${entry.functionName}] ${entry.message}`);
  });
  // Load the app only now, so that it reads the settings above (bundled with the sandbox: a literal require).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  await loadApp(() => require('../src/index'));
  const timers = [...registrations().values()]
    .filter((r) => Object.values(r.bindings).some((b) => b.type === 'timerTrigger'))
    .map((r) => r.name);
  const timer = setInterval(() => {
    for (const name of timers) {
      invokeTimer(name)
        .then((result) => {
          if (result.error) log(`${name} failed: ${result.error.message}`);
          else printQueues(result);
        })
        .catch((error: unknown) => log(`${name} failed: ${String(error)}`));
    }
  }, TRACK_EVERY_MS);

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      log(`handler error: ${String(error)}`);
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(PORT, '127.0.0.1', resolve));
  const base = `http://localhost:${PORT}`;
  log(`Functions: ${[...registrations().keys()].join(', ')}`);
  await printSelfTest();
  log(`Listening on ${base}/api/ — try:`);
  process.stdout.write(
    `\n  curl -s -X POST ${base}/api/machines/${sampleId}/unisolate -H 'Content-Type: application/json' \\\n` +
      `       -d '{"Comment":"Clean and validated","correlationId":"INC0012345"}'\n\n` +
      `  curl -s -X POST ${base}/api/unisolate -H 'Content-Type: application/json' \\\n` +
      `       -d '{"deviceName":"${sampleName}","comment":"Closed INC0012346","correlationId":"INC0012346"}'\n\n` +
      `  curl -s ${base}/api/unisolate/INC0012345          # status: accepted, then completed\n` +
      `  curl -s -X POST ${base}/sandbox/queue -d '{"machineId":"${sampleId}","comment":"via queue"}'\n` +
      `  curl -s ${base}/api/openapi.json\n` +
      `  curl -s ${base}/api/selftest                      # the self-test (200 when every check passes)\n\n`,
  );
  const shutdown = (): void => {
    clearInterval(timer);
    server.close();
    void Promise.all(stops.map((stop) => stop())).finally(() => process.exit(0));
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

// Run as the entry point (`npm start`); imported (tests), it only provides the settings above.
if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
