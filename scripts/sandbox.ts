/**
 * The local sandbox behind `npm start`: the app's registered functions served on http://localhost:7071/api/...
 * like `func start` would, with no Azure account needed.
 *
 * - Without Azure settings (no KEY_VAULT_URL): local simulators of managed identity, Key Vault, Entra ID and
 *   the Defender API (seeded with a few isolated devices whose actions complete after a few seconds), and
 *   Azurite's Table service for idempotency and tracking. Everything stays on 127.0.0.1.
 * - With real settings in the environment: the real services, except Service Bus (the sandbox has no broker:
 *   response-queue messages are printed, and requests can be posted to the local queue endpoint below).
 *
 * Extras of the sandbox (not of the deployed app): `POST /sandbox/queue` runs the Service Bus trigger with the
 * body as the message (redelivering on transient failures, like Service Bus), and the tracker timer runs every
 * few seconds. Function keys are not checked here.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { HttpRequest, HttpResponse, InvocationContext, type HttpResponseInit } from '@azure/functions';
import Module from 'node:module';
import * as functionsCore from '../test/support/functionsCore';
import { registrations, type Registration } from '../test/support/functionsCore';

// The Functions worker injects `@azure/functions-core`; here a recorder of registrations stands in for it
// (as in the tests), so the app's own registrations drive the routes below.
const moduleWithLoad = Module as unknown as { _load: (request: string, ...rest: unknown[]) => unknown };
const load = moduleWithLoad._load;
moduleWithLoad._load = function (this: unknown, request: string, ...rest: unknown[]) {
  return request === '@azure/functions-core' ? functionsCore : load.call(this, request, ...rest);
};

const PORT = Number(process.env.SANDBOX_PORT ?? 7071);
const TRACK_EVERY_MS = 5000;

function log(line: string): void {
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

/** A context like the host's, printing logs and the response-queue output. */
function contextFor(reg: Registration, triggerMetadata?: Record<string, unknown>): InvocationContext {
  const bindings = Object.values(reg.bindings);
  return new InvocationContext({
    functionName: reg.name,
    invocationId: Math.random().toString(16).slice(2),
    triggerMetadata,
    options: {
      trigger: { type: 'unknown', name: 'trigger' },
      extraOutputs: bindings
        .filter((b) => b.direction === 'out' && b.name !== '$return')
        .map((b) => ({ ...b })),
      extraInputs: [],
    },
    logHandler: (level, ...args) => {
      if (level !== 'trace' && level !== 'debug') log(`[${reg.name}] ${args.map(String).join(' ')}`);
    },
  });
}

function printQueue(reg: Registration, context: InvocationContext): void {
  for (const binding of Object.values(reg.bindings)) {
    if (binding.direction !== 'out' || binding.type !== 'serviceBus') continue;
    const value = context.extraOutputs.get(binding.name);
    if (value === undefined) continue;
    for (const message of Array.isArray(value) ? (value as unknown[]) : [value]) {
      log(`response queue <- ${JSON.stringify(message)}`);
    }
  }
}

function matchRoute(template: string, path: string): Record<string, string> | undefined {
  const t = template.split('/');
  const p = path.split('/');
  if (t.length !== p.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < t.length; i += 1) {
    const part = t[i]!;
    const m = /^\{(\w+)\}$/.exec(part);
    if (m) params[m[1]!] = decodeURIComponent(p[i]!);
    else if (part.toLowerCase() !== p[i]!.toLowerCase()) return undefined;
  }
  return params;
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

async function runServiceBus(reg: Registration, message: unknown, maxDeliveries: number): Promise<void> {
  const messageId = Math.random().toString(16).slice(2);
  for (let deliveryCount = 1; deliveryCount <= maxDeliveries; deliveryCount += 1) {
    const context = contextFor(reg, { deliveryCount, messageId });
    try {
      await reg.handler(message, context);
      printQueue(reg, context);
      return;
    } catch (error) {
      log(
        `[${reg.name}] delivery ${deliveryCount} failed (${(error as Error).message}); Service Bus would redeliver`,
      );
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', `http://localhost:${PORT}`);
  const body = await readBody(req);
  const all = [...registrations().values()];
  if (url.pathname === '/sandbox/queue' && req.method === 'POST') {
    const sb = all.find((r) => Object.values(r.bindings).some((b) => b.type === 'serviceBusTrigger'))!;
    void runServiceBus(sb, body, Number(process.env.MAX_DELIVERY_COUNT ?? 10));
    res.writeHead(202, { 'content-type': 'application/json' }).end('{"queued":true}');
    return;
  }
  const path = url.pathname.replace(/^\/api\//, '');
  for (const reg of all) {
    const trigger = Object.values(reg.bindings).find((b) => b.type === 'httpTrigger');
    if (!trigger || !url.pathname.startsWith('/api/')) continue;
    const methods = (trigger.methods as string[] | undefined) ?? ['GET', 'POST'];
    const params = matchRoute(String(trigger.route), path);
    if (!params || !methods.includes(req.method ?? 'GET')) continue;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
    const request = new HttpRequest({
      method: req.method ?? 'GET',
      url: url.toString(),
      headers,
      query: Object.fromEntries(url.searchParams),
      params,
      body: body.length > 0 ? { bytes: body } : undefined,
    });
    const context = contextFor(reg);
    const init = (await reg.handler(request, context)) as HttpResponseInit;
    const response = new HttpResponse(init);
    const text = Buffer.from(await response.arrayBuffer());
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(text);
    log(`${req.method} ${url.pathname} -> ${response.status}`);
    printQueue(reg, context);
    return;
  }
  res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"no function at this route"}');
}

/** Runs the registered self-test function once and prints each check (what `GET /api/selftest` answers). */
async function printSelfTest(): Promise<void> {
  const reg = registrations().get('selfTest');
  if (!reg) return;
  const init = (await reg.handler(
    new HttpRequest({ method: 'GET', url: `http://localhost:${PORT}/api/selftest` }),
    contextFor(reg),
  )) as HttpResponseInit;
  const report = init.jsonBody as {
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
      TRACK_SCHEDULE: '*/5 * * * * *',
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
  // Import the app only now, so that it reads the settings above.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('../src/index');
  const tracker = [...registrations().values()].find((r) =>
    Object.values(r.bindings).some((b) => b.type === 'timerTrigger'),
  );
  const timer = setInterval(() => {
    if (!tracker) return;
    const context = contextFor(tracker);
    Promise.resolve(tracker.handler({ isPastDue: false }, context))
      .then(() => printQueue(tracker, context))
      .catch((error: unknown) => log(`tracker failed: ${String(error)}`));
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

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
