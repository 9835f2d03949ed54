/**
 * Helpers for tests that drive the registered functions through the local host (`dev/host.ts`): the app's
 * dependencies over the fakes of `fakes.ts`, and a capture of everything the app writes to logs and the
 * console. Kept apart from `fakes.ts` so that core unit tests do not load the composition root or the host.
 */
import { setDependencies, type AppDependencies, type CallerChecks } from '../../src/composition';
import { parseSettings } from '../../src/config';
import type { StateDeps } from '../../src/core/pipeline';
import { onLog } from '../../dev/host';
import { FakeClock, FakeDefender, fakeDeps } from './fakes';

/** What {@link installFakeApp} installs besides its defaults. */
export interface FakeAppOptions {
  defender?: FakeDefender;
  clock?: FakeClock;
  /** Settings besides `KEY_VAULT_URL` (the only one required), as the app reads them. */
  env?: Record<string, string>;
  /** The request queue's max delivery count (default 10, the app's). */
  maxDeliveryCount?: number;
  /** Durable state (absent: none, as without `STATE_TABLE_URL`). */
  state?: StateDeps;
  /** HTTP caller checks (absent: none). */
  callers?: CallerChecks;
}

/**
 * Installs the app's dependencies over fakes (a scripted Defender API, a fake clock, recording telemetry), so
 * that the registered functions run against them; `setDependencies()` (no argument) forgets them.
 * @returns the fakes, to script and inspect, and what was installed
 */
export function installFakeApp(options: FakeAppOptions = {}) {
  const fake = fakeDeps(options.defender, options.clock);
  const app: AppDependencies = {
    release: fake.deps,
    config: parseSettings({ KEY_VAULT_URL: 'https://kv.example/', ...options.env }).config,
    maxDeliveryCount: options.maxDeliveryCount ?? 10,
    telemetry: fake.telemetry,
    ...(options.state ? { state: options.state } : {}),
    ...(options.callers ? { callers: options.callers } : {}),
  };
  setDependencies(app);
  return { ...fake, app };
}

/** What the app wrote while captured; see {@link captureOutput}. */
export interface CapturedOutput {
  /** Invocation logs (`context.log` & co.), `[level] message`. */
  logs: string[];
  /** Console output, one line per call; an Error with its stack and cause. */
  console: string[];
  /** Puts the console back and stops collecting invocation logs. */
  restore(): void;
}

/**
 * Captures everything the app writes as text: its invocation logs (through the local host) and the console
 * (silenced meanwhile), for tests that scan them, e.g. for secrets. Call `restore()` when done.
 */
export function captureOutput(): CapturedOutput {
  const logs: string[] = [];
  const lines: string[] = [];
  onLog((entry) => logs.push(`[${entry.level}] ${entry.message}`));
  const spies = (['log', 'info', 'warn', 'error', 'debug', 'trace'] as const).map((level) =>
    jest.spyOn(console, level).mockImplementation((...args: unknown[]) => {
      lines.push(
        args.map((a) => (a instanceof Error ? `${a.stack} ${String(a.cause)}` : String(a))).join(' '),
      );
    }),
  );
  return {
    logs,
    console: lines,
    restore() {
      for (const spy of spies) spy.mockRestore();
      onLog(undefined);
    },
  };
}
