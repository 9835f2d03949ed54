/**
 * The webhook signing secret reader: TTL cache, single flight, stale-on-outage, rotation, weak keys.
 */
import { VaultReader } from '../../src/adapters/vaultReader';
import { WebhookSecret } from '../../src/adapters/webhookSecret';
import { recordingLogger } from '../support/fakes';

const KEY = 'k'.repeat(64);
const NEXT = 'n'.repeat(64);

function reader(answers: (() => Promise<{ value?: string; properties?: object }>)[], ttlMs = 900_000) {
  const clock = { ms: 0 };
  let calls = 0;
  const secretClient = {
    getSecret: (name: string) => {
      expect(name).toBe('webhook-key');
      const answer = answers[Math.min(calls, answers.length - 1)]!;
      calls += 1;
      return answer();
    },
  };
  const log = recordingLogger();
  const secret = new WebhookSecret({
    vault: new VaultReader({ client: secretClient as never, ttlMs, now: () => clock.ms }),
    name: 'webhook-key',
    ttlMs,
    now: () => clock.ms,
    log,
  });
  return { secret, clock, log, calls: () => calls };
}

const value = (v: string) => () => Promise.resolve({ value: v, properties: { version: 'v1' } });
const failure = (statusCode?: number) => () =>
  Promise.reject(Object.assign(new Error(`boom ${KEY}`), { name: 'RestError', statusCode }));

describe('WebhookSecret', () => {
  it('reads once per TTL, with one read for concurrent callers', async () => {
    const { secret, clock, calls } = reader([value(KEY)]);
    expect(await Promise.all([secret.keys(), secret.keys(), secret.keys()])).toEqual([[KEY], [KEY], [KEY]]);
    expect(calls()).toBe(1);
    clock.ms += 899_999;
    await secret.keys();
    expect(calls()).toBe(1);
    clock.ms += 1;
    await secret.keys();
    expect(calls()).toBe(2);
  });

  it('accepts several keys during a rotation (whitespace or comma separated)', async () => {
    const { secret } = reader([value(` ${NEXT}\n${KEY} `)]);
    expect(await secret.keys()).toEqual([NEXT, KEY]);
    const { secret: commas } = reader([value(`${NEXT},${KEY}`)]);
    expect(await commas.keys()).toEqual([NEXT, KEY]);
  });

  it('keeps the cached keys when Key Vault is unavailable after the TTL', async () => {
    const { secret, clock, log } = reader([value(KEY), failure(503)]);
    await secret.keys();
    clock.ms += 1_000_000;
    expect(await secret.keys()).toEqual([KEY]);
    expect(log.lines.join('\n')).toMatch(/keeping the cached webhook signing secret/);
  });

  it.each([
    [503, 'SecretUnavailable'],
    [403, 'SecretUnavailable'],
    [undefined, 'SecretUnavailable'],
    [404, 'ConfigurationError'],
  ])('on a cold start, Key Vault HTTP %p is %s, with no secret in the message', async (status, code) => {
    const { secret } = reader([failure(status)]);
    const error = (await secret.keys().catch((e: unknown) => e)) as { code: string; message: string };
    expect(error.code).toBe(code);
    expect(error.message).toMatch(/webhook-key/);
    expect(error.message).not.toContain(KEY);
  });

  it('a read cut short by a timeout signal (TimeoutError) is the out-of-time SecretUnavailable, as for the MDE app credentials', async () => {
    const timedOut = () => () =>
      Promise.reject(
        Object.assign(new Error('The operation was aborted due to timeout'), { name: 'TimeoutError' }),
      );
    const { secret } = reader([timedOut()]);
    await expect(secret.keys()).rejects.toMatchObject({
      code: 'SecretUnavailable',
      retryAfterMs: 30_000,
      message: expect.stringMatching(/did not answer within the time this request had left/),
    });
  });

  it.each([[''], ['short'], [`${KEY} short`]])(
    'refuses a missing or weak key (%p) as ConfigurationError',
    async (v) => {
      const { secret } = reader([value(v)]);
      await expect(secret.keys()).rejects.toMatchObject({ code: 'ConfigurationError' });
    },
  );

  it('a Key Vault that never answers: SecretUnavailable within the budget, and the read is aborted', async () => {
    const signals: AbortSignal[] = [];
    const secret = new WebhookSecret({
      vault: new VaultReader({
        ttlMs: 900_000,
        now: () => 0,
        client: {
          getSecret: (_name: string, options?: { abortSignal?: AbortSignal }) =>
            new Promise((_resolve, reject) => {
              signals.push(options!.abortSignal!);
              options!.abortSignal!.addEventListener('abort', () =>
                reject(Object.assign(new Error('aborted'), { name: 'AbortError' })),
              );
            }),
        } as never,
      }),
      name: 'webhook-key',
      ttlMs: 900_000,
      now: () => 0,
      log: recordingLogger(),
    });
    await expect(secret.keys({ remainingMs: 50 })).rejects.toMatchObject({ code: 'SecretUnavailable' });
    await new Promise((r) => setTimeout(r, 20));
    expect(signals.map((s) => s.aborted)).toEqual([true]);
  });
});
