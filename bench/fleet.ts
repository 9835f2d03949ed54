/**
 * The fleet benchmark: several app instances (separate processes, as Flex Consumption runs them) draining a
 * mass release against the Defender simulator enforcing MDE's limits per API and app, on a scaled clock.
 * The harness holds what Azure would: the request queue (a local stand-in with peek-lock, redelivery and
 * dead-lettering), the response queue (collected), the timers (one instance runs each, as timers are
 * singletons), and Table Storage (Azurite, behind a proxy that counts operations).
 */
import type { ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { LocalQueue } from '../dev/localQueue';
import { startAzuriteTables, AZURITE_ACCOUNT, AZURITE_KEY } from '../dev/azurite';
import { startDefender } from '../dev/simulators';
import { machineId } from './protocol';

/** One fleet run. */
export interface FleetOptions {
  label: string;
  instances: number;
  /** Simulated time runs this many times faster than real time. */
  scale: number;
  singles: number;
  bulks: number;
  bulkSize: number;
  /** HTTP releases, one every `httpEveryMs` of simulated time from the start. */
  http: number;
  httpEveryMs: number;
  /** The simulator's limits per API and app (and the app's settings). */
  limits: { perMinute: number; perHour: number };
  /** More app settings. */
  env?: NodeJS.ProcessEnv;
  /** Real-time bound of the run. */
  timeoutMs: number;
}

/** What a fleet run measured. */
export interface FleetResult {
  label: string;
  devices: number;
  /** Devices with exactly one accepted-phase outcome. */
  exactlyOnce: number;
  /** Devices with none / with more than one. */
  missing: number;
  duplicated: number;
  statuses: Record<string, number>;
  queuedMessages: number;
  completedMessages: number;
  throttled429: number;
  deadLettered: number;
  maxDeliveryCount: number;
  redeliveries: number;
  /** Simulated minutes from the first message to the last accepted-phase outcome. */
  drainMinutes: number;
  /** Accepted-phase outcomes in each simulated minute from the start (where the time went). */
  answersPerMinute: number[];
  releasesPerMinute: number;
  /**
   * The fastest MDE allows: a sliding window lets a minute's calls go at once, then `perMinute` more each
   * minute (and `perHour` an hour).
   */
  physicalMinimumMinutes: number;
  tableOperations: number;
  tableOperationsPerRelease: number;
  /** Table operations by purpose. */
  tableOperationKinds: Record<string, number>;
  defenderCalls: Record<string, number>;
  realSeconds: number;
  timedOut: boolean;
}

interface Outcome {
  machineId: string | null;
  status: string;
  phase?: string;
  correlationId: string;
  index?: number;
}

/** Azurite behind an HTTP proxy that counts requests (one per table operation or transaction). */
/** What a table request was for, from its URL: budget ledgers, idempotency claims, transactions, ranges. */
function kindOf(method: string, url: string): string {
  const path = decodeURIComponent(url);
  if (path.includes('$batch')) return 'transaction';
  if (path.includes("PartitionKey='budget'")) return `ledger ${method}`;
  if (path.includes("PartitionKey='key|")) return `claim ${method}`;
  if (/\(\)|\$filter/.test(path)) return 'range query';
  if (path.includes("PartitionKey='release'")) return `release ${method}`;
  return `other ${method}`;
}

async function countedTables(): Promise<{
  connectionString: string;
  count(): number;
  kinds: Record<string, number>;
  stop(): Promise<void>;
}> {
  const azurite = await startAzuriteTables();
  const target = new URL(azurite.url);
  let requests = 0;
  const kinds: Record<string, number> = {};
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const proxy = http.createServer((req, res) => {
    requests += 1;
    const kind = kindOf(req.method ?? '', req.url ?? '');
    kinds[kind] = (kinds[kind] ?? 0) + 1;
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: req.url,
        method: req.method,
        headers: req.headers,
        agent,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const port = (proxy.address() as AddressInfo).port;
  return {
    connectionString:
      `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};` +
      `TableEndpoint=http://127.0.0.1:${port}/${AZURITE_ACCOUNT};`,
    count: () => requests,
    kinds,
    stop: async () => {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
      agent.destroy();
      await azurite.stop();
    },
  };
}

/**
 * Runs one fleet: starts the instances with `start(env)`, feeds them, and measures.
 * @param start - forks one instance child (`bench/child.ts instance`) with this environment
 */
export async function fleetRun(
  options: FleetOptions,
  baseEnv: NodeJS.ProcessEnv,
  start: (env: NodeJS.ProcessEnv) => ChildProcess,
): Promise<FleetResult> {
  const realStart = Date.now();
  const t0 = Date.now();
  const clock = { now: () => t0 + (Date.now() - t0) * options.scale };
  const tag = `${options.label}-${t0}`;
  const singles = Array.from({ length: options.singles }, (_, i) => machineId(`fleet-${tag}-s${i}`));
  const bulks = Array.from({ length: options.bulks }, (_, b) =>
    Array.from({ length: options.bulkSize }, (_, i) => machineId(`fleet-${tag}-b${b}-${i}`)),
  );
  const viaHttp = Array.from({ length: options.http }, (_, i) => machineId(`fleet-${tag}-h${i}`));
  const all = [...singles, ...bulks.flat(), ...viaHttp];
  const tables = await countedTables();
  const defender = await startDefender({
    clock,
    limits: options.limits,
    autoProgress: { toInProgressMs: 30_000, toSucceededMs: 90_000 },
    machines: all.map((id) => ({ id, computerDnsName: `${id.slice(0, 8)}.fleet.local`, isolated: true })),
  });
  const requests = new LocalQueue('unisolate-requests', 10);
  const accepted = new Map<string, number>();
  const statuses: Record<string, number> = {};
  let queuedMessages = 0;
  let completedMessages = 0;
  let lastAnswerAt = clock.now();
  const answeredAt: number[] = [];
  const onOutcomes = (list: unknown[]): void => {
    for (const raw of list) {
      const outcome = raw as Outcome;
      if (outcome.phase === 'queued') queuedMessages += 1;
      else if (outcome.phase === 'completed') completedMessages += 1;
      else if (outcome.machineId) {
        accepted.set(outcome.machineId, (accepted.get(outcome.machineId) ?? 0) + 1);
        statuses[outcome.status] = (statuses[outcome.status] ?? 0) + 1;
        lastAnswerAt = clock.now();
        answeredAt.push(lastAnswerAt);
      }
    }
  };
  const route = (outputs: Record<string, unknown[]>): void => {
    for (const [queue, messages] of Object.entries(outputs)) {
      if (queue === 'unisolate-requests') for (const m of messages) requests.send(m);
      else onOutcomes(messages);
    }
  };

  const env: NodeJS.ProcessEnv = {
    ...baseEnv,
    MDE_API_BASE_URL: defender.url,
    STATE_TABLE_CONNECTION_STRING: tables.connectionString,
    MDE_RATE_LIMIT_PER_MINUTE: String(options.limits.perMinute),
    MDE_RATE_LIMIT_PER_HOUR: String(options.limits.perHour),
    BENCH_SCALE: String(options.scale),
    BENCH_T0: String(t0),
    ...options.env,
  };
  const children: ChildProcess[] = [];
  let timers = 0;
  const timer = (child: ChildProcess, name: string): void => {
    timers += 1;
    child.send({ cmd: 'timer', id: timers, name });
  };
  try {
    for (let i = 0; i < options.instances; i += 1) children.push(start(env));
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve, reject) => {
            const onMessage = (m: { type?: string; message?: string }): void => {
              if (m.type === 'ready') {
                child.off('message', onMessage);
                resolve();
              } else if (m.type === 'error') reject(new Error(m.message));
            };
            child.on('message', onMessage);
            child.once('exit', (code) => reject(new Error(`instance exited with ${code}`)));
          }),
      ),
    );
    const startedAt = clock.now();
    // The incident: every message arrives at once.
    singles.forEach((id, i) =>
      requests.send({ machineId: id, comment: 'Released after the incident', correlationId: `FLEET-${i}` }),
    );
    bulks.forEach((ids, b) =>
      requests.send({
        comment: 'Released after the incident',
        correlationId: `FLEET-BULK-${b}`,
        devices: ids.map((id) => ({ machineId: id })),
      }),
    );
    for (const child of children) {
      child.on('message', (raw) => {
        const m = raw as {
          type: string;
          max?: number;
          lock?: number;
          failed?: boolean;
          outputs?: Record<string, unknown[]>;
        };
        if (m.type === 'receive') child.send({ cmd: 'messages', list: requests.receive(m.max ?? 1) });
        else if (m.type === 'settle') {
          if (m.failed) requests.abandon(m.lock!);
          else requests.complete(m.lock!);
          route(m.outputs ?? {});
        } else if (m.type === 'http-done' || m.type === 'timer-done') route(m.outputs ?? {});
      });
    }
    let httpSent = 0;
    let nextHttp = startedAt;
    let nextResume = startedAt + 30_000;
    let nextTrack = startedAt + 60_000;
    const deadline = realStart + options.timeoutMs;
    while (Date.now() < deadline && !all.every((id) => accepted.has(id))) {
      const now = clock.now();
      while (httpSent < viaHttp.length && now >= nextHttp) {
        const id = viaHttp[httpSent]!;
        children[httpSent % children.length]!.send({
          cmd: 'http',
          id: httpSent,
          machineId: id,
          body: {
            machineId: id,
            comment: 'Released from the ticket',
            correlationId: `FLEET-HTTP-${httpSent}`,
          },
        });
        httpSent += 1;
        nextHttp += options.httpEveryMs;
      }
      // Timer triggers are singletons: one instance runs each.
      if (now >= nextResume) {
        timer(children[0]!, 'resumeReleases');
        nextResume += 30_000;
      }
      if (now >= nextTrack) {
        timer(children[1 % children.length]!, 'trackReleases');
        nextTrack += 60_000;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const timedOut = !all.every((id) => accepted.has(id));
    const drainMinutes = (lastAnswerAt - startedAt) / 60_000;
    const answersPerMinute: number[] = [];
    for (const at of answeredAt) {
      const minute = Math.floor((at - startedAt) / 60_000);
      while (answersPerMinute.length <= minute) answersPerMinute.push(0);
      answersPerMinute[minute]! += 1;
    }
    const counts = [...accepted.values()];
    const tableOperations = tables.count();
    return {
      label: options.label,
      devices: all.length,
      exactlyOnce: counts.filter((c) => c === 1).length,
      missing: all.length - accepted.size,
      duplicated: counts.filter((c) => c > 1).length,
      statuses,
      queuedMessages,
      completedMessages,
      throttled429: defender.throttledCount,
      deadLettered: requests.stats.deadLettered,
      maxDeliveryCount: requests.stats.maxDeliveryCount,
      redeliveries: requests.stats.abandoned,
      drainMinutes: Number(drainMinutes.toFixed(2)),
      answersPerMinute,
      releasesPerMinute: Number((all.length / drainMinutes).toFixed(1)),
      physicalMinimumMinutes: Math.max(
        Math.floor((all.length - 1) / options.limits.perMinute),
        60 * Math.floor((all.length - 1) / options.limits.perHour),
      ),
      tableOperations,
      tableOperationsPerRelease: Number((tableOperations / all.length).toFixed(1)),
      tableOperationKinds: { ...tables.kinds },
      defenderCalls: { ...defender.counts },
      realSeconds: Number(((Date.now() - realStart) / 1000).toFixed(1)),
      timedOut,
    };
  } finally {
    for (const child of children) {
      if (child.connected) child.send({ cmd: 'stop' });
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    for (const child of children) child.kill();
    await defender.close();
    await tables.stop();
  }
}
