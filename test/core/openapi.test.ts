/**
 * The OpenAPI description is generated from the validation schema and the outcome table; these tests check
 * it against the real parser and handlers, so a drift fails here.
 */
import { buildOpenApi, statusTable } from '../../src/core/openapi';
import { ERROR_TABLE } from '../../src/core/outcome';
import { parseReleaseRequest, REQUEST_FIELDS } from '../../src/core/request';
import { invokeHttp, loadApp } from '../support/functionsHost';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const doc = buildOpenApi('https://example.test');
const bodySchema = doc.paths['/api/unisolate'].post.requestBody.content['application/json'].schema as Json;

describe('OpenAPI description', () => {
  it('documents every request field with the constraints the parser enforces', () => {
    for (const spec of Object.values(REQUEST_FIELDS)) {
      const field = bodySchema.properties[spec.name] as Json;
      expect(field).toMatchObject({ type: 'string', maxLength: spec.maxLength });
      // A value one character over the documented maximum is rejected by the real parser...
      const tooLong = spec.name === 'machineId' ? 'a'.repeat(41) : 'a'.repeat(spec.maxLength + 1);
      const valid = { machineId: REQUEST_FIELDS.machineId.example, comment: 'x' };
      expect(parseReleaseRequest({ ...valid, [spec.name]: tooLong }).ok).toBe(false);
      // ...and the documented example is accepted.
      expect(parseReleaseRequest({ ...valid, [spec.name]: spec.example }).ok).toBe(true);
      if (field.pattern) expect(new RegExp(field.pattern as string).test(spec.example)).toBe(true);
    }
    expect(bodySchema.required).toEqual(['machineId', 'comment']);
    const routeSchema = doc.paths['/api/machines/{machineId}/unisolate'].post.requestBody.content[
      'application/json'
    ].schema as Json;
    expect(routeSchema.required).toEqual(['comment']);
  });

  it('documents every outcome status, error code and HTTP status the app can answer', () => {
    const outcome = doc.components.schemas.Outcome as Json;
    const statuses = [...statusTable().keys()];
    expect(outcome.properties.status.enum).toEqual(statuses);
    expect(outcome.properties.error.properties.code.enum).toEqual(Object.keys(ERROR_TABLE));
    const documented = Object.keys(doc.paths['/api/unisolate'].post.responses as Json).map(Number);
    const answered = new Set([201, 200, ...Object.values(ERROR_TABLE).map((r) => r.http)]);
    expect(documented.sort()).toEqual([...answered].sort());
  });

  it('is served anonymously at GET /api/openapi.json', async () => {
    const reg = loadApp().get('openapi');
    const trigger = Object.values(reg!.bindings).find((b) => b.direction === 'in');
    expect([trigger?.authLevel, trigger?.route, trigger?.methods]).toEqual([
      'anonymous',
      'openapi.json',
      ['GET'],
    ]);
    const result = await invokeHttp('openapi', {
      method: 'GET',
      url: 'https://fn.example.test/api/openapi.json',
    });
    expect(result.status).toBe(200);
    expect(result.body).toMatchObject({ openapi: '3.0.3', servers: [{ url: 'https://fn.example.test' }] });
  });
});
