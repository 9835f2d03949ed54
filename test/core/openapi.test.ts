/**
 * The OpenAPI description is generated from the validation schema and the outcome table; these tests check
 * it against the real parser and handlers, so a drift fails here.
 */
import { buildOpenApi, statusTable, STATUS_DESCRIPTIONS } from '../../src/core/openapi';
import { ERROR_TABLE, type Outcome } from '../../src/core/outcome';
import { ONE_OF_FIELDS, parseReleaseRequest, REQUEST_FIELDS } from '../../src/core/request';
import type { SelfTestCheck, SelfTestReport } from '../../src/core/selfTest';
import { loadApp, request } from '../../dev/host';

/** Reads a nested property of the generated document (throws when missing, so a drift fails loudly). */
function at(value: unknown, ...path: string[]): unknown {
  let current = value;
  for (const key of path) {
    if (typeof current !== 'object' || current === null || !(key in current))
      throw new Error(`missing ${path.join('.')}`);
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

const doc = buildOpenApi('https://example.test');
const bodySchema = at(
  doc,
  'paths',
  '/api/unisolate',
  'post',
  'requestBody',
  'content',
  'application/json',
  'schema',
);
const comment = REQUEST_FIELDS.comment.example;

describe('OpenAPI description', () => {
  it('documents every request field, and each documented example is accepted by the real parser', () => {
    for (const spec of Object.values(REQUEST_FIELDS)) {
      const field = at(bodySchema, 'properties', spec.name) as Record<string, unknown>;
      expect(field.type).toBe(spec.type ?? 'string');
      const identity = ONE_OF_FIELDS.includes(spec.name)
        ? {}
        : { machineId: REQUEST_FIELDS.machineId.example };
      expect(parseReleaseRequest({ comment, ...identity, [spec.name]: spec.example }).ok).toBe(true);
    }
  });

  it('documents string limits the parser enforces (one character over is rejected)', () => {
    for (const spec of Object.values(REQUEST_FIELDS)) {
      if ((spec.type ?? 'string') !== 'string') continue;
      const field = at(bodySchema, 'properties', spec.name) as Record<string, unknown>;
      expect(field.maxLength).toBe(spec.maxLength);
      const tooLong = 'a'.repeat(spec.maxLength + 1);
      const identity = ONE_OF_FIELDS.includes(spec.name)
        ? {}
        : { machineId: REQUEST_FIELDS.machineId.example };
      expect(parseReleaseRequest({ comment: 'x', ...identity, [spec.name]: tooLong }).ok).toBe(false);
      if (typeof field.pattern === 'string') {
        expect(new RegExp(field.pattern).test(spec.example as string)).toBe(true);
      }
    }
  });

  it('documents the bulk limit the parser enforces', () => {
    const devices = at(bodySchema, 'properties', 'devices') as Record<string, unknown>;
    const max = devices.maxItems as number;
    const many = (n: number) =>
      Array.from({ length: n }, (_, i) => ({ machineId: i.toString(16).padStart(40, '0') }));
    expect(parseReleaseRequest({ comment, devices: many(max) }).ok).toBe(true);
    expect(parseReleaseRequest({ comment, devices: many(max + 1) }).ok).toBe(false);
  });

  it('requires comment plus one of the device fields, and only comment on the machine route', () => {
    expect(at(bodySchema, 'required')).toEqual(['comment']);
    expect(at(bodySchema, 'oneOf')).toEqual(ONE_OF_FIELDS.map((f) => ({ required: [f] })));
    expect(parseReleaseRequest({ comment }).ok).toBe(false);
    const route = at(doc, 'paths', '/api/machines/{machineId}/unisolate', 'post', 'requestBody', 'content');
    expect(at(route, 'application/json', 'schema', 'required')).toEqual(['comment']);
  });

  it('documents every outcome status, error code and HTTP status the app can answer', () => {
    const outcome = at(doc, 'components', 'schemas', 'Outcome', 'properties');
    expect(at(outcome, 'status', 'enum')).toEqual(Object.keys(STATUS_DESCRIPTIONS));
    for (const status of statusTable().keys()) expect(Object.keys(STATUS_DESCRIPTIONS)).toContain(status);
    expect(at(outcome, 'error', 'properties', 'code', 'enum')).toEqual(Object.keys(ERROR_TABLE));
    const documented = Object.keys(at(doc, 'paths', '/api/unisolate', 'post', 'responses') as object).map(
      Number,
    );
    const answered = new Set([201, 200, 202, 207, ...Object.values(ERROR_TABLE).map((r) => r.http)]);
    expect(documented.sort()).toEqual([...answered].sort());
  });

  it('documents every field of the Outcome type', () => {
    // Every key of the type: the compiler fails this file when the type gains one that is not listed.
    const fields: Readonly<Record<keyof Outcome, true>> = {
      schemaVersion: true,
      correlationId: true,
      machineId: true,
      status: true,
      machineAction: true,
      error: true,
      trigger: true,
      requestedBy: true,
      receivedAt: true,
      completedAt: true,
      attempts: true,
      retryAt: true,
      deviceName: true,
      candidates: true,
      forced: true,
      index: true,
      warnings: true,
      phase: true,
      replayed: true,
      duplicate: true,
    };
    const outcome = at(doc, 'components', 'schemas', 'Outcome', 'properties') as Record<string, unknown>;
    expect(Object.keys(outcome).sort()).toEqual(Object.keys(fields).sort());
    expect(at(outcome, 'duplicate')).toMatchObject({ type: 'boolean' });
  });

  it('describes every HTTP route the app registers, with its method and function key', async () => {
    const registered = [...(await loadApp()).values()].flatMap((reg) => {
      const trigger = Object.values(reg.bindings).find((b) => b.type === 'httpTrigger');
      // The description does not describe itself.
      if (!trigger || trigger.route === 'openapi.json') return [];
      const methods = (trigger.methods ?? []) as string[];
      return methods.map(
        (m) => `${m.toLowerCase()} /api/${String(trigger.route)} ${String(trigger.authLevel)}`,
      );
    });
    const paths = at(doc, 'paths') as Record<string, Record<string, { security?: unknown[] }>>;
    const described = Object.entries(paths).flatMap(([route, operations]) =>
      Object.entries(operations).map(
        ([method, op]) => `${method} ${route} ${op.security?.length ? 'function' : 'anonymous'}`,
      ),
    );
    expect(registered.length).toBeGreaterThan(3);
    expect(described.sort()).toEqual(registered.sort());
  });

  it('documents every field of the self-test report', () => {
    // Every key of the types: the compiler fails this file when one gains a key that is not listed.
    const reportFields: Readonly<Record<keyof SelfTestReport, true>> = {
      ok: true,
      cloud: true,
      credential: true,
      checks: true,
    };
    const checkFields: Readonly<Record<keyof SelfTestCheck, true>> = {
      name: true,
      ok: true,
      detail: true,
      fix: true,
    };
    const report = at(doc, 'components', 'schemas', 'SelfTestReport') as Record<string, unknown>;
    expect(Object.keys(at(report, 'properties') as object).sort()).toEqual(Object.keys(reportFields).sort());
    const check = at(report, 'properties', 'checks', 'items', 'properties') as object;
    expect(Object.keys(check).sort()).toEqual(Object.keys(checkFields).sort());
    for (const status of ['200', '503']) {
      expect(at(doc, 'paths', '/api/selftest', 'get', 'responses', status, 'content')).toEqual({
        'application/json': { schema: { $ref: '#/components/schemas/SelfTestReport' } },
      });
    }
  });

  it('is served anonymously at GET /api/openapi.json', async () => {
    const reg = (await loadApp()).get('openapi');
    const trigger = Object.values(reg!.bindings).find((b) => b.direction === 'in');
    expect([trigger?.authLevel, trigger?.route, trigger?.methods]).toEqual([
      'anonymous',
      'openapi.json',
      ['GET'],
    ]);
    const result = await request('https://fn.example.test/api/openapi.json');
    expect(result.status).toBe(200);
    expect(result.body).toMatchObject({ openapi: '3.0.3', servers: [{ url: 'https://fn.example.test' }] });
  });
});
