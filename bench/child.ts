/**
 * A benchmark child process: a fresh `node` running the deployed entry (`dist/index.js`) under the local
 * Functions host of `dev/host.ts` (which invokes as the worker does), driven by the harness over IPC.
 * Modes (argv[2]):
 *
 * - `cold-app` / `cold-baseline`: load the app, answer one request, report, then flush telemetry and exit.
 * - `warm`: answer blocks of releases (through the handler, or bare axios POSTs) on command; report counters.
 * - `drain`: run queued releases through the Service Bus handler on a scaled clock, with N in flight.
 *
 * Settings come from the environment the harness sets (simulator URLs, `CHECK_ISOLATION_STATE`, ...).
 */
import '../dev/loopbackOnly';
import { writeFileSync } from 'node:fs';
import https from 'node:https';
import { Session } from 'node:inspector';
import path from 'node:path';
import {
  invokeHttp,
  invokeServiceBus,
  invokeTimer,
  loadApp,
  type HttpResult,
  type InvocationResult,
} from '../dev/host';
import type { Command } from './protocol';

/** The parts of the deployed bundle's exports (the composition root) the benchmark uses. */
interface Clock {
  now: () => number;
  sleep: (ms: number) => Promise<void>;
}
interface Deps {
  release: { budget: object; [key: string]: unknown };
  telemetry: {
    flush(): Promise<void>;
    ready?: () => Promise<boolean>;
    trackSelfTest(report: unknown, durationMs: number): void;
  };
  credentials?: { stats: { secretReads: number; tokenRequests: number }; getToken(): Promise<string> };
  defenderClient?: { calls: number };
}
interface DeployedBundle {
  buildDependencies(
    env: NodeJS.ProcessEnv,
    clock?: Clock,
    tuning?: { leaseTiming?: { leaseMs: number; marginMs: number } },
  ): Deps;
  getDependencies(): Deps;
  setDependencies(deps?: Deps): void;
}

const BUNDLE = path.resolve(process.env.BENCH_APP ?? 'dist/index.js');
const JSON_TYPE = { 'content-type': 'application/json' };

function send(message: unknown): void {
  process.send?.(message);
}

function releaseBody(id: string): { comment: string; correlationId: string } {
  return {
    comment: 'Released by the benchmark: clean and validated',
    correlationId: `bench-${id.slice(0, 12)}`,
  };
}

async function releaseViaHandler(id: string): Promise<HttpResult> {
  return invokeHttp('unisolateMachine', {
    params: { machineId: id },
    headers: JSON_TYPE,
    body: JSON.stringify(releaseBody(id)),
  });
}

function statusOf(result: HttpResult): string {
  const body = result.body as { status?: string } | undefined;
  return body?.status ?? `HTTP ${result.status}`;
}

async function cold(baseline: boolean): Promise<void> {
  if (baseline) {
    await loadApp(path.resolve(__dirname, 'baselineApp.js'));
    const loadedMs = performance.now();
    const result = await invokeHttp('ping', { headers: JSON_TYPE, body: JSON.stringify({ hello: 'world' }) });
    send({ type: 'outcome', inProcessMs: performance.now(), loadedMs, status: String(result.status) });
    return;
  }
  await loadApp(BUNDLE);
  const loadedMs = performance.now();
  const id = process.env.BENCH_MACHINE_ID ?? '';
  const result = await releaseViaHandler(id);
  const inProcessMs = performance.now();
  send({ type: 'outcome', inProcessMs, loadedMs, status: statusOf(result), body: result.body });
  // Telemetry: the SDK loads after the first request; flush so the harness can count what arrived.
  const bundle = require(BUNDLE) as DeployedBundle; // eslint-disable-line @typescript-eslint/no-require-imports
  const deps = bundle.getDependencies();
  await deps.telemetry.flush();
  send({ type: 'flushed', atMs: performance.now() });
}

async function warm(): Promise<void> {
  await loadApp(BUNDLE);
  const bundle = require(BUNDLE) as DeployedBundle; // eslint-disable-line @typescript-eslint/no-require-imports
  const deps = bundle.getDependencies();
  // The self-test runs once per instance, ~1 s after the dependencies were built, and reads Key Vault (names
  // and versions): a one-off, not a per-request cost, so figures 1 and 3 start counting once it has reported.
  const selfTested = new Promise<void>((resolve) => {
    const track = deps.telemetry.trackSelfTest.bind(deps.telemetry);
    deps.telemetry.trackSelfTest = (report, durationMs) => {
      track(report, durationMs);
      resolve();
    };
    setTimeout(resolve, 15_000).unref();
  });
  // Figure 1 must not be rate limited: the app's own budget class, with limits no run can reach.
  const Budget = deps.release.budget.constructor as new (
    limits: {
      perApi: { perMinute: number; perHour: number };
      tracker: { perMinute: number; perHour: number };
    },
    now: () => number,
  ) => object;
  deps.release.budget = new Budget(
    { perApi: { perMinute: 1e9, perHour: 1e9 }, tracker: { perMinute: 1, perHour: 1 } },
    () => Date.now(),
  );
  // Imported here, not at the top: the cold children (app and baseline alike) must not pay for axios.
  const { default: axios } = await import('axios');
  const bare = axios.create({
    baseURL: process.env.MDE_API_BASE_URL,
    httpsAgent: new https.Agent({ keepAlive: true, maxSockets: 50 }),
    validateStatus: () => true,
    proxy: false,
  });
  let outcomes = 0;
  const unexpected: string[] = [];
  // BENCH_SPLIT=1 (diagnostics): time spent inside the Defender call, to split the handler's overhead.
  let inDefenderMs = 0;
  if (process.env.BENCH_SPLIT === '1') {
    const defender = deps.release.defender as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const original = defender.unisolate!.bind(defender);
    defender.unisolate = async (...args: unknown[]) => {
      const started = performance.now();
      try {
        return await original(...args);
      } finally {
        inDefenderMs += performance.now() - started;
      }
    };
  }
  // BENCH_PROFILE=<file>: CPU profile of the warm phase (after warm-up), written at finish.
  let profiler: Session | undefined;

  process.on('message', (raw) => {
    const command = raw as Command;
    void (async () => {
      if (command.cmd === 'app') {
        const times: number[] = [];
        const withConversion: number[] = [];
        for (const id of command.ids) {
          const started = performance.now();
          const result = await releaseViaHandler(id);
          withConversion.push(performance.now() - started);
          times.push(result.handlerMs);
          outcomes += 1;
          const status = statusOf(result);
          if (status !== 'Accepted' && unexpected.length < 5) unexpected.push(status);
        }
        if (process.env.BENCH_SPLIT === '1') {
          const total = times.reduce((x, y) => x + y, 0);
          console.error(
            `handler ${(total / times.length).toFixed(3)} ms/request, of which in the Defender call ${(inDefenderMs / times.length).toFixed(3)} ms`,
          );
          inDefenderMs = 0;
        }
        send({ type: 'times', times, withConversion, unexpected });
      } else if (command.cmd === 'bare') {
        const token = await deps.credentials!.getToken();
        const times: number[] = [];
        for (const id of command.ids) {
          const started = performance.now();
          const response = await bare.post(
            `/api/machines/${id}/unisolate`,
            { Comment: releaseBody(id).comment },
            { headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' } },
          );
          times.push(performance.now() - started);
          if (response.status !== 201 && unexpected.length < 5)
            unexpected.push(`bare HTTP ${response.status}`);
        }
        send({ type: 'times', times, unexpected });
      } else if (command.cmd === 'client') {
        // Diagnostics: the app's DefenderClient alone (no handler, no core), to split the overhead.
        const client = deps.defenderClient as unknown as {
          unisolate(id: string, comment: string, o: { timeoutMs: number }): Promise<{ status: number }>;
        };
        const times: number[] = [];
        for (const id of command.ids) {
          const started = performance.now();
          const response = await client.unisolate(id, releaseBody(id).comment, { timeoutMs: 30_000 });
          times.push(performance.now() - started);
          if (response.status !== 201 && unexpected.length < 5)
            unexpected.push(`client HTTP ${response.status}`);
        }
        send({ type: 'times', times, unexpected });
      } else if (command.cmd === 'stubbed') {
        // Diagnostics: the handler with the Defender call answered in-process (no socket, no simulator), so
        // what remains is the app's own work per request: decode, parse, budget, outcome, telemetry, log.
        const defender = deps.release.defender as Record<string, (...args: unknown[]) => Promise<unknown>>;
        const original = defender.unisolate!;
        defender.unisolate = async (machineId: unknown) => ({
          status: 201,
          body: {
            id: `stub-${String(machineId).slice(0, 8)}`,
            type: 'Unisolate',
            status: 'Pending',
            machineId,
            creationDateTimeUtc: new Date().toISOString(),
          },
        });
        const times: number[] = [];
        try {
          for (const id of command.ids) {
            const result = await releaseViaHandler(id);
            times.push(result.handlerMs);
            const status = statusOf(result);
            if (status !== 'Accepted' && unexpected.length < 5) unexpected.push(`stubbed ${status}`);
          }
        } finally {
          defender.unisolate = original;
        }
        send({ type: 'times', times, unexpected });
      } else if (command.cmd === 'stats') {
        await selfTested;
        if (process.env.BENCH_PROFILE) {
          profiler = new Session();
          profiler.connect();
          profiler.post('Profiler.enable');
          profiler.post('Profiler.start');
        }
        const ready = deps.telemetry.ready ? await deps.telemetry.ready() : false;
        send({ type: 'stats', telemetryReady: ready, rssBytes: process.memoryUsage().rss });
      } else if (command.cmd === 'finish') {
        await deps.telemetry.flush();
        if (profiler) {
          const profile = await new Promise<unknown>((resolve) =>
            profiler!.post('Profiler.stop', (_error, result) => resolve(result.profile)),
          );
          writeFileSync(process.env.BENCH_PROFILE!, JSON.stringify(profile));
        }
        // With --expose-gc (BENCH_CHILD_EXEC_ARGV), report the live heap too: growth vs garbage.
        const gc = (globalThis as { gc?: () => void }).gc;
        if (gc) {
          gc();
          console.error(
            `warm child: live heap after GC ${(process.memoryUsage().heapUsed / 1048576).toFixed(1)} MB`,
          );
        }
        send({
          type: 'finished',
          outcomes,
          maxRssBytes: process.resourceUsage().maxRSS * 1024,
          memory: process.memoryUsage(),
          credentialStats: deps.credentials?.stats,
        });
      }
    })();
  });
  // The harness disconnects when it is done with this process.
  process.on('disconnect', () => process.exit(0));
  send({ type: 'ready' });
}

async function drain(command: Extract<Command, { cmd: 'drain' }>): Promise<void> {
  const { scale, t0 } = command;
  // The simulator runs on the same scaled clock: simulated time = t0 + (wall - t0) * scale.
  const clock: Clock = {
    now: () => t0 + (Date.now() - t0) * scale,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms / scale)),
  };
  await loadApp(BUNDLE);
  const bundle = require(BUNDLE) as DeployedBundle; // eslint-disable-line @typescript-eslint/no-require-imports
  const deps = bundle.buildDependencies(process.env, clock);
  bundle.setDependencies(deps);
  // A warm instance: secrets and token already cached (no Defender call). On a cold instance the first
  // in-flight calls reserve their rate-limit slots, then wait for Key Vault + token, and reach MDE later
  // than the limiter recorded them.
  if (process.env.BENCH_DRAIN_COLD !== '1') await deps.credentials?.getToken();

  type Message = { id: string; messageId: string; deliveryCount: number };
  const queue: Message[] = command.ids.map((id, i) => ({ id, messageId: `msg-${i}`, deliveryCount: 1 }));
  const outcomes = new Map<string, string[]>();
  let redeliveries = 0;
  const deadline = Date.now() + command.timeoutMs;
  const started = clock.now();

  const worker = async (): Promise<void> => {
    while (queue.length > 0 && Date.now() < deadline) {
      const message = queue.shift()!;
      const result = await invokeServiceBus(
        'unisolateServiceBus',
        JSON.stringify({ machineId: message.id, ...releaseBody(message.id) }),
        { deliveryCount: message.deliveryCount, messageId: message.messageId },
      );
      if (result.error) {
        // Service Bus redelivers an abandoned message (deliveryCount + 1).
        redeliveries += 1;
        queue.push({ ...message, deliveryCount: message.deliveryCount + 1 });
        continue;
      }
      const outcome = result.queues[process.env.RESPONSE_QUEUE_NAME ?? '']?.[0] as
        { status?: string } | undefined;
      const list = outcomes.get(message.messageId) ?? [];
      list.push(outcome?.status ?? 'none');
      outcomes.set(message.messageId, list);
    }
  };
  await Promise.all(Array.from({ length: command.concurrency }, () => worker()));
  const statuses: Record<string, number> = {};
  let multiple = 0;
  for (const list of outcomes.values()) {
    if (list.length > 1) multiple += 1;
    for (const s of list) statuses[s] = (statuses[s] ?? 0) + 1;
  }
  send({
    type: 'drained',
    messages: command.ids.length,
    withOutcome: outcomes.size,
    multiple,
    statuses,
    redeliveries,
    simulatedMs: clock.now() - started,
    appCalls: deps.defenderClient?.calls ?? 0,
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
  });
}

/**
 * `instance`: one app instance of a fleet, as Flex Consumption runs it: a process with the deployed bundle
 * on the fleet's scaled clock, taking request-queue messages from the harness's local queue (up to
 * `maxConcurrentCalls` in flight, as host.json sets), and answering HTTP and timer invocations on command.
 * Every output goes back to the harness, which routes it to its queue.
 */
async function instance(): Promise<void> {
  const scale = Number(process.env.BENCH_SCALE);
  const t0 = Number(process.env.BENCH_T0);
  const clock: Clock = {
    now: () => t0 + (Date.now() - t0) * scale,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms / scale)),
  };
  await loadApp(BUNDLE);
  const bundle = require(BUNDLE) as DeployedBundle; // eslint-disable-line @typescript-eslint/no-require-imports
  // On a scaled clock real latency is multiplied too: the fleet may lengthen the budget's lease timing.
  const leaseMs = Number(process.env.BENCH_LEASE_MS ?? 0);
  const deps = bundle.buildDependencies(
    process.env,
    clock,
    leaseMs > 0 ? { leaseTiming: { leaseMs, marginMs: Number(process.env.BENCH_MARGIN_MS ?? 500) } } : {},
  );
  bundle.setDependencies(deps);
  await deps.credentials?.getToken();
  const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 8);
  let inFlight = 0;
  let asking = false;
  let stopping = false;

  const ask = (): void => {
    if (stopping || asking || inFlight >= concurrency) return;
    asking = true;
    send({ type: 'receive', max: concurrency - inFlight });
  };
  const run = async (message: { lock: number; body: string; deliveryCount: number; messageId: string }) => {
    inFlight += 1;
    try {
      const result = await invokeServiceBus('unisolateServiceBus', message.body, {
        deliveryCount: message.deliveryCount,
        messageId: message.messageId,
      });
      send({
        type: 'settle',
        lock: message.lock,
        failed: result.error !== undefined,
        outputs: result.queues,
      });
    } finally {
      inFlight -= 1;
      ask();
    }
  };
  process.on('message', (raw) => {
    const command = raw as
      | { cmd: 'messages'; list: { lock: number; body: string; deliveryCount: number; messageId: string }[] }
      | { cmd: 'http'; id: number; machineId: string; body: unknown }
      | { cmd: 'timer'; id: number; name: string }
      | { cmd: 'stop' };
    if (command.cmd === 'messages') {
      asking = false;
      for (const message of command.list) void run(message);
      if (command.list.length === 0) setTimeout(ask, 20).unref();
      else ask();
    } else if (command.cmd === 'http') {
      void invokeHttp('unisolate', { headers: JSON_TYPE, body: JSON.stringify(command.body) }).then((r) =>
        send({ type: 'http-done', id: command.id, status: r.status, body: r.body, outputs: r.queues }),
      );
    } else if (command.cmd === 'timer') {
      void invokeTimer(command.name).then((r: InvocationResult) =>
        send({ type: 'timer-done', id: command.id, outputs: r.queues, failed: Boolean(r.error) }),
      );
    } else if (command.cmd === 'stop') {
      stopping = true;
      void deps.telemetry.flush().then(() =>
        send({
          type: 'stopped',
          maxRssBytes: process.resourceUsage().maxRSS * 1024,
          appCalls: deps.defenderClient?.calls ?? 0,
        }),
      );
    }
  });
  process.on('disconnect', () => process.exit(0));
  send({ type: 'ready' });
  ask();
}

const mode = process.argv[2];
const fail = (error: unknown): void => {
  send({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  process.exitCode = 1;
};
if (mode === 'cold-app' || mode === 'cold-baseline') {
  cold(mode === 'cold-baseline').then(() => process.exit(0), fail);
} else if (mode === 'warm') {
  warm().catch(fail);
} else if (mode === 'instance') {
  instance().catch(fail);
} else if (mode === 'drain') {
  process.once('message', (command) => {
    drain(command as Extract<Command, { cmd: 'drain' }>).then(() => process.exit(0), fail);
  });
  send({ type: 'ready' });
} else {
  fail(new Error(`unknown mode ${mode ?? '(none)'}`));
}
