/**
 * Timer trigger (`TRACK_SCHEDULE`, default every minute): polls the MachineAction of every accepted release
 * until it ends and sends the second, `completed` outcome to the response queue (an array: one message per
 * release that ended). Without durable state configured there is nothing to track and it does nothing.
 * NCRONTAB schedules: https://learn.microsoft.com/en-us/azure/azure-functions/functions-bindings-timer#ncrontab-expressions
 */
import { app, type InvocationContext, type Timer } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { getDependencies } from '../composition';
import { timerSchedule } from '../config';
import { trackReleases } from '../core/tracking';
import { responseQueue } from './queues';

/** Handler of the tracker timer. */
export async function trackReleasesTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const deps = getDependencies();
  const log = createLogger(context);
  if (!deps.state) return;
  try {
    await trackReleases({
      ...deps.release,
      store: deps.state.store,
      trackMaxMs: deps.state.trackMaxMs,
      log,
      // The host writes them to the response queue when the run returns.
      send: (completions) => context.extraOutputs.set(responseQueue, completions),
    });
  } catch (error) {
    // The store could not be listed: nothing was claimed, the next run tries again.
    log.warn('Release tracking skipped: durable state unavailable', {
      error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
    });
  }
}

// Resolved now, not as `%TRACK_SCHEDULE%`: the host refuses to index a function whose binding expression names
// an absent app setting. Worker indexing runs with the app settings in the environment.
const schedule = timerSchedule('TRACK_SCHEDULE');
if (schedule.problem !== undefined) {
  createLogger(console).warn('Invalid TRACK_SCHEDULE; the tracker runs on the default schedule', {
    problem: schedule.problem,
    schedule: schedule.schedule,
  });
}

app.timer('trackReleases', {
  schedule: schedule.schedule,
  extraOutputs: [responseQueue],
  handler: trackReleasesTimer,
});
