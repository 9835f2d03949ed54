/**
 * Timer trigger (`RESUME_SCHEDULE`, default every 30 s): hands parked releases whose budget frees back to the
 * request queue (an array: one message per release), and deletes expired release records. Without durable
 * state nothing is parked and it does nothing.
 * NCRONTAB schedules: https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions
 */
import { app, type InvocationContext, type Timer } from '@azure/functions';
import { createLogger } from '../adapters/logger';
import { getDependencies } from '../composition';
import { timerSchedule } from '../config';
import { HAND_BACK_SOON_MS } from '../core/pipeline';
import { handBackDue } from '../core/resume';
import { requestQueue } from './queues';

/** Handler of the resume timer. */
export async function resumeReleasesTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const deps = getDependencies();
  const log = createLogger(context);
  if (!deps.state) return;
  const config = deps.config;
  const perMinute = 'rateLimit' in config ? config.rateLimit.perMinute : 100;
  let messages;
  try {
    messages = await handBackDue({
      store: deps.state.store,
      clock: deps.release.clock,
      log,
      // Two minutes' worth of the release budget: enough to keep it busy until the next run.
      perRun: 2 * perMinute,
      // The timer's own period: handed back at most one run early, they wait briefly for their budget.
      lookAheadMs: HAND_BACK_SOON_MS,
    });
  } catch (error) {
    log.warn('Parked releases not handed back this run: durable state unavailable', {
      error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
    });
    return;
  }
  if (messages.length > 0) context.extraOutputs.set(requestQueue, messages);
}

// Resolved now, not as `%RESUME_SCHEDULE%`: the host refuses to index a function whose binding expression
// names an absent app setting. Worker indexing runs with the app settings in the environment.
const schedule = timerSchedule('RESUME_SCHEDULE');
if (schedule.problem !== undefined) {
  createLogger(console).warn(
    'Invalid RESUME_SCHEDULE; parked releases are handed back on the default schedule',
    {
      problem: schedule.problem,
      schedule: schedule.schedule,
    },
  );
}

app.timer('resumeReleases', {
  schedule: schedule.schedule,
  extraOutputs: [requestQueue],
  handler: resumeReleasesTimer,
});
