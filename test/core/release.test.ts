/**
 * One device's release through the pipeline without durable state: retries, MDE's answers, the budget.
 */
import {
  handleRequest,
  RedeliveryRequested,
  type PipelineDeps,
  type RequestInput,
} from '../../src/core/pipeline';
import { FakeDefender, fakeDeps, MACHINE_ID, TransportError } from '../support/fakes';

const body = { machineId: MACHINE_ID, comment: 'clean', correlationId: 'INC1' };
const http: RequestInput = { body, trigger: 'http', canRedeliver: false, caller: null };

/** Runs one single-device request; its outcome and Retry-After. */
async function processRelease(input: RequestInput, deps: PipelineDeps) {
  const answer = await handleRequest(input, deps);
  return { outcome: answer.outcomes[0]!, retryAfterSeconds: answer.retryAfterSeconds };
}

describe('releasing one device', () => {
  it('retries 503 twice, then reports Accepted with attempts 3', async () => {
    const { deps, defender, telemetry } = fakeDeps(
      new FakeDefender([
        { status: 503, body: {} },
        { status: 503, body: {} },
      ]),
    );
    const { outcome } = await processRelease(http, deps);
    expect(outcome).toMatchObject({ status: 'Accepted', attempts: 3, error: null });
    expect(defender.unisolateCalls).toHaveLength(3);
    expect(telemetry.dependencies.map((d) => d.resultCode)).toEqual(['503', '503', '201']);
    expect(telemetry.outcomes).toHaveLength(1);
  });

  it('waits what Retry-After says on 429', async () => {
    const { deps, clock } = fakeDeps(new FakeDefender([{ status: 429, retryAfter: '2', body: {} }]));
    const { outcome } = await processRelease(http, deps);
    expect(outcome.status).toBe('Accepted');
    expect(clock.sleeps).toEqual([2000]);
  });

  it('answers Throttled with Retry-After when 429 outlasts the budget, without sleeping through it', async () => {
    const { deps, clock } = fakeDeps(new FakeDefender([{ status: 429, retryAfter: '45', body: {} }]));
    const result = await processRelease(http, deps);
    expect(result.outcome).toMatchObject({ status: 'Throttled', error: { code: 'MdeThrottled' } });
    expect(result.retryAfterSeconds).toBe(45);
    expect(clock.sleeps).toEqual([]);
  });

  it('retries a 401 once after refreshing credentials (rotated secret)', async () => {
    const { deps, defender } = fakeDeps(new FakeDefender([{ status: 401, body: {} }]));
    const { outcome } = await processRelease(http, deps);
    expect(outcome).toMatchObject({ status: 'Accepted', attempts: 2 });
    expect(defender.refreshes).toBe(1);
  });

  it('reports Forbidden when MDE still answers 401 with fresh credentials', async () => {
    const { deps, defender } = fakeDeps(
      new FakeDefender([
        { status: 401, body: {} },
        { status: 401, body: {} },
      ]),
    );
    const { outcome } = await processRelease(http, deps);
    expect(outcome).toMatchObject({ status: 'Forbidden', error: { code: 'MdeUnauthorized' } });
    expect(defender.unisolateCalls).toHaveLength(2);
  });

  it('returns the pending action on ActiveRequestAlreadyExists', async () => {
    const older = { ...FakeDefender.action(MACHINE_ID, 'Pending', '2026-11-28T09:00:00Z'), id: 'older' };
    const newer = { ...FakeDefender.action(MACHINE_ID, 'InProgress', '2026-11-28T09:30:00Z'), id: 'newer' };
    const done = { ...FakeDefender.action(MACHINE_ID, 'Succeeded', '2026-11-28T09:45:00Z'), id: 'done' };
    const { deps, defender } = fakeDeps(
      new FakeDefender(
        [
          {
            status: 400,
            body: { error: { code: 'ActiveRequestAlreadyExists', message: 'Action is already in progress' } },
          },
        ],
        [{ status: 200, body: { value: [older, done, newer] } }],
      ),
    );
    const { outcome } = await processRelease(http, deps);
    expect(outcome).toMatchObject({
      status: 'AlreadyInProgress',
      machineAction: { id: 'newer' },
      error: null,
    });
    expect(defender.listCalls).toEqual([`machineId eq '${MACHINE_ID}' and type eq 'Unisolate'`]);
  });

  it('still answers AlreadyInProgress (machineAction null) when the look-up fails', async () => {
    const { deps } = fakeDeps(
      new FakeDefender(
        [{ status: 400, body: { error: { code: 'ActiveRequestAlreadyExists' } } }],
        [{ status: 403, body: {} }],
      ),
    );
    const { outcome } = await processRelease(http, deps);
    expect(outcome).toMatchObject({ status: 'AlreadyInProgress', machineAction: null, error: null });
  });

  it('does not call MDE when the rate limiter would make it wait beyond the budget', async () => {
    const { deps, defender } = fakeDeps();
    for (let i = 0; i < 100; i += 1) {
      const slot = await deps.budget.acquire('unisolate', 'release');
      if (slot.granted) slot.slot.release(true);
    }
    const result = await processRelease(http, deps);
    expect(result.outcome).toMatchObject({ status: 'Throttled', attempts: 0 });
    expect(result.retryAfterSeconds).toBe(60);
    expect(defender.unisolateCalls).toHaveLength(0);
  });

  it('hands transient failures back for redelivery when allowed, reporting no outcome', async () => {
    const resets = Array.from({ length: 20 }, () => new TransportError('network', 'ECONNRESET', 'reset'));
    const { deps, telemetry } = fakeDeps(new FakeDefender(resets));
    await expect(
      processRelease({ body, trigger: 'serviceBus', canRedeliver: true, caller: null }, deps),
    ).rejects.toBeInstanceOf(RedeliveryRequested);
    expect(telemetry.outcomes).toHaveLength(0);
    expect(telemetry.redeliveries).toHaveLength(1);
  });

  it('reports a timeout after retries as Failed with a message that tells what to do', async () => {
    const timeouts = Array.from({ length: 20 }, () => new TransportError('timeout', 'ETIMEDOUT', 'slow'));
    const { deps } = fakeDeps(new FakeDefender(timeouts));
    const { outcome } = await processRelease(http, deps);
    expect(outcome).toMatchObject({ status: 'Failed', error: { code: 'MdeTimeout' } });
    expect(outcome.error?.message).toMatch(/Retry: a repeat answers AlreadyInProgress/);
    expect(outcome.attempts).toBeGreaterThan(1);
  });

  it('never retries a 404 and reports NotFound', async () => {
    const { deps, defender } = fakeDeps(
      new FakeDefender([{ status: 404, body: { error: { code: 'ResourceNotFound' } } }]),
    );
    const { outcome } = await processRelease(http, deps);
    expect(outcome).toMatchObject({ status: 'NotFound', attempts: 1, error: { code: 'MachineNotFound' } });
    expect(defender.unisolateCalls).toHaveLength(1);
  });
});
