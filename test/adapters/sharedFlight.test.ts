/**
 * The bounds of shared reads: each waiter gives up at its own deadline; the read is aborted only after the
 * last one; an old read takes no newcomers; a nested read follows its parent's deadline as it grows.
 */
import {
  deadlineIn,
  JOIN_WINDOW_MS,
  SharedFlight,
  within,
  type FlightContext,
} from '../../src/adapters/sharedFlight';

/** A read that only ends when aborted; records its context. */
function hangingRead(started: FlightContext[]) {
  return (context: FlightContext) =>
    new Promise<string>((_resolve, reject) => {
      started.push(context);
      context.signal.addEventListener('abort', () => reject(new Error('aborted')));
    });
}

const timeout = () => new Error('timeout');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('SharedFlight', () => {
  it('shares one read; a short waiter times out without aborting it for a longer one', async () => {
    const flight = new SharedFlight<string>();
    const started: FlightContext[] = [];
    const short = deadlineIn(20);
    const long = deadlineIn(120);
    const a = within(flight.join(hangingRead(started), short), short, timeout);
    const b = within(flight.join(hangingRead(started), long), long, timeout);
    await expect(a).rejects.toThrow('timeout');
    expect(started).toHaveLength(1);
    expect(started[0]!.signal.aborted).toBe(false);
    await expect(b).rejects.toThrow(/timeout|aborted/);
    await sleep(10);
    expect(started[0]!.signal.aborted).toBe(true);
  });

  it('an unbounded waiter is never cut short', async () => {
    const flight = new SharedFlight<string>();
    const value = await within(
      flight.join(async () => 'ok', deadlineIn(undefined)),
      deadlineIn(undefined),
      timeout,
    );
    expect(value).toBe('ok');
  });

  it(`a read older than ${JOIN_WINDOW_MS} ms takes no newcomers: they start their own`, async () => {
    const flight = new SharedFlight<string>();
    const started: FlightContext[] = [];
    const first = deadlineIn(JOIN_WINDOW_MS + 300);
    void flight.join(hangingRead(started), first).catch(() => undefined);
    await sleep(JOIN_WINDOW_MS + 50);
    void flight.join(hangingRead(started), deadlineIn(50)).catch(() => undefined);
    await sleep(5);
    expect(started).toHaveLength(2);
    await sleep(400);
    expect(started.map((s) => s.signal.aborted)).toEqual([true, true]);
  });

  it("a nested read follows its parent's deadline when a later waiter extends it", async () => {
    const outer = new SharedFlight<string>();
    const inner = new SharedFlight<string>();
    const innerStarted: FlightContext[] = [];
    const run = (context: FlightContext) => inner.join(hangingRead(innerStarted), context.deadline);
    void outer.join(run, deadlineIn(20)).catch(() => undefined);
    void outer.join(run, deadlineIn(150)).catch(() => undefined);
    await sleep(60);
    // Past the first waiter's deadline, the nested read is still wanted by the second.
    expect(innerStarted[0]!.signal.aborted).toBe(false);
    await sleep(150);
    expect(innerStarted[0]!.signal.aborted).toBe(true);
  });
});
