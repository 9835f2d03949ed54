/** Fakes for core unit tests: a scripted Defender API, a fake clock, recording telemetry and logs. */
import type { Outcome } from '../../src/core/outcome';
import type {
  ApiResponse,
  Clock,
  DefenderApi,
  DependencyRecord,
  Logger,
  Telemetry,
} from '../../src/core/ports';
import { TransportError } from '../../src/core/ports';
import { RateLimiter } from '../../src/core/rateLimiter';
import type { ReleaseDeps } from '../../src/core/releaseDevice';

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
  refreshes = 0;
  constructor(
    public script: Script[] = [],
    public listScript: Script[] = [],
  ) {}

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
    this.unisolateCalls.push({ machineId, comment, timeoutMs: options.timeoutMs });
    return this.next(this.script, () => ({ status: 201, body: FakeDefender.action(machineId) }));
  }

  listMachineActions(filter: string): Promise<ApiResponse> {
    this.listCalls.push(filter);
    return this.next(this.listScript, () => ({ status: 200, body: { value: [] } }));
  }

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

/** Core dependencies over fakes. */
export function fakeDeps(defender = new FakeDefender(), clock = new FakeClock()) {
  const telemetry = new RecordingTelemetry();
  const log = recordingLogger();
  const deps: ReleaseDeps = {
    defender,
    limiter: RateLimiter.forMde(100, 1500, clock.now),
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
