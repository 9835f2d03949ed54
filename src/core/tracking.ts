/**
 * Tracking releases to their end. `Accepted` only means MDE queued the Unisolate action; the device is
 * released when the action reaches `Succeeded`, possibly hours later (an offline device picks it up when it
 * comes back). Every accepted release is recorded; the tracker polls its MachineAction
 * (`GET /api/machineactions/{id}`, https://learn.microsoft.com/en-us/defender-endpoint/api/get-machineaction-object)
 * within the shared rate budget and, when it ends, produces the second ("completed") outcome.
 *
 * Two trackers never both report a completion: closing a release is one atomic ETag-checked write
 * ({@link ReleaseStore.closeOpen}); only its winner reports.
 */
import { callMde, type CallContext } from './callMde';
import { toUnisolateError } from './errors';
import type { MachineAction, Outcome, OutcomeStatus } from './outcome';
import { isMachineAction, unisolateActionsOf } from './machineActions';
import type { Logger, ReleaseRecord, ReleaseStore, Versioned } from './ports';
import type { ReleaseDeps } from './releaseDevice';
import { CORRELATION_ID_PATTERN, MAX_DEVICES } from './request';

/** MachineAction statuses that end an action, and the completion status each gives. */
export const TERMINAL_STATUS: Readonly<Record<string, Extract<OutcomeStatus, 'Released' | 'ReleaseFailed'>>> =
  {
    Succeeded: 'Released',
    Failed: 'ReleaseFailed',
    TimeOut: 'ReleaseFailed',
    Cancelled: 'ReleaseFailed',
  };

/** MDE action ids are GUIDs; anything else is never put in a URL. */
const ACTION_ID = /^[0-9A-Za-z-]{1,128}$/;

/** Defaults of the tracker. */
export const TRACKING_DEFAULTS = {
  /** Polls per timer run: a fifth of MDE's 100 calls/minute, so releases keep most of the budget. */
  maxPollsPerRun: 20,
  /** Longest one poll may wait for a rate-limiter slot and retries. */
  pollBudgetMs: 10_000,
} as const;

/**
 * Delay before the next poll of a release received `ageMs` ago: every run for the first 15 minutes (most
 * online devices finish within a minute or two), every 5 minutes up to 2 hours, then every 15 minutes
 * (offline devices), so long waits cost few calls.
 */
export function nextPollDelayMs(ageMs: number): number {
  if (ageMs < 15 * 60_000) return 0;
  if (ageMs < 2 * 3_600_000) return 5 * 60_000;
  return 15 * 60_000;
}

/**
 * The id a release is recorded (and looked up by the status endpoint) under: its correlation id, or
 * `<correlationId>:<index>` for one device of a bulk request (they share the correlation id).
 */
export function releaseIdOf(record: Pick<ReleaseRecord, 'correlationId' | 'index'>): string {
  return record.index === undefined ? record.correlationId : `${record.correlationId}:${record.index}`;
}

const correlationIdRe = new RegExp(CORRELATION_ID_PATTERN);

/**
 * Whether `id` can name a release ({@link releaseIdOf}): a correlation id (the request's rule,
 * `CORRELATION_ID_PATTERN`), or one followed by `:<index>` of a bulk device (0 to MAX_DEVICES - 1).
 */
export function isReleaseId(id: string): boolean {
  if (correlationIdRe.test(id)) return true;
  const bulk = /^(.+):(0|[1-9]\d*)$/.exec(id);
  return bulk !== null && Number(bulk[2]) < MAX_DEVICES && correlationIdRe.test(bulk[1]!);
}

/** The record of an accepted release, or undefined when the outcome is not one that is tracked. */
export function newReleaseRecord(outcome: Outcome, trackMaxMs: number): ReleaseRecord | undefined {
  if (outcome.status !== 'Accepted' && outcome.status !== 'AlreadyInProgress') return undefined;
  if (!outcome.machineId) return undefined;
  const receivedAt = Date.parse(outcome.receivedAt);
  const actionId = outcome.machineAction?.id;
  return {
    correlationId: outcome.correlationId,
    ...(outcome.index === undefined ? {} : { index: outcome.index }),
    machineId: outcome.machineId,
    phase: 'accepted',
    outcome: { ...outcome, phase: 'accepted' },
    machineActionId: actionId && ACTION_ID.test(actionId) ? actionId : null,
    receivedAt,
    trackUntil: receivedAt + trackMaxMs,
    nextPollAt: receivedAt,
    polls: 0,
  };
}

/**
 * Records an accepted release for tracking. Best effort: the release has happened whatever the store says,
 * so a failure is logged (the release is then not tracked) and never changes the answer.
 */
export async function recordRelease(
  store: ReleaseStore,
  outcome: Outcome,
  trackMaxMs: number,
  log: Logger,
): Promise<boolean> {
  const record = newReleaseRecord(outcome, trackMaxMs);
  if (!record) return false;
  try {
    await store.saveRelease(record);
    return true;
  } catch (error) {
    log.warn('Could not record the release for tracking; no completion message will follow', {
      correlationId: outcome.correlationId,
      error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
    });
    return false;
  }
}

/** The second outcome of a release: same shape, `phase: "completed"`. */
export function completionOutcome(
  record: ReleaseRecord,
  status: Extract<OutcomeStatus, 'Released' | 'ReleaseFailed' | 'TrackingExpired'>,
  machineAction: MachineAction | null,
  now: number,
  maxHours: number,
): Outcome {
  let error: Outcome['error'] = null;
  if (status === 'ReleaseFailed') {
    error = {
      code: 'ReleaseActionFailed',
      message: `Defender for Endpoint reports the Unisolate action ${machineAction?.id ?? ''} as ${machineAction?.status ?? 'failed'}: the device is still isolated. Check the device in the Defender portal (it must be online) and send the release again.`,
    };
  } else if (status === 'TrackingExpired') {
    error = {
      code: 'TrackingExpired',
      message: `The Unisolate action did not finish within ${maxHours} h (last status ${machineAction?.status ?? 'unknown'}); tracking stopped. The device is probably offline: check it in the Defender portal; the action still applies when it reconnects unless it times out.`,
    };
  }
  return {
    ...record.outcome,
    status,
    phase: 'completed',
    machineAction,
    error,
    completedAt: new Date(now).toISOString(),
    attempts: record.polls,
  };
}

/** What the tracker needs (the release path's Defender client, limiter and clock: one shared budget). */
export interface TrackerDeps extends Pick<
  ReleaseDeps,
  'defender' | 'budget' | 'clock' | 'random' | 'telemetry' | 'log' | 'requestTimeoutMs' | 'apiHost'
> {
  store: ReleaseStore;
  /** TRACK_MAX_HOURS in ms. */
  trackMaxMs: number;
  maxPollsPerRun?: number;
  pollBudgetMs?: number;
}

/** Finds the Unisolate action of an AlreadyInProgress release recorded without it (newest first). */
async function findAction(ctx: CallContext, record: ReleaseRecord): Promise<MachineAction | null> {
  const actions = await unisolateActionsOf(ctx, record.machineId, 'the look-up of the tracked action');
  return actions?.find((a) => ACTION_ID.test(a.id)) ?? null;
}

/**
 * One tracker run: polls the open releases that are due (at most `maxPollsPerRun`), saves progress, and
 * returns the completion outcomes this run won (to send to the response queue). Never throws for one
 * release's problem; stops early when the rate budget is used up (the rest waits for the next run).
 */
export async function trackReleases(deps: TrackerDeps): Promise<Outcome[]> {
  const maxPolls = deps.maxPollsPerRun ?? TRACKING_DEFAULTS.maxPollsPerRun;
  const maxHours = Math.round(deps.trackMaxMs / 3_600_000);
  const due = await deps.store.listOpen(deps.clock.now(), maxPolls);
  const completions: Outcome[] = [];

  for (const entry of due) {
    const record = entry.value;
    const ctx: CallContext = {
      defender: deps.defender,
      budget: deps.budget,
      spender: 'tracker',
      clock: deps.clock,
      random: deps.random,
      deadline: deps.clock.now() + (deps.pollBudgetMs ?? TRACKING_DEFAULTS.pollBudgetMs),
      requestTimeoutMs: deps.requestTimeoutMs,
      onAttempt: (a) =>
        deps.telemetry.trackDependency({
          name: 'GET /api/machineactions/{id}',
          target: deps.apiHost,
          resultCode: a.status,
          success: a.success,
          durationMs: a.durationMs,
          correlationId: record.correlationId,
        }),
    };
    try {
      const completion = await trackOne(entry, ctx, deps, maxHours);
      if (completion) completions.push(completion);
    } catch (error) {
      const failure = toUnisolateError(error);
      deps.log.warn('Could not poll a tracked release; it is retried on the next run', {
        correlationId: record.correlationId,
        errorCode: failure.code,
      });
      if (failure.code === 'MdeThrottled') break;
    }
  }
  return completions;
}

async function trackOne(
  entry: Versioned<ReleaseRecord>,
  ctx: CallContext,
  deps: TrackerDeps,
  maxHours: number,
): Promise<Outcome | undefined> {
  const record = entry.value;
  const now = deps.clock.now();
  let action: MachineAction | null = record.outcome.machineAction;

  if (now < record.trackUntil) {
    let actionId = record.machineActionId;
    if (!actionId) {
      action = await findAction(ctx, record);
      actionId = action?.id ?? null;
    }
    if (actionId) {
      const { response } = await callMde(ctx, 'getMachineAction', 'the status poll of the release', (o) =>
        ctx.defender.getMachineAction(actionId, o),
      );
      if (response.status === 200 && isMachineAction(response.body)) action = response.body;
      else {
        deps.log.warn('Unexpected answer to a MachineAction poll; retrying on the next run', {
          correlationId: record.correlationId,
          status: response.status,
        });
      }
    }
    const polled: ReleaseRecord = {
      ...record,
      machineActionId: actionId,
      polls: record.polls + 1,
      outcome: { ...record.outcome, machineAction: action },
    };
    const terminal =
      action && actionId && action.id === actionId ? TERMINAL_STATUS[action.status] : undefined;
    if (!terminal) {
      const at = deps.clock.now();
      const saved = await deps.store.updateOpen(
        { ...polled, nextPollAt: at + nextPollDelayMs(at - record.receivedAt) },
        entry.etag,
      );
      if (!saved)
        deps.log.info('Another tracker updated this release first', { correlationId: record.correlationId });
      return undefined;
    }
    return close(polled, entry.etag, terminal, action, deps, maxHours);
  }
  return close(record, entry.etag, 'TrackingExpired', action, deps, maxHours);
}

async function close(
  record: ReleaseRecord,
  etag: string,
  status: Extract<OutcomeStatus, 'Released' | 'ReleaseFailed' | 'TrackingExpired'>,
  action: MachineAction | null,
  deps: TrackerDeps,
  maxHours: number,
): Promise<Outcome | undefined> {
  const now = deps.clock.now();
  const completion = completionOutcome(record, status, action, now, maxHours);
  // The ETag-checked close is the claim: only its winner reports the completion.
  const won = await deps.store.closeOpen({ ...record, phase: 'completed', outcome: completion }, etag);
  if (!won) {
    deps.log.info('Another tracker completed this release first', { correlationId: record.correlationId });
    return undefined;
  }
  const ended = Date.parse(action?.lastUpdateDateTimeUtc ?? '');
  const endedAt =
    status !== 'TrackingExpired' && Number.isFinite(ended) && ended >= record.receivedAt ? ended : now;
  deps.telemetry.trackCompletion(completion, endedAt - record.receivedAt);
  deps.log.info('Release completed', {
    correlationId: record.correlationId,
    machineId: record.machineId,
    status,
    machineActionStatus: action?.status ?? null,
  });
  return completion;
}
