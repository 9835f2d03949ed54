/**
 * Deeply nested JSON through the registered handlers. A valid body nested thousands of levels deep is a few
 * KiB, well under the size caps; it must end as one `Invalid` outcome at decoding, on both triggers and in
 * every Service Bus body form, and never reach the idempotency fingerprint (which once overflowed the stack).
 */
import { setDependencies, type AppDependencies } from '../../src/composition';
import { parseSettings } from '../../src/config';
import { MAX_JSON_DEPTH } from '../../src/core/json';
import type { Outcome } from '../../src/core/outcome';
import { FakeDefender, fakeDeps, MACHINE_ID, stateDeps } from '../support/fakes';
import { invokeHttp, invokeServiceBus, loadApp } from '../../dev/host';

function install() {
  const defender = new FakeDefender();
  const { deps, telemetry } = fakeDeps(defender);
  const app: AppDependencies = {
    release: deps,
    config: parseSettings({ KEY_VAULT_URL: 'https://kv.example/' }).config,
    maxDeliveryCount: 10,
    telemetry,
    state: stateDeps(),
  };
  setDependencies(app);
  return { defender };
}

beforeAll(() => loadApp());
afterEach(() => setDependencies());

/** A release request whose `extra` field holds arrays nested so that the whole body is `depth` deep. */
function nestedText(depth: number): string {
  const inner = depth - 1; // the top-level object is one level
  return `{"machineId":"${MACHINE_ID}","comment":"x","extra":${'['.repeat(inner)}${']'.repeat(inner)}}`;
}
const json = { 'content-type': 'application/json' };
const deepMessage = new RegExp(`nested more than ${MAX_JSON_DEPTH} levels deep`);

describe('JSON nesting depth', () => {
  it(`documents a limit well above a release request (depth 3) and accepts a body exactly ${MAX_JSON_DEPTH} deep`, async () => {
    expect(MAX_JSON_DEPTH).toBe(32);
    const { defender } = install();
    const result = await invokeHttp('unisolate', {
      headers: { ...json, 'idempotency-key': 'k-ok' },
      body: nestedText(MAX_JSON_DEPTH),
    });
    expect(result.status).toBe(201);
    expect(defender.unisolateCalls).toHaveLength(1);
  });

  it('HTTP: a valid 40 KB body nested 20,000 levels with an Idempotency-Key is 400 Invalid, not 502', async () => {
    const { defender } = install();
    const body = nestedText(20_000);
    expect(body.length).toBeGreaterThan(40_000);
    for (const text of [body, nestedText(MAX_JSON_DEPTH + 1)]) {
      const result = await invokeHttp('unisolate', {
        headers: { ...json, 'idempotency-key': 'k-deep' },
        body: text,
      });
      expect(result.status).toBe(400);
      expect(result.body).toMatchObject({ status: 'Invalid', error: { code: 'InvalidRequest' } });
      expect((result.body as Outcome).error!.message).toMatch(deepMessage);
      expect(result.messages).toHaveLength(1);
    }
    expect(defender.unisolateCalls).toHaveLength(0);
  });

  it('HTTP: malformed deep JSON reports where it is malformed, not "position 0"', async () => {
    install();
    const text = `{"comment":"x","extra":${'['.repeat(20_000)}}`;
    const result = await invokeHttp('unisolate', { headers: json, body: text });
    expect(result.status).toBe(400);
    expect((result.body as Outcome).error!.message).toMatch(
      /unexpected character "}" at line 1, column 20024 \(position 20023\)/,
    );
  });

  it('Service Bus: reports Invalid on the first delivery for text (which the library parses) and bytes', async () => {
    const { defender } = install();
    const text = nestedText(20_000);
    // Text: the library JSON-parses it, so the handler gets the 20,000-level object; bytes stay a Buffer.
    for (const [i, message] of [text, Buffer.from(text)].entries()) {
      const result = await invokeServiceBus('unisolateServiceBus', message, {
        messageId: `deep-${i}`,
        deliveryCount: 1,
      });
      expect(result.error).toBeUndefined();
      expect(result.messages).toEqual([
        expect.objectContaining({ status: 'Invalid', correlationId: `deep-${i}` }),
      ]);
      expect((result.messages[0] as Outcome).error!.message).toMatch(deepMessage);
    }
    expect(defender.unisolateCalls).toHaveLength(0);
  });
});
