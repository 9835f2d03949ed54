/**
 * Hostile input, property-based (fast-check), through the REGISTERED functions as the worker invokes them
 * (`dev/host`): for arbitrary bodies, headers, route values and Service Bus payloads the handlers
 * never throw, always answer a documented status with a documented outcome, send exactly one outcome, and
 * never call the Defender API unless the input is valid (judged by an oracle written from the README's
 * request contract, independent of src/core/request.ts). Log lines never carry a raw line break.
 */
import fc from 'fast-check';
import { setDependencies, type AppDependencies, type CallerChecks } from '../../src/composition';
import { parseSettings } from '../../src/config';
import { ERROR_TABLE, SUCCESS_HTTP } from '../../src/core/outcome';
import { computeSignature, SignatureVerifier } from '../../src/core/signature';
import { FakeClock, FakeDefender, fakeDeps, MACHINE_ID } from '../support/fakes';
import { invokeHttp, invokeServiceBus, loadApp, onLog } from '../../dev/host';

/** What the app logged through `context.log` & co. (every invocation of this file). */
const capturedLogs: string[] = [];
onLog((entry) => capturedLogs.push(`[${entry.level}] ${entry.message}`));

const NUM_RUNS = 100;
const SECRET = 'fuzz-webhook-secret-0123456789abcdef0123456789';

const DOCUMENTED_HTTP = new Set([
  ...Object.values(ERROR_TABLE).map((r) => r.http),
  ...Object.values(SUCCESS_HTTP),
]);
const DOCUMENTED_STATUS = new Set<string>([
  ...Object.values(ERROR_TABLE).map((r) => r.status),
  ...Object.keys(SUCCESS_HTTP),
]);
const ERROR_CODES = new Set(Object.keys(ERROR_TABLE));
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const RAW_LINE_BREAK = /[\r\n\u2028\u2029]/;

/** Installs fake dependencies whose Defender API counts every call (any method but refreshCredentials). */
function install(callers?: CallerChecks) {
  const clock = new FakeClock();
  const fake = new FakeDefender();
  const calls: string[] = [];
  const defender = new Proxy(fake, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function' || property === 'refreshCredentials') return value;
      return (...args: unknown[]) => {
        calls.push(String(property));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const { deps, telemetry } = fakeDeps(defender, clock);
  const app: AppDependencies = {
    release: deps,
    config: parseSettings({ KEY_VAULT_URL: 'https://kv.example/' }).config,
    maxDeliveryCount: 10,
    telemetry,
    callers,
  };
  setDependencies(app);
  return { calls, fake, telemetry, clock };
}

function signing(clock: FakeClock): CallerChecks {
  return {
    policy: { platformAuthEnabled: false, allowedRoles: [] },
    webhookSecret: { keys: async () => [SECRET] },
    signatures: new SignatureVerifier({ now: clock.now }),
  };
}

/** The documented outcome shape (README), whatever extra fields other features add. */
function expectOutcome(value: unknown, trigger: 'http' | 'serviceBus'): Record<string, unknown> {
  expect(value).toEqual(
    expect.objectContaining({
      schemaVersion: 1,
      correlationId: expect.any(String),
      trigger,
      receivedAt: expect.stringMatching(ISO),
      completedAt: expect.stringMatching(ISO),
      attempts: expect.any(Number),
    }),
  );
  const outcome = value as Record<string, unknown>;
  expect(DOCUMENTED_STATUS).toContain(outcome.status);
  expect(
    outcome.machineId === null ||
      (typeof outcome.machineId === 'string' && /^[0-9a-f]{40}$/.test(outcome.machineId)),
  ).toBe(true);
  expect(outcome.requestedBy === null || typeof outcome.requestedBy === 'string').toBe(true);
  expect(outcome.machineAction === null || typeof outcome.machineAction === 'object').toBe(true);
  const error = outcome.error as { code: string; message: string } | null;
  if (outcome.status === 'Accepted' || outcome.status === 'AlreadyInProgress') expect(error).toBeNull();
  else {
    expect(ERROR_CODES).toContain(error?.code);
    expect(typeof error?.message).toBe('string');
  }
  return outcome;
}

// ---- the oracle: what the README's contract calls a valid release request ---------------------------------

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u2028\u2029]/;
const HEX40 = /^[0-9a-fA-F]{40}$/;

type Field = 'machineId' | 'comment' | 'correlationId' | 'requestedBy';

/** Whether a decoded body is a valid request for the route (`routeId` undefined: POST /api/unisolate). */
function isValidRequest(body: unknown, routeId: string | undefined): boolean {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return false;
  const fields = new Map<Field, unknown[]>();
  for (const [key, value] of Object.entries(body)) {
    const name = (['machineId', 'comment', 'correlationId', 'requestedBy'] as Field[]).find(
      (f) => f.toLowerCase() === key.toLowerCase(),
    );
    if (name) fields.set(name, [...(fields.get(name) ?? []), value]);
  }
  if ([...fields.values()].some((values) => values.length > 1)) return false; // same key, two casings
  const get = (name: Field): unknown => fields.get(name)?.[0] ?? null;
  const text = (name: Field, ok: (s: string) => boolean, required = false): boolean => {
    const value = get(name);
    if (value === null) return !required;
    return typeof value === 'string' && ok(value);
  };
  if (routeId !== undefined && !HEX40.test(routeId)) return false;
  const bodyId = get('machineId');
  if (bodyId !== null) {
    if (typeof bodyId !== 'string' || !HEX40.test(bodyId.trim())) return false;
    if (routeId !== undefined && bodyId.trim().toLowerCase() !== routeId.toLowerCase()) return false;
  } else if (routeId === undefined) return false;
  const comment = (s: string): boolean => {
    const c = s.replace(/\r\n/g, '\n').trim();
    return c.length >= 1 && c.length <= 1000 && !CONTROL.test(c);
  };
  const correlation = (s: string): boolean => /^[\x20-\x7E]{1,128}$/.test(s.trim());
  const requester = (s: string): boolean => {
    const r = s.trim();
    return r.length >= 1 && r.length <= 256 && !CONTROL.test(r) && !/[\r\n\t]/.test(r);
  };
  return (
    text('comment', comment, true) && text('correlationId', correlation) && text('requestedBy', requester)
  );
}

function decodes(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
}

// ---- generators --------------------------------------------------------------------------------------------

const hex40 = fc.oneof(
  // Mostly one device, so that route and body often agree; sometimes any id.
  { weight: 4, arbitrary: fc.constantFrom(MACHINE_ID, MACHINE_ID.toUpperCase()) },
  { weight: 1, arbitrary: fc.stringMatching(/^[0-9a-fA-F]{40}$/) },
);
const machineIdValue = fc.oneof(
  { weight: 10, arbitrary: hex40 },
  { weight: 1, arbitrary: hex40.map((id) => ` ${id} `) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(MACHINE_ID, '', '../../api/machines', `${MACHINE_ID}/x`, `${MACHINE_ID}0`),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 45 }) },
  {
    weight: 1,
    arbitrary: fc.oneof(fc.integer(), fc.constant(null), fc.boolean(), fc.array(hex40, { maxLength: 2 })),
  },
);
/** Hostile text: edge lengths, control characters, line separators, random strings, non-strings. */
const junkText = fc.oneof(
  fc.constantFrom(
    '',
    '   ',
    'x'.repeat(1000),
    ` ${'y'.repeat(1000)} `,
    'z'.repeat(1001),
    'nul\u0000',
    'cr\ronly',
    'ls\u2028sep',
    'del\u007f',
    'tab\tinside',
  ),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.oneof(fc.integer(), fc.constant(null), fc.boolean(), fc.object({ maxDepth: 1 })),
);
const commentValue = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      'Unisolate machine since it was clean and validated',
      'multi\nline\tok',
      'crlf\r\nok',
    ),
  },
  { weight: 3, arbitrary: junkText },
);
const optionalText = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(undefined, 'INC0012345', ' analyst@contoso.com ') },
  { weight: 1, arbitrary: junkText },
);
const casing = (name: string) =>
  fc.constantFrom(name, name.toLowerCase(), name[0]!.toUpperCase() + name.slice(1), name.toUpperCase());
/** Present in about one case in `n`. */
const sometimes = <T>(arbitrary: fc.Arbitrary<T>, n: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: n - 1, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary });

/** A request object: the four fields (maybe absent, in any casing), junk keys, prototype keys, duplicates. */
const requestObject = fc
  .record({
    machineId: fc.option(fc.tuple(casing('machineId'), machineIdValue), { nil: undefined, freq: 4 }),
    comment: fc.option(fc.tuple(casing('comment'), commentValue), { nil: undefined, freq: 8 }),
    correlationId: fc.tuple(casing('correlationId'), optionalText),
    requestedBy: fc.tuple(casing('requestedBy'), optionalText),
    duplicate: sometimes(fc.tuple(fc.constantFrom('Comment', 'MACHINEID', 'correlationID'), commentValue), 8),
    extra: fc.dictionary(
      fc.string({ maxLength: 8 }).map((k) => `x_${k}`),
      fc.jsonValue({ maxDepth: 2 }),
      {
        maxKeys: 3,
      },
    ),
    proto: sometimes(
      fc.tuple(fc.constantFrom('__proto__', 'constructor', 'prototype'), fc.jsonValue({ maxDepth: 2 })),
      3,
    ),
  })
  .map((parts) => {
    const body: Record<string, unknown> = {};
    for (const [key, part] of Object.entries(parts)) {
      if (part === undefined) continue;
      if (key === 'extra') Object.assign(body, part);
      else {
        const [name, value] = part as [string, unknown];
        if (value === undefined) continue;
        Object.defineProperty(body, name, { value, enumerable: true, configurable: true, writable: true });
      }
    }
    return body;
  });

const bodyText = fc.oneof(
  { weight: 6, arbitrary: requestObject.map((o) => JSON.stringify(o)) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '',
      '{',
      '{"comment": "a",}',
      '[]',
      'null',
      '"text"',
      '['.repeat(5000),
      `{"machineId":"${MACHINE_ID}","comment":"x"}trailing`,
    ),
  },
);
const contentType = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/json'),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data', ''),
  },
  { weight: 1, arbitrary: fc.stringMatching(/^[\x21-\x7e][\x20-\x7e]{0,30}$/) },
);
const JSON_CONTENT = /^(application\/(?:[\w.+-]+\+)?json|text\/json)\s*(;|$)/i;
/** A JSON content type, or none declared (empty, or what fetch reports for a string body without one). */
const acceptsType = (type: string): boolean =>
  type === '' || type === 'text/plain;charset=UTF-8' || JSON_CONTENT.test(type.trim());
const headerName = fc
  .stringMatching(/^[a-z][a-z0-9-]{0,20}$/)
  .filter((h) => h !== 'content-type' && h !== 'content-length');
const headerValue = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,40}[\x21-\x7e])?$/);
const extraHeaders = fc.dictionary(
  fc.oneof(
    headerName,
    fc.constantFrom('x-ms-client-principal', 'x-unisolate-signature', 'x-unisolate-timestamp'),
  ),
  headerValue,
  { maxKeys: 4 },
);
const route = fc.oneof(
  { weight: 4, arbitrary: fc.constant<string | undefined>(undefined) },
  { weight: 4, arbitrary: hex40 },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      MACHINE_ID.toUpperCase(),
      '..',
      '%2e%2e',
      `${MACHINE_ID}%00`,
      "1' or '1'='1",
      '',
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 45 }) },
);

beforeAll(() => loadApp());
afterEach(() => setDependencies());

/** Runs one HTTP invocation and checks the invariants every answer must hold. */
async function invokeChecked(
  routeId: string | undefined,
  headers: Record<string, string>,
  body: string,
): Promise<{ outcome: Record<string, unknown>; status: number }> {
  const before = capturedLogs.length;
  const result = await invokeHttp(routeId === undefined ? 'unisolate' : 'unisolateMachine', {
    params: routeId === undefined ? {} : { machineId: routeId },
    headers,
    body,
  });
  expect(DOCUMENTED_HTTP).toContain(result.status);
  const outcome = expectOutcome(result.body, 'http');
  const table = outcome.error
    ? ERROR_TABLE[(outcome.error as { code: keyof typeof ERROR_TABLE }).code].http
    : null;
  expect(result.status).toBe(table ?? SUCCESS_HTTP[outcome.status as keyof typeof SUCCESS_HTTP]);
  // Exactly one outcome, the same in the response and on the queue.
  expect(result.messages).toHaveLength(1);
  expect(JSON.parse(JSON.stringify(result.messages[0]))).toEqual(result.body);
  for (const line of capturedLogs.slice(before)) expect(line).not.toMatch(RAW_LINE_BREAK);
  return { outcome, status: result.status };
}

describe('HTTP triggers under hostile input', () => {
  it('answer a documented status and outcome, once, and call Defender only for valid requests', async () => {
    await fc.assert(
      fc.asyncProperty(route, contentType, extraHeaders, bodyText, async (routeId, type, extra, body) => {
        const { calls, fake, telemetry } = install();
        const headers = { ...extra, 'content-type': type };
        const { outcome } = await invokeChecked(routeId, headers, body);
        const decoded = decodes(body);
        const valid = acceptsType(type) && decoded.ok && isValidRequest(decoded.value, routeId);
        if (valid) {
          expect(calls.length).toBeGreaterThan(0);
          for (const call of fake.unisolateCalls) expect(call.machineId).toMatch(/^[0-9a-f]{40}$/);
        } else {
          expect(calls).toEqual([]);
          expect(['Invalid', 'Unauthorized']).toContain(outcome.status);
        }
        expect(telemetry.outcomes).toHaveLength(1);
      }),
      { numRuns: NUM_RUNS * 3 },
    );
  });

  it('with signing on: refuse every request without a valid signature (401), never calling Defender', async () => {
    const signature = fc.oneof(
      fc.constant(undefined),
      headerValue,
      fc.stringMatching(/^sha256=[0-9a-f]{64}$/),
      fc.stringMatching(/^(sha1|SHA256|sha512|)=[0-9a-zA-Z+/=]{0,70}$/),
    );
    const timestamp = fc.oneof(
      fc.constant(undefined),
      fc.integer({ min: -1e10, max: 1e13 }).map(String),
      headerValue,
    );
    await fc.assert(
      fc.asyncProperty(route, bodyText, signature, timestamp, async (routeId, body, sig, ts) => {
        const clock = new FakeClock();
        const { calls } = install(signing(clock));
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (sig !== undefined) headers['x-unisolate-signature'] = sig;
        if (ts !== undefined) headers['x-unisolate-timestamp'] = ts;
        const { outcome, status } = await invokeChecked(routeId, headers, body);
        expect(status === 401 || status === 413).toBe(true);
        expect(outcome.status).toBe(status === 401 ? 'Unauthorized' : 'Invalid');
        expect(calls).toEqual([]);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('with signing on: a correctly signed request is judged on its content, once; its replay is refused', async () => {
    await fc.assert(
      fc.asyncProperty(route, bodyText, fc.integer({ min: -300, max: 300 }), async (routeId, body, skew) => {
        const clock = new FakeClock();
        const { calls } = install(signing(clock));
        const ts = String(Math.floor(clock.now() / 1000) + skew);
        const headers = {
          'content-type': 'application/json',
          'x-unisolate-timestamp': ts,
          'x-unisolate-signature': computeSignature(SECRET, ts, body),
        };
        const first = await invokeChecked(routeId, headers, body);
        const decoded = decodes(body);
        // The signature covers the body, not the URL: on the machine route the body must name the device too.
        const object = decoded.ok && typeof decoded.value === 'object' && decoded.value !== null;
        const unboundRoute =
          routeId !== undefined &&
          object &&
          !Array.isArray(decoded.value) &&
          !Object.entries(decoded.value as object).some(
            ([key, value]) => key.toLowerCase() === 'machineid' && value != null,
          );
        const valid = decoded.ok && isValidRequest(decoded.value, routeId) && !unboundRoute;
        expect(first.outcome.status === 'Unauthorized').toBe(unboundRoute);
        expect(calls.length > 0).toBe(valid);
        const before = calls.length;
        const replay = await invokeChecked(routeId, headers, body);
        expect(replay).toMatchObject({ status: 401, outcome: { status: 'Unauthorized' } });
        expect(calls.length).toBe(before);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('with app roles required: refuse every caller without the role (401/403), never calling Defender', async () => {
    const claim = fc.record({
      typ: fc.constantFrom('roles', 'upn', 'appid', 'name', 'role', 'scp'),
      val: fc.oneof(
        fc.constantFrom('Reader', 'Unisolate.Invoke.Extra', 'unisolate'),
        fc.string({ maxLength: 20 }),
      ),
    });
    const principal = fc.oneof(
      fc
        .array(claim, { maxLength: 5 })
        .map((claims) => Buffer.from(JSON.stringify({ auth_typ: 'aad', claims })).toString('base64')),
      headerValue,
      fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v)).toString('base64')),
      fc.constant(undefined),
    );
    await fc.assert(
      fc.asyncProperty(route, bodyText, principal, async (routeId, body, header) => {
        const clock = new FakeClock();
        const { calls } = install({
          policy: { platformAuthEnabled: true, allowedRoles: ['Unisolate.Invoke'] },
          signatures: new SignatureVerifier({ now: clock.now }),
        });
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (header !== undefined) headers['x-ms-client-principal'] = header;
        const { outcome, status } = await invokeChecked(routeId, headers, body);
        expect([401, 403, 413]).toContain(status);
        if (status !== 413) expect(outcome.status).toBe('Unauthorized');
        expect(calls).toEqual([]);
      }),
      { numRuns: NUM_RUNS },
    );
  });
});

describe('Service Bus trigger under hostile input', () => {
  const payload = fc.oneof(
    { weight: 3, arbitrary: requestObject },
    { weight: 2, arbitrary: requestObject.map((o) => JSON.stringify(o)) },
    { weight: 2, arbitrary: requestObject.map((o) => Buffer.from(JSON.stringify(o))) },
    { weight: 1, arbitrary: requestObject.map((o) => new Uint8Array(Buffer.from(JSON.stringify(o)))) },
    { weight: 1, arbitrary: requestObject.map((o) => new TextEncoder().encode(JSON.stringify(o)).buffer) },
    { weight: 1, arbitrary: fc.anything({ maxDepth: 2 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 100 }) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 100 }).map((a) => Buffer.from(a)) },
    {
      weight: 1,
      arbitrary: fc.constantFrom<unknown>(null, undefined, 0, -1, NaN, true, [], [{}], '', '{', 'null'),
    },
  );
  const metadata = fc.record(
    {
      deliveryCount: fc.oneof(fc.integer({ min: -1, max: 20 }), fc.constant('x'), fc.constant(null)),
      messageId: fc.oneof(fc.string({ maxLength: 40 }), fc.integer()),
      correlationId: fc.oneof(fc.string({ maxLength: 200 }), fc.constant(null)),
    },
    { requiredKeys: [] },
  );

  function decodePayload(message: unknown): unknown {
    if (message instanceof Uint8Array) return decodes(Buffer.from(message).toString('utf8'));
    if (message instanceof ArrayBuffer) return decodes(Buffer.from(message).toString('utf8'));
    if (typeof message === 'string') return decodes(message);
    return { ok: true, value: message };
  }

  it('send exactly one documented outcome and never throw (nothing transient here), Defender only when valid', async () => {
    await fc.assert(
      fc.asyncProperty(payload, metadata, async (message, meta) => {
        const { calls, telemetry } = install();
        const before = capturedLogs.length;
        const result = await invokeServiceBus('unisolateServiceBus', message, meta);
        expect(result.error).toBeUndefined();
        expect(result.messages).toHaveLength(1);
        const outcome = expectOutcome(result.messages[0], 'serviceBus');
        const decoded = decodePayload(message) as { ok: boolean; value?: unknown };
        const valid = decoded.ok && isValidRequest(decoded.value, undefined);
        if (valid) expect(calls.length).toBeGreaterThan(0);
        else {
          expect(calls).toEqual([]);
          expect(outcome.status).toBe('Invalid');
        }
        expect(telemetry.outcomes).toHaveLength(1);
        for (const line of capturedLogs.slice(before)) expect(line).not.toMatch(RAW_LINE_BREAK);
      }),
      { numRuns: NUM_RUNS * 2 },
    );
  });

  it.each<[string, unknown]>([
    ['an object', { machineId: MACHINE_ID, comment: 'ok' }],
    ['a JSON string', JSON.stringify({ machineId: MACHINE_ID, comment: 'ok' })],
    ['a Buffer', Buffer.from(JSON.stringify({ machineId: MACHINE_ID, comment: 'ok' }))],
    ['a Uint8Array', new TextEncoder().encode(JSON.stringify({ machineId: MACHINE_ID, comment: 'ok' }))],
    [
      'an ArrayBuffer',
      new TextEncoder().encode(JSON.stringify({ machineId: MACHINE_ID, comment: 'ok' })).buffer,
    ],
  ])('accept a valid request as %s', async (_kind, message) => {
    const { calls } = install();
    const result = await invokeServiceBus('unisolateServiceBus', message);
    expect(result.messages).toEqual([expect.objectContaining({ status: 'Accepted', machineId: MACHINE_ID })]);
    expect(calls.length).toBeGreaterThan(0);
  });

  it.each<[string, unknown]>([
    ['a number', 42],
    ['NaN', NaN],
    ['a boolean', true],
    ['null', null],
    ['undefined', undefined],
    ['an array', [{ machineId: MACHINE_ID, comment: 'ok' }]],
    ['an empty string', ''],
    ['an empty Buffer', Buffer.alloc(0)],
    ['invalid UTF-8 bytes', Buffer.from([0xff, 0xfe, 0x7b])],
    ['deeply nested JSON', '['.repeat(100_000)],
  ])('report %s as Invalid and complete (no throw, no Defender call)', async (_kind, message) => {
    const { calls } = install();
    const result = await invokeServiceBus('unisolateServiceBus', message);
    expect(result.error).toBeUndefined();
    expect(result.messages).toEqual([expect.objectContaining({ status: 'Invalid' })]);
    expect(calls).toEqual([]);
  });

  // The library JSON-parses the queued text once (into the inner JSON text); the handler must not parse it again.
  it('report a JSON string of a string as Invalid (no Defender call)', async () => {
    const { calls } = install();
    const message = JSON.stringify(JSON.stringify({ machineId: MACHINE_ID, comment: 'ok' }));
    const result = await invokeServiceBus('unisolateServiceBus', message);
    expect(result.error).toBeUndefined();
    expect(result.messages).toEqual([
      expect.objectContaining({
        status: 'Invalid',
        error: expect.objectContaining({ message: expect.stringContaining('encoded twice') }),
      }),
    ]);
    expect(calls).toEqual([]);
  });

  it('complete a poison message with an Invalid outcome on every delivery (no redelivery loop)', async () => {
    for (const deliveryCount of [1, 2, 9, 10]) {
      const { calls } = install();
      const result = await invokeServiceBus('unisolateServiceBus', Buffer.from('\u0000{not json'), {
        deliveryCount,
      });
      expect(result.error).toBeUndefined();
      expect(result.messages).toEqual([expect.objectContaining({ status: 'Invalid' })]);
      expect(calls).toEqual([]);
    }
  });
});

describe('log injection', () => {
  it.each([
    ['comment', { comment: 'ok\r\n[error] FAKE: admin logged in\u2028[info] forged' }],
    ['correlationId', { comment: 'fine', correlationId: 'INC1\r\n[error] forged line\u2029x' }],
    ['requestedBy', { comment: 'fine', requestedBy: 'eve\n[warn] forged' }],
    ['machineId', { comment: 'fine', machineId: `${MACHINE_ID}\r\n[error] forged` }],
  ])('a %s with CR/LF/U+2028 never reaches a log line raw', async (_field, fields) => {
    const consoleLines: string[] = [];
    const spies = (['log', 'info', 'warn', 'error', 'debug'] as const).map((level) =>
      jest.spyOn(console, level).mockImplementation((...args: unknown[]) => {
        consoleLines.push(args.map(String).join(' '));
      }),
    );
    try {
      install();
      const before = capturedLogs.length;
      const body = JSON.stringify({ machineId: MACHINE_ID, ...fields });
      await invokeHttp('unisolate', { headers: { 'content-type': 'application/json' }, body });
      await invokeServiceBus('unisolateServiceBus', body, { correlationId: 'SB\r\n[error] forged' });
      const lines = [...capturedLogs.slice(before), ...consoleLines];
      expect(lines.length).toBeGreaterThan(0);
      for (const line of lines) {
        expect(line).not.toMatch(RAW_LINE_BREAK);
        expect(line).not.toMatch(/^\[error\] (FAKE|forged)/m);
      }
    } finally {
      for (const spy of spies) spy.mockRestore();
    }
  });
});
