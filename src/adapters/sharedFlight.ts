/**
 * Time-bounded waiting for calls to Key Vault, the managed identity endpoint and Entra ID.
 *
 * A request may wait for a dependency only as long as its retry budget lasts; a dependency that accepts the
 * connection and never answers must still end the request (as the transient `SecretUnavailable` /
 * `TokenUnavailable`), not hold it open until the platform's front-end timeout. Reads are shared by concurrent
 * requests (single flight), so two bounds apply:
 * - each waiter gives up at its own deadline ({@link within});
 * - the shared read itself is aborted only when its LAST waiter's deadline has passed
 *   ({@link SharedFlight}): one request's short budget never cancels a read another request still waits for.
 * - a read that has run for more than {@link JOIN_WINDOW_MS} is slow or hung: a newcomer starts a read of its
 *   own instead of joining (and prolonging) it, so a struggling dependency sees at most about one new read
 *   per second, and an instance recovers as soon as the dependency answers again.
 *
 * Deadlines are real time (timers), in ms since the epoch; `Infinity` means unbounded (the SDK's own limits).
 */

/** When a waiter gives up: a function, so that a nested read can follow its parent's deadline as it grows. */
export type Deadline = () => number;

/**
 * Retries of the Azure SDK clients these calls go through (Key Vault, Entra ID): few and quick, because each
 * call is bounded by the request's budget and the core retries whole attempts within it.
 */
export const SDK_RETRY_OPTIONS = { maxRetries: 2, retryDelayInMs: 500, maxRetryDelayInMs: 4000 } as const;

/** A deadline `remainingMs` from now (unbounded when undefined). */
export function deadlineIn(remainingMs: number | undefined): Deadline {
  const at = remainingMs === undefined ? Infinity : Date.now() + Math.max(0, remainingMs);
  return () => at;
}

/** What a shared read gets: its abort signal, and its own deadline (the latest of its waiters'). */
export interface FlightContext {
  signal: AbortSignal;
  deadline: Deadline;
}

/** How long after its start a shared read still takes new waiters. */
export const JOIN_WINDOW_MS = 1000;

interface Flight<T> {
  startedAt: number;
  promise: Promise<T>;
  controller: AbortController;
  waiters: Deadline[];
  timer?: NodeJS.Timeout;
}

/** The error an aborted shared read is aborted with (SDKs reject with their own `AbortError`). */
export class DeadlineExceeded extends Error {
  override readonly name = 'DeadlineExceeded';
  constructor() {
    super('The time budget of every request waiting for this call is spent.');
  }
}

/** One shared read at a time; see the module comment. */
export class SharedFlight<T> {
  private flight?: Flight<T>;

  /**
   * Joins the running read, or starts one with `start`. The read is aborted (its signal fires) once every
   * joined deadline has passed. The returned promise is the shared one: bound the waiter with {@link within}.
   */
  join(start: (context: FlightContext) => Promise<T>, deadline: Deadline): Promise<T> {
    let flight = this.flight;
    // An aborted read is about to fail, an old one is slow or hung: a newcomer starts afresh.
    if (!flight || flight.controller.signal.aborted || Date.now() - flight.startedAt > JOIN_WINDOW_MS) {
      const controller = new AbortController();
      const created: Flight<T> = {
        startedAt: Date.now(),
        controller,
        waiters: [],
        promise: Promise.resolve(undefined as T),
      };
      const latest: Deadline = () => Math.max(...created.waiters.map((d) => d()));
      created.promise = Promise.resolve()
        .then(() => start({ signal: controller.signal, deadline: latest }))
        .finally(() => {
          clearTimeout(created.timer);
          if (this.flight === created) this.flight = undefined;
        });
      // Settles quietly even when every waiter already gave up.
      created.promise.catch(() => undefined);
      this.flight = flight = created;
    }
    flight.waiters.push(deadline);
    this.schedule(flight);
    return flight.promise;
  }

  /** (Re)arms the abort timer for the latest deadline; re-checked when it fires (deadlines may have grown). */
  private schedule(flight: Flight<T>): void {
    clearTimeout(flight.timer);
    flight.timer = undefined;
    const at = Math.max(...flight.waiters.map((d) => d()));
    if (at === Infinity || flight.controller.signal.aborted) return;
    flight.timer = setTimeout(
      () => {
        if (Date.now() >= Math.max(...flight.waiters.map((d) => d()))) {
          flight.controller.abort(new DeadlineExceeded());
        } else {
          this.schedule(flight);
        }
      },
      Math.max(0, at - Date.now()),
    );
    flight.timer.unref();
  }
}

/** Waits for `promise` until `deadline`; then rejects with `onTimeout()` (the promise itself goes on). */
export function within<T>(promise: Promise<T>, deadline: Deadline, onTimeout: () => Error): Promise<T> {
  const at = deadline();
  if (at === Infinity) return promise;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), Math.max(0, at - Date.now()));
    timer.unref();
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: Error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/**
 * Whether an SDK call ended because an abort signal fired (a deadline of ours, `AbortSignal.timeout`, or a
 * shared read aborted with {@link DeadlineExceeded}), not because of the service.
 */
export function isAbortError(error: unknown): boolean {
  return error instanceof Error && ['AbortError', 'TimeoutError', 'DeadlineExceeded'].includes(error.name);
}

/**
 * Waits for `promise` until `signal` aborts; then rejects with `onAbort()`. For SDK calls that accept an abort
 * signal but do not honour it on every path (e.g. MSAL's token requests), so that the shared read still ends.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal, onAbort: () => Error): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(onAbort());
  }
  return new Promise<T>((resolve, reject) => {
    const abort = (): void => reject(onAbort());
    signal.addEventListener('abort', abort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', abort);
        resolve(value);
      },
      (error: Error) => {
        signal.removeEventListener('abort', abort);
        reject(error);
      },
    );
  });
}
