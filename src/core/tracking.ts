/**
 * Tracking releases to their end. `Accepted` only means MDE queued the Unisolate action; the device is
 * released when the action reaches `Succeeded`, possibly hours later (an offline device picks it up when it
 * comes back). The tracker (a timer) follows every accepted release and, when its action ends, produces the
 * second (`completed`) outcome.
 *
 * Cost: one run polls every tracked release with one list call,
 * `GET /api/machineactions?$filter=type eq 'Unisolate' and creationDateTimeUtc ge <oldest>` (up to 10,000
 * actions a page, https://learn.microsoft.com/defender-endpoint/api/get-machineactions-collection), spent from
 * the tracker's own share of that API's budget, so it never takes what releases need. Runs poll less often as
 * releases age ({@link nextPollDelayMs}). A release is written only when its action's status changes.
 *
 * A completion is sent at least once, and in the normal case once. Closing a release takes two ETag-checked
 * writes of its record: a claim (the record stays `accepted`, with its `completion` and a short lease in
 * `dueAt`: "completing"), then, once the completion was handed to `send`, `completed`. Two trackers never both
 * claim it. When the send fails, or the run stops before it, the record stays completing and a later run sends
 * the very same message again (at once after a failed send, after the lease when the run stopped): a consumer
 * that sees it twice dedupes by correlation id and `"phase": "completed"` (with `index` in a bulk).
 */
import { callMde, type CallContext } from './callMde';
import { toUnisolateError } from './errors';
import { isMachineAction, newestFirst } from './machineActions';
import type { MachineAction, Outcome, OutcomeStatus } from './outcome';
import type { ReleaseRecord } from './records';
import type { ReleaseDeps } from './release';
import type { ReleaseStore, TrackedRelease, Versioned } from './ports';

/** MachineAction statuses that end an action, and the completion status each gives. */
export const TERMINAL_STATUS: Readonly<Record<string, Extract<OutcomeStatus, 'Released' | 'ReleaseFailed'>>> =
  {
    Succeeded: 'Released',
    Failed: 'ReleaseFailed',
    TimeOut: 'ReleaseFailed',
    Cancelled: 'ReleaseFailed',
  };

/** Defaults of the tracker. */
export const TRACKING_DEFAULTS = {
  /** Longest one run may wait for its budget and retries. */
  pollBudgetMs: 10_000,
  /** Tracked releases read per run. */
  maxTracked: 5_000,
  /** Pages of actions read per run (10,000 each). */
  maxPages: 5,
} as const;

/**
 * How long a run's claim on a completion lasts: the rest of the run (closing the other releases, sending,
 * marking them completed) takes less. Another run sends it again only after that.
 */
const COMPLETING_LEASE_MS = 5 * 60_000;

/** MDE's largest page of machine actions. */
const PAGE = 10_000;
/** Actions are looked for from a little before the oldest tracked one (clock skew between MDE and us). */
const LOOKBACK_MS = 5 * 60_000;

/**
 * How long after the last poll a release received `ageMs` ago is due again: every run for the first 15
 * minutes (most online devices finish within a minute or two), every 5 minutes up to 2 hours, then every 15
 * minutes (offline devices), so long waits cost few calls.
 */
export function nextPollDelayMs(ageMs: number): number {
  if (ageMs < 15 * 60_000) return 0;
  if (ageMs < 2 * 3_600_000) return 5 * 60_000;
  return 15 * 60_000;
}

/** The second outcome of a release: its answer, with the action's end. */
export function completionOutcome(
  answer: Outcome,
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
  const { retryAt: _retryAt, ...rest } = answer;
  return {
    ...rest,
    status,
    phase: 'completed',
    machineAction: machineAction ?? answer.machineAction,
    error,
    completedAt: new Date(now).toISOString(),
  };
}

/** What the tracker needs (the release path's Defender client, budget and clock). */
export interface TrackerDeps extends Pick<
  ReleaseDeps,
  'defender' | 'budget' | 'clock' | 'random' | 'telemetry' | 'log' | 'requestTimeoutMs' | 'apiHost'
> {
  store: ReleaseStore;
  /** TRACK_MAX_HOURS in ms. */
  trackMaxMs: number;
  pollBudgetMs?: number;
  /**
   * Hands the completions of a run to the response queue (one message each); throws when they could not be
   * handed on, and they are sent again by the next run.
   */
  send: (completions: Outcome[]) => Promise<void> | void;
}

/** A completion this run claimed: to send, then mark completed. */
interface Claim {
  tracked: TrackedRelease;
  completion: Outcome;
  /** The record as claimed (still `accepted`, with its completion). */
  claimed: Versioned<ReleaseRecord>;
}

/** The Unisolate actions created since `since`, by id and newest per machine; null when MDE would not say. */
async function recentActions(
  ctx: CallContext,
  since: number,
  deps: TrackerDeps,
): Promise<{ byId: Map<string, MachineAction>; byMachine: Map<string, MachineAction> } | null> {
  const filter = `type eq 'Unisolate' and creationDateTimeUtc ge ${new Date(since).toISOString()}`;
  const actions: MachineAction[] = [];
  for (let page = 0; page < TRACKING_DEFAULTS.maxPages; page += 1) {
    const { response } = await callMde(
      ctx,
      'listMachineActions',
      'the status poll of tracked releases',
      (o) => ctx.defender.listMachineActions(filter, o, PAGE, page * PAGE),
    );
    const value = (response.body as { value?: unknown } | null)?.value;
    if (response.status !== 200 || !Array.isArray(value)) {
      deps.log.warn('Tracked releases not polled: unexpected answer to the action list', {
        status: response.status,
        hint:
          response.status === 403 || response.status === 401
            ? 'grant the MDE app Machine.Read.All to track releases to their end'
            : undefined,
      });
      return null;
    }
    actions.push(...value.filter(isMachineAction));
    if (value.length < PAGE) break;
  }
  const byId = new Map(actions.map((a) => [a.id.toLowerCase(), a]));
  const byMachine = new Map<string, MachineAction>();
  for (const action of newestFirst(actions)) {
    const machine = typeof action.machineId === 'string' ? action.machineId.toLowerCase() : '';
    if (machine && !byMachine.has(machine)) byMachine.set(machine, action);
  }
  return { byId, byMachine };
}

/** The action a tracked release follows: its own, else the newest Unisolate of its device since it arrived. */
function actionOf(
  tracked: TrackedRelease,
  actions: { byId: Map<string, MachineAction>; byMachine: Map<string, MachineAction> },
): MachineAction | null {
  if (tracked.machineActionId) return actions.byId.get(tracked.machineActionId.toLowerCase()) ?? null;
  const newest = actions.byMachine.get(tracked.machineId.toLowerCase());
  const created = Date.parse(newest?.creationDateTimeUtc ?? '');
  return newest && created >= tracked.receivedAt - LOOKBACK_MS ? newest : null;
}

/**
 * One tracker run: polls the tracked releases when any is due, claims those whose action ended (or whose
 * tracking expired) and completions an earlier run did not get sent, sends them (`deps.send`), marks them
 * completed, and returns what it sent. Never throws for one release's problem; a poll that cannot be made
 * (budget, MDE) and a send that fails wait for the next run.
 */
export async function trackReleases(deps: TrackerDeps): Promise<Outcome[]> {
  const tracked = await deps.store.listTracked(TRACKING_DEFAULTS.maxTracked);
  if (tracked.length === 0) return [];
  const now = deps.clock.now();
  const maxHours = Math.round(deps.trackMaxMs / 3_600_000);
  const live = tracked.filter((t) => now < t.trackUntil);
  const lastPoll = live.length > 0 ? await deps.store.readTrackerPoll() : 0;
  const due = live.some((t) => now - lastPoll >= nextPollDelayMs(now - t.receivedAt));

  let actions: Awaited<ReturnType<typeof recentActions>> = null;
  if (due) {
    const ctx: CallContext = {
      defender: deps.defender,
      budget: deps.budget,
      spender: 'tracker',
      clock: deps.clock,
      random: deps.random,
      deadline: now + (deps.pollBudgetMs ?? TRACKING_DEFAULTS.pollBudgetMs),
      requestTimeoutMs: deps.requestTimeoutMs,
      onAttempt: (a) =>
        deps.telemetry.trackDependency({
          name: 'GET /api/machineactions',
          target: deps.apiHost,
          resultCode: a.status,
          success: a.success,
          durationMs: a.durationMs,
          correlationId: 'tracker',
        }),
    };
    const since = Math.min(...live.map((t) => t.actionCreatedAt)) - LOOKBACK_MS;
    try {
      actions = await recentActions(ctx, since, deps);
      if (actions) await deps.store.writeTrackerPoll(now);
    } catch (error) {
      deps.log.warn('Tracked releases not polled this run; the next run tries again', {
        errorCode: toUnisolateError(error).code,
      });
    }
  }

  const claims: Claim[] = [];
  for (const release of tracked) {
    const action = actions ? actionOf(release, actions) : null;
    // An end already recorded (a completion claimed before but not sent) needs no new poll.
    const ended =
      (action ? TERMINAL_STATUS[action.status] : undefined) ??
      (release.actionStatus === null ? undefined : TERMINAL_STATUS[release.actionStatus]);
    const status = ended ?? (now >= release.trackUntil ? 'TrackingExpired' : undefined);
    if (!status) {
      // Still running: recorded only when its status changed (Pending → InProgress), for the status route.
      if (action && action.status !== release.actionStatus) await progress(release, action, deps);
      continue;
    }
    try {
      const claim = await close(release, status, action, deps, maxHours);
      if (claim) claims.push(claim);
    } catch (error) {
      deps.log.warn('Could not close a tracked release; the next run tries again', {
        correlationId: release.ref.correlationId,
        error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
      });
    }
  }
  if (claims.length === 0) return [];

  const completions = claims.map((c) => c.completion);
  try {
    await deps.send(completions);
  } catch (error) {
    deps.log.warn('Completion messages not sent; the next run sends them again', {
      count: completions.length,
      error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
    });
    // Give the claims up, so the next run need not wait for them to run out.
    const released = deps.clock.now();
    await Promise.all(
      claims.map(({ claimed }) =>
        deps.store.updateRelease({ ...claimed.value, dueAt: released }, claimed).catch(() => undefined),
      ),
    );
    return [];
  }
  for (const claim of claims) await markCompleted(claim, deps);
  return completions;
}

/** Records a tracked action's new status (the release stays tracked). Best effort. */
async function progress(tracked: TrackedRelease, action: MachineAction, deps: TrackerDeps): Promise<void> {
  try {
    const current = await deps.store.readRelease(tracked.ref);
    const record = current?.value;
    if (!current || !record || record.state !== 'accepted' || !record.answer) return;
    await deps.store.updateRelease(
      { ...record, answer: { ...record.answer, machineAction: action }, machineActionId: action.id },
      current,
    );
  } catch (error) {
    deps.log.warn('Could not record the progress of a tracked release', {
      correlationId: tracked.ref.correlationId,
      error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
    });
  }
}

/**
 * Claims the completion of a release whose action ended (or whose tracking expired): an ETag-checked write
 * that keeps it `accepted` with its completion and a lease. A completion claimed by an earlier run whose
 * lease ran out (its send failed, or the run stopped) is claimed again as it was, to be sent again. Undefined
 * when there is nothing to claim, or another run holds or won it.
 */
async function close(
  tracked: TrackedRelease,
  status: Extract<OutcomeStatus, 'Released' | 'ReleaseFailed' | 'TrackingExpired'>,
  action: MachineAction | null,
  deps: TrackerDeps,
  maxHours: number,
): Promise<Claim | undefined> {
  const current = await deps.store.readRelease(tracked.ref);
  const record = current?.value;
  if (!current || !record || record.state !== 'accepted' || !record.answer) return undefined;
  const now = deps.clock.now();
  // Completing: the run that claimed it may still be sending it until its lease ends.
  if (record.completion && now < record.dueAt) return undefined;
  const completion = record.completion ?? completionOutcome(record.answer, status, action, now, maxHours);
  const claimed: ReleaseRecord = {
    ...record,
    dueAt: now + COMPLETING_LEASE_MS,
    completion,
    // The ended action, also in the tracked entry: a later run knows it ended without polling.
    answer: action ? { ...record.answer, machineAction: action } : record.answer,
    machineActionId: action?.id ?? record.machineActionId,
  };
  // The ETag-checked write is the claim: only its winner sends the completion.
  const etag = await deps.store.updateRelease(claimed, current);
  if (!etag) {
    deps.log.info('Another tracker completed this release first', {
      correlationId: tracked.ref.correlationId,
    });
    return undefined;
  }
  return { tracked, completion, claimed: { value: claimed, etag } };
}

/** Records a sent completion (the release leaves the tracked list) and reports it. Best effort. */
async function markCompleted(claim: Claim, deps: TrackerDeps): Promise<void> {
  const { tracked, completion, claimed } = claim;
  const action = completion.machineAction;
  try {
    const done = await deps.store.updateRelease({ ...claimed.value, state: 'completed' }, claimed);
    if (!done) return;
  } catch (error) {
    // Sent, but still completing: a later run sends it again (at least once).
    deps.log.warn('Could not record a sent completion; a later run sends it again', {
      correlationId: tracked.ref.correlationId,
      error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
    });
    return;
  }
  const now = deps.clock.now();
  const ended = Date.parse(action?.lastUpdateDateTimeUtc ?? '');
  const endedAt =
    completion.status !== 'TrackingExpired' && Number.isFinite(ended) && ended >= tracked.receivedAt
      ? ended
      : now;
  deps.telemetry.trackCompletion(completion, endedAt - tracked.receivedAt);
  deps.log.info('Release completed', {
    correlationId: tracked.ref.correlationId,
    index: tracked.ref.index,
    machineId: tracked.machineId,
    status: completion.status,
    machineActionStatus: action?.status ?? null,
  });
}
