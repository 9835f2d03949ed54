/**
 * The retry loop around one logical Defender API call: the call budget of its API, per-attempt timeout, pure
 * retry decisions, one credential refresh after a 401. The decisions are in `retry.ts`; this only waits.
 */
import type { Budget, MdeApi, Slot, Spender } from './budget';
import { UnisolateError } from './errors';
import type { ApiResponse, AttemptOptions, Clock, DefenderApi } from './ports';
import { TransportError } from './ports';
import { decideRetry, type AttemptFailure, type BackoffPolicy } from './retry';

/** What a call needs. */
export interface CallContext {
  defender: DefenderApi;
  budget: Budget;
  /** Whose share of the budget the call spends. */
  spender: Spender;
  /**
   * Calls reserved in advance (see `reserve` in budget.ts): the first attempt of that API uses its slot while
   * the slot is still valid (the look-ups and checks before it may have outlasted a shared lease).
   */
  reserved?: Map<MdeApi, Slot>;
  clock: Clock;
  random: () => number;
  /** Absolute deadline (ms since epoch) of this invocation's retry budget. */
  deadline: number;
  requestTimeoutMs: number;
  backoff?: BackoffPolicy;
  /** Called after every attempt that got an answer or a transport failure. */
  onAttempt?: (result: { status: string; durationMs: number; success: boolean }) => void;
}

/** Result of a call: the final response (2xx or a non-retriable answer) and how many attempts it took. */
export interface CallResult {
  response: ApiResponse;
  attempts: number;
}

function failureOf(response: ApiResponse): AttemptFailure | undefined {
  if (response.status >= 200 && response.status < 300) return undefined;
  return { kind: 'status', status: response.status, retryAfter: response.retryAfter };
}

function describe(failure: AttemptFailure): string {
  if (failure.kind === 'status') return `HTTP ${failure.status}`;
  if (failure.kind === 'timeout') return 'no answer before the request timeout';
  return `network error ${failure.code}`;
}

/**
 * Runs `send` until it gets a final answer or the budget is spent. Throws `UnisolateError`:
 * `MdeThrottled` (429, or a budget wait beyond the deadline, with `retryAfterMs`), `MdeUnavailable`
 * (5xx / network), `MdeTimeout`; credential errors from the adapter pass through unchanged.
 * A final 4xx (other than 401 before the refresh) is returned, not thrown: its meaning is the caller's.
 */
export async function callMde(
  ctx: CallContext,
  api: MdeApi,
  what: string,
  send: (options: AttemptOptions) => Promise<ApiResponse>,
): Promise<CallResult> {
  let attempts = 0;
  let credentialsRefreshed = false;
  for (;;) {
    // The bearer token first (Key Vault and Entra ID may take seconds), then the slot: a slot is held only for
    // the HTTP request itself, well within its lease.
    await ctx.defender.ensureCredentials({ remainingMs: Math.max(1, ctx.deadline - ctx.clock.now()) });
    const slot = await takeSlot(ctx, api, what, attempts);
    attempts += 1;
    const remainingMs = Math.max(1, ctx.deadline - ctx.clock.now());
    const timeoutMs = Math.min(ctx.requestTimeoutMs, remainingMs);
    const started = ctx.clock.now();
    let failure: AttemptFailure | undefined;
    let response: ApiResponse | undefined;
    try {
      response = await send({ timeoutMs, remainingMs });
      slot.release(true);
      failure = failureOf(response);
      ctx.onAttempt?.({
        status: String(response.status),
        durationMs: ctx.clock.now() - started,
        success: failure === undefined,
      });
    } catch (error) {
      // A transport failure may have reached MDE: it counts. Credentials that could not be had sent nothing.
      slot.release(error instanceof TransportError);
      if (!(error instanceof TransportError)) throw error;
      failure = error.kind === 'timeout' ? { kind: 'timeout' } : { kind: 'network', code: error.code };
      ctx.onAttempt?.({ status: error.code, durationMs: ctx.clock.now() - started, success: false });
    }
    if (failure === undefined && response) return { response, attempts };

    const now = ctx.clock.now();
    const decision = decideRetry({
      attempt: attempts,
      failure: failure!,
      remainingMs: ctx.deadline - now,
      now,
      random: ctx.random(),
      credentialsRefreshed,
      policy: ctx.backoff,
    });
    if (failure?.kind === 'status' && failure.status === 429) {
      // MDE's own word on this API's budget: hold every call of it (every instance, when shared) until then.
      ctx.budget.pause(api, now + (decision.retry ? decision.delayMs : (decision.waitMs ?? 60_000)));
    }
    if (decision.retry) {
      if (decision.refreshCredentials) {
        credentialsRefreshed = true;
        await ctx.defender.refreshCredentials({ remainingMs: Math.max(1, ctx.deadline - ctx.clock.now()) });
      }
      if (decision.delayMs > 0) await ctx.clock.sleep(decision.delayMs);
      continue;
    }
    if (response && decision.reason === 'not-retriable') return { response, attempts };
    throw exhausted(what, failure!, attempts, decision.waitMs);
  }
}

/**
 * A slot of `api`'s budget: the reserved one for the first attempt while it is valid, else one from the
 * budget, waiting for it while the deadline allows. Throws `MdeThrottled` (with when to retry) when it would
 * not come in time.
 */
async function takeSlot(ctx: CallContext, api: MdeApi, what: string, attempts: number): Promise<Slot> {
  const reserved = ctx.reserved?.get(api);
  if (reserved) {
    ctx.reserved!.delete(api);
    // Past its lease the ledger no longer counts a call sent on it: give it back and take a fresh one.
    if (ctx.clock.now() < reserved.validUntil) return reserved;
    reserved.release(false);
  }
  for (;;) {
    const answer = await ctx.budget.acquire(api, ctx.spender);
    if (answer.granted) return answer.slot;
    const remaining = ctx.deadline - ctx.clock.now() - 1;
    if (answer.waitMs > remaining) {
      throw new UnisolateError(
        'MdeThrottled',
        `The Defender API budget of this API (100 calls/minute and 1500/hour per API, or the configured limits) is used up; ${what} was not sent. Retry after ${Math.ceil(answer.waitMs / 1000)} s.`,
        { retryAfterMs: answer.waitMs, attempts },
      );
    }
    await ctx.clock.sleep(answer.waitMs);
  }
}

function exhausted(what: string, failure: AttemptFailure, attempts: number, waitMs?: number): UnisolateError {
  const tries = `${attempts} attempt${attempts === 1 ? '' : 's'}`;
  if (failure.kind === 'status' && failure.status === 429) {
    return new UnisolateError(
      'MdeThrottled',
      `Defender for Endpoint is throttling this app (HTTP 429, limits 100 calls/minute and 1500/hour) and the retry budget is spent after ${tries}; ${what} was not done. Retry after ${Math.ceil((waitMs ?? 60_000) / 1000)} s.`,
      { retryAfterMs: waitMs ?? 60_000, attempts },
    );
  }
  if (failure.kind === 'timeout') {
    return new UnisolateError(
      'MdeTimeout',
      `Defender for Endpoint did not answer in time (${tries}); ${what} may or may not have been queued. Retry: a repeat answers AlreadyInProgress if it was.`,
      { retryAfterMs: waitMs, attempts },
    );
  }
  return new UnisolateError(
    'MdeUnavailable',
    `Defender for Endpoint is unavailable (${describe(failure)} after ${tries}); ${what} was not done. Retry later.`,
    { retryAfterMs: waitMs, attempts },
  );
}
