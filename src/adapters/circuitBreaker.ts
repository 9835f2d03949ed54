/**
 * A circuit breaker around the state store: after one operation fails (timeout, refused, unreachable), every
 * operation fails at once for a cool-down, then one is tried again. A state table that accepts connections and
 * never answers then costs a request at most one operation timeout, not one per device or per step: the
 * pipeline carries on without durable state (its documented degraded mode) and the budget uses this
 * instance's limits. Malformed stored data ({@link MalformedDataError}) is the problem of one row, not of the
 * store: it passes through without opening the breaker.
 */
import { MalformedDataError, type Logger, type ReleaseStore } from '../core/ports';

/** Options of {@link withCircuitBreaker}. */
export interface BreakerOptions {
  now: () => number;
  log: Logger;
  /** How long the store is not asked after a failure (default 30 s). */
  coolDownMs?: number;
}

/** Thrown while the breaker is open: the store was not asked. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
}

/** The store behind a circuit breaker (same interface: the pipeline already treats a throw as "unavailable"). */
export function withCircuitBreaker(store: ReleaseStore, options: BreakerOptions): ReleaseStore {
  const coolDownMs = options.coolDownMs ?? 30_000;
  let openUntil = 0;
  const guard = async <T>(operation: () => Promise<T>): Promise<T> => {
    const now = options.now();
    if (now < openUntil) {
      throw new StoreUnavailableError('The state store failed a moment ago; not asked again yet');
    }
    try {
      return await operation();
    } catch (error) {
      // The store answered; only what it holds in one row is unusable. Its caller decides what that means.
      if (error instanceof MalformedDataError) throw error;
      if (options.now() >= openUntil) {
        options.log.warn('State store failed; its operations fail at once for a while', {
          coolDownMs,
          error: error instanceof Error ? error.message.slice(0, 200) : 'unknown',
        });
      }
      openUntil = options.now() + coolDownMs;
      throw error;
    }
  };
  return {
    readKey: (...a) => guard(() => store.readKey(...a)),
    insertKey: (...a) => guard(() => store.insertKey(...a)),
    replaceKey: (...a) => guard(() => store.replaceKey(...a)),
    createReleases: (...a) => guard(() => store.createReleases(...a)),
    readReleases: (...a) => guard(() => store.readReleases(...a)),
    readRelease: (...a) => guard(() => store.readRelease(...a)),
    updateRelease: (...a) => guard(() => store.updateRelease(...a)),
    listDue: (...a) => guard(() => store.listDue(...a)),
    listTracked: (...a) => guard(() => store.listTracked(...a)),
    claimDevice: (...a) => guard(() => store.claimDevice(...a)),
    deleteExpired: (...a) => guard(() => store.deleteExpired(...a)),
    readTrackerPoll: (...a) => guard(() => store.readTrackerPoll(...a)),
    writeTrackerPoll: (...a) => guard(() => store.writeTrackerPoll(...a)),
    readLedger: (...a) => guard(() => store.readLedger(...a)),
    writeLedger: (...a) => guard(() => store.writeLedger(...a)),
  };
}
