/**
 * Durable release records. With durable state, every device of every request is its own release: one record
 * (in the state table) that says where it stands, so that each device proceeds on its own, is parked when the
 * Defender API budget cannot take it soon, is picked up again by any instance, gets exactly one answer-phase
 * outcome whatever is redelivered, and is tracked to its end.
 *
 * States:
 * - `running`: an invocation is releasing it, until `dueAt` (its lease; after that anyone may take it over,
 *   and the resume timer hands it back then, so a release whose instance stopped still gets its answer);
 * - `queued`: parked until `dueAt` (when its budget frees, or after a transient failure's backoff); the
 *   resume timer hands it back to the request queue then;
 * - `accepted`: MDE accepted the release (or one was already running); tracked until its action ends;
 * - `done`: ended without a release to track (refused, not found, not isolated, failed...);
 * - `completed`: the tracked action ended (or tracking expired).
 */
import { isCorrelationId, MAX_DEVICES, type DeviceTarget } from './request';
import type { Outcome, Trigger } from './outcome';

/** Which release: its request's correlation id (records are listed by it) and id, and the device's index. */
export interface ReleaseRef {
  correlationId: string;
  /** The request: derived from its idempotency key when it has one (so a repeat finds it), else random. */
  requestId: string;
  /** The device's index in a bulk request; null for a single-device request. */
  index: number | null;
}

/** Where a release stands (see the module comment). */
export type ReleaseState = 'running' | 'queued' | 'accepted' | 'done' | 'completed';

/** What was asked for one device, as validated when the request arrived. */
export interface ReleaseAsk {
  target: DeviceTarget;
  comment: string;
  /** The audit text (authenticated caller and/or declared requester). */
  requestedBy: string | null;
  force: boolean;
  trigger: Trigger;
  /** When the request arrived (ms since epoch). */
  receivedAt: number;
}

/** One device release. */
export interface ReleaseRecord {
  ref: ReleaseRef;
  ask: ReleaseAsk;
  /** The device id: the target's, or the one its name resolved to (null until resolved). */
  machineId: string | null;
  state: ReleaseState;
  /**
   * `running`: end of the current run's lease; `queued`: when to run it again; `accepted` with a completion
   * stored: end of the tracker's claim on sending it (another run resends it after that). Ms since epoch.
   */
  dueAt: number;
  /** Runs started (a run is one attempt of the whole release: checks, then the release call). */
  runs: number;
  /** Runs that ended in a transient failure (after `MAX_DELIVERY_COUNT` of them the release ends Failed). */
  failures: number;
  /** When it was first parked (`QUEUE_MAX_HOURS` counts from here); null if never. */
  queuedAt: number | null;
  /** Whether its one `queued` message was sent. */
  queuedSent: boolean;
  /** Its answer so far: the `queued` outcome while parked, then the `accepted`-phase outcome. */
  answer: Outcome | null;
  /** The `completed`-phase outcome, once the tracked action ended. */
  completion: Outcome | null;
  /** The MachineAction being tracked (accepted releases; null when MDE did not say which). */
  machineActionId: string | null;
  /** Tracking gives up (`TrackingExpired`) at this time. */
  trackUntil: number;
  /**
   * Taken back from `running` (its lease ran out: its instance stopped, or the store failed as its answer was
   * recorded): it may have been sent, so its next run checks the isolation state before sending it. Cleared
   * when a run records its end.
   */
  interrupted?: boolean;
}

/** How long records are kept beyond the longest window that reads them. */
export const RECORD_MARGIN_MS = 3_600_000;

/** Whether an invocation may (re)start this release now: parked, or running with its lease run out. */
export function claimable(record: ReleaseRecord, now: number): boolean {
  return record.state === 'queued' || (record.state === 'running' && record.dueAt <= now);
}

/** Whether the release has its answer (accepted or ended) and needs no further run. */
export function answered(record: ReleaseRecord): boolean {
  return record.state === 'accepted' || record.state === 'done' || record.state === 'completed';
}

/** The latest outcome of a release (for the status endpoint): its completion, else its answer. */
export function latestOutcome(record: ReleaseRecord): Outcome | null {
  return record.completion ?? record.answer;
}

/** Whether `value` looks like a record this version wrote (stored JSON is re-checked when read). */
export function isReleaseRecord(value: unknown): value is ReleaseRecord {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Partial<ReleaseRecord>;
  return (
    typeof r.ref === 'object' &&
    r.ref !== null &&
    typeof r.ref.correlationId === 'string' &&
    typeof r.ref.requestId === 'string' &&
    typeof r.state === 'string' &&
    typeof r.dueAt === 'number' &&
    typeof r.ask === 'object' &&
    r.ask !== null
  );
}

/**
 * The message the resume timer puts on the request queue to hand a parked release back: it names the
 * release only (the record holds what was asked, as validated when the request arrived).
 */
export interface ResumeMessage {
  resumeRelease: ReleaseRef;
}

/** Builds the resume message of a release. */
export function resumeMessage(ref: ReleaseRef): ResumeMessage {
  return { resumeRelease: { correlationId: ref.correlationId, requestId: ref.requestId, index: ref.index } };
}

const REQUEST_ID = /^[0-9a-f]{32}$/;

/**
 * The release a request-queue message hands back, when it is a resume message: validated like any input
 * (a forged one can only name a release that exists, to run it as it was asked). Undefined otherwise.
 */
export function resumedRelease(body: unknown): ReleaseRef | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const value = (body as Partial<ResumeMessage>).resumeRelease;
  if (typeof value !== 'object' || value === null) return undefined;
  const { correlationId, requestId, index } = value as Partial<ReleaseRef>;
  if (typeof correlationId !== 'string' || !isCorrelationId(correlationId)) return undefined;
  if (typeof requestId !== 'string' || !REQUEST_ID.test(requestId)) return undefined;
  if (index !== null && !(Number.isInteger(index) && index! >= 0 && index! < MAX_DEVICES)) return undefined;
  return { correlationId, requestId, index: index ?? null };
}
