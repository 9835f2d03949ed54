/**
 * Handing releases back. A timer lists the releases whose time has come (the due index of the state table,
 * earliest first): parked ones that are due, and running ones whose lease ended (their instance stopped, or
 * they were recorded and never run). It puts a resume message for each on the request queue, where any
 * instance's Service Bus trigger runs it again (`resumeRelease` in the pipeline). Handing back is itself
 * leased: the record is parked again a few minutes ahead, so a message that is lost is handed back again, and
 * a release handed back twice still runs once (taking it is an ETag-checked write). The same timer deletes
 * expired records.
 */
import type { Clock, Logger, ReleaseStore } from './ports';
import { claimable, resumeMessage, type ResumeMessage } from './records';

/** What handing back needs. */
export interface ResumeDeps {
  store: ReleaseStore;
  clock: Clock;
  log: Logger;
  /** Releases handed back per run at most (more would only be parked again). */
  perRun: number;
  /** Releases due this soon are handed back already (they then wait briefly for their budget). */
  lookAheadMs: number;
}

/** How long a handed-back release waits for its resume message before it is handed back again. */
export const HAND_OFF_MS = 5 * 60_000;
/** Expired requests deleted per run at most. */
export const EXPIRED_PER_RUN = 20;

/** One run: the resume messages of the releases due now (for the request queue), after deleting expired ones. */
export async function handBackDue(deps: ResumeDeps): Promise<ResumeMessage[]> {
  const now = deps.clock.now();
  try {
    const deleted = await deps.store.deleteExpired(now, EXPIRED_PER_RUN);
    if (deleted > 0) deps.log.info('Expired release records deleted', { requests: deleted });
  } catch (error) {
    deps.log.warn('Could not delete expired release records; the next run tries again', {
      error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
    });
  }
  const due = await deps.store.listDue(now + deps.lookAheadMs, deps.perRun);
  const messages: ResumeMessage[] = [];
  for (const version of due) {
    const record = version.value;
    // Parked (due within the look-ahead), or running with its lease run out; a lease still running is left.
    if (!claimable(record, now)) continue;
    // One taken back from `running` may have been sent: its next run checks first (`interrupted`).
    const handedOff = await deps.store.updateRelease(
      {
        ...record,
        state: 'queued',
        dueAt: now + HAND_OFF_MS,
        ...(record.state === 'running' ? { interrupted: true } : {}),
      },
      version,
    );
    if (handedOff) messages.push(resumeMessage(record.ref));
  }
  if (messages.length > 0)
    deps.log.info('Releases handed back to the request queue', { count: messages.length });
  return messages;
}
