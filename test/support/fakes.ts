/** Fakes for core unit tests: a scripted Defender API, a fake clock, recording telemetry and logs. */
import type { Outcome } from '../../src/core/outcome';
import type { SelfTestReport } from '../../src/core/selfTest';
import type {
  ReleaseStore,
  ApiResponse,
  Clock,
  DefenderApi,
  DependencyRecord,
  Logger,
  Telemetry,
} from '../../src/core/ports';
import { TransportError } from '../../src/core/ports';
import { LocalBudget } from '../../src/core/budget';
import type { ReleaseDeps } from '../../src/core/release';
import type { StateDeps } from '../../src/core/pipeline';
import { TableReleaseStore } from '../../src/adapters/releaseStore';
import { MemoryTable } from './memoryTable';

/** A clock whose sleeps advance time instantly. */
export class FakeClock implements Clock {
  constructor(public time = Date.parse('2026-11-28T10:00:00Z')) {}
  readonly sleeps: number[] = [];
  now = (): number => this.time;
  sleep = async (ms: number): Promise<void> => {
    this.sleeps.push(ms);
    this.time += ms;
  };
}

/** One scripted answer: an HTTP response, a transport failure, or a function of the call. */
export type Script = ApiResponse | TransportError | Error;

/** A Defender API answering from a script (default: 201 with a pending action). */
export class FakeDefender implements DefenderApi {
  readonly unisolateCalls: { machineId: string; comment: string; timeoutMs: number }[] = [];
  readonly listCalls: string[] = [];
  /** Calls of the look-up (read) APIs, as `listMachines <filter>`, `getMachine <id>`, `alerts <id>`, `history <filter>`. */
  readonly readCalls: string[] = [];
  /** Answers to the isolation-state history (`machineId eq '...'` without a type); default: isolated. */
  historyScript: Script[] = [];
  /** Answers to `GET /api/machines?$filter` (default: no device). */
  machinesScript: Script[] = [];
  /** Answers to `GET /api/machines/{id}` (default: a Low-risk device). */
  machineScript: Script[] = [];
  /** Answers to `GET /api/machines/{id}/alerts` (default: none). */
  alertsScript: Script[] = [];
  /**
   * Devices whose release fails transiently (a connection reset: `TransportError` `network`) for as long as
   * they are in the set. Such a call never reaches MDE, so it is not recorded in {@link unisolateCalls}.
   */
  readonly unreachable = new Set<string>();
  refreshes = 0;
  constructor(
    public script: Script[] = [],
    public listScript: Script[] = [],
  ) {}

  /** A Succeeded Isolate: the default history, so a device counts as isolated. */
  static isolated(machineId: string, status = 'Succeeded', created = '2026-11-28T08:00:00Z') {
    return { ...FakeDefender.action(machineId, status, created), type: 'Isolate' };
  }

  static action(machineId: string, status = 'Pending', created = '2026-11-28T10:00:00Z') {
    return {
      id: `act-${Math.random().toString(16).slice(2, 10)}`,
      type: 'Unisolate',
      status,
      machineId,
      creationDateTimeUtc: created,
    };
  }

  private next(list: Script[], fallback: () => ApiResponse): Promise<ApiResponse> {
    const item = list.shift();
    if (item === undefined) return Promise.resolve(fallback());
    if (item instanceof Error) return Promise.reject(item);
    return Promise.resolve(item);
  }

  unisolate(machineId: string, comment: string, options: { timeoutMs: number }): Promise<ApiResponse> {
    if (this.unreachable.has(machineId)) {
      return Promise.reject(new TransportError('network', 'ECONNRESET', 'reset'));
    }
    this.unisolateCalls.push({ machineId, comment, timeoutMs: options.timeoutMs });
    return this.next(this.script, () => ({ status: 201, body: FakeDefender.action(machineId) }));
  }

  listMachineActions(filter: string): Promise<ApiResponse> {
    if (!/type eq/.test(filter)) {
      // The isolation-state check reads the whole history; the pending look-up filters on the type.
      this.readCalls.push(`history ${filter}`);
      const id = /machineId eq '([0-9a-f]{40})'/.exec(filter)?.[1] ?? '';
      return this.next(this.historyScript, () => ({
        status: 200,
        body: { value: [FakeDefender.isolated(id)] },
      }));
    }
    this.listCalls.push(filter);
    return this.next(this.listScript, () => ({ status: 200, body: { value: [] } }));
  }

  listMachines(filter: string): Promise<ApiResponse> {
    this.readCalls.push(`listMachines ${filter}`);
    return this.next(this.machinesScript, () => ({ status: 200, body: { value: [] } }));
  }

  getMachine(machineId: string): Promise<ApiResponse> {
    this.readCalls.push(`getMachine ${machineId}`);
    return this.next(this.machineScript, () => ({
      status: 200,
      body: {
        id: machineId,
        computerDnsName: 'device.contoso.local',
        riskScore: 'Low',
        healthStatus: 'Active',
      },
    }));
  }

  getMachineAlerts(machineId: string): Promise<ApiResponse> {
    this.readCalls.push(`alerts ${machineId}`);
    return this.next(this.alertsScript, () => ({ status: 200, body: { value: [] } }));
  }

  /** Credentials are always at hand. */
  async ensureCredentials(): Promise<void> {}

  async refreshCredentials(): Promise<void> {
    this.refreshes += 1;
  }
}

/** Telemetry that records what it is given. */
export class RecordingTelemetry implements Telemetry {
  readonly outcomes: { outcome: Outcome; durationMs: number }[] = [];
  readonly dependencies: DependencyRecord[] = [];
  readonly redeliveries: Outcome[] = [];
  trackOutcome(outcome: Outcome, durationMs: number): void {
    this.outcomes.push({ outcome, durationMs });
  }
  trackDependency(record: DependencyRecord): void {
    this.dependencies.push(record);
  }
  trackRedelivery(outcome: Outcome): void {
    this.redeliveries.push(outcome);
  }
  readonly completions: { outcome: Outcome; timeToCompletionMs: number }[] = [];
  trackCompletion(outcome: Outcome, timeToCompletionMs: number): void {
    this.completions.push({ outcome, timeToCompletionMs });
  }
  readonly selfTests: SelfTestReport[] = [];
  trackSelfTest(report: SelfTestReport): void {
    this.selfTests.push(report);
  }
  async flush(): Promise<void> {}
}

/** A logger that keeps lines. */
export function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    info: (m, p) => lines.push(`info ${m} ${JSON.stringify(p ?? {})}`),
    warn: (m, p) => lines.push(`warn ${m} ${JSON.stringify(p ?? {})}`),
    error: (m, p) => lines.push(`error ${m} ${JSON.stringify(p ?? {})}`),
  };
}

/** This instance's budget with `perMinute` / `perHour` per API (the tracker's share: 2 / 60 by default). */
export function localBudget(
  perMinute: number,
  perHour: number,
  now: () => number,
  tracker = { perMinute: 2, perHour: 60 },
): LocalBudget {
  return new LocalBudget({ perApi: { perMinute, perHour }, tracker }, now);
}

/** Core dependencies over fakes. */
export function fakeDeps(defender = new FakeDefender(), clock = new FakeClock()) {
  const telemetry = new RecordingTelemetry();
  const log = recordingLogger();
  const deps: ReleaseDeps = {
    defender,
    budget: localBudget(100, 1500, clock.now),
    clock,
    random: () => 0.5,
    telemetry,
    log,
    requestTimeoutMs: 30_000,
    retryBudgetMs: { http: 20_000, serviceBus: 60_000 },
    apiHost: 'api.securitycenter.microsoft.com',
  };
  return { deps, defender, clock, telemetry, log };
}

export const MACHINE_ID = '1e5bc9d7e413ddd7902c2932e418702b84d0cc07';

export { TransportError };

/**
 * The release store over an in-memory table: the real Table Storage adapter, so the core tests exercise the
 * same index and ETag logic as production (test/adapters/releaseStore.test.ts holds the fake to Azurite).
 * `table.down = true` makes every call fail like an unreachable account.
 */
export function memoryStore(): { store: ReleaseStore; table: MemoryTable } {
  const table = new MemoryTable();
  return { store: new TableReleaseStore(table.client), table };
}

/** Durable state over `store` with the documented defaults (24 h windows, 10 failures), overridable. */
export function stateDeps(
  store: ReleaseStore = memoryStore().store,
  overrides: Partial<StateDeps> = {},
): StateDeps {
  return {
    store,
    idempotencyWindowMs: 24 * 3_600_000,
    trackMaxMs: 24 * 3_600_000,
    queueMaxMs: 24 * 3_600_000,
    maxFailures: 10,
    ...overrides,
  };
}
