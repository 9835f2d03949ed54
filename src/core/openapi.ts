/**
 * The OpenAPI 3 description of the HTTP API, generated from the same tables the app validates and answers
 * with (`REQUEST_FIELDS`, `ERROR_TABLE`), so it cannot drift from the code. Logic Apps and Power Automate
 * can import it as a custom connector.
 */
import { ERROR_TABLE, SUCCESS_HTTP, type OutcomeStatus } from './outcome';
import { REQUEST_FIELDS, REQUIRED_FIELDS, type FieldSpec } from './request';

type Schema = Record<string, unknown>;

function fieldSchema(spec: FieldSpec): Schema {
  const schema: Schema = {
    type: 'string',
    description: spec.description,
    minLength: spec.minLength,
    maxLength: spec.maxLength,
    example: spec.example,
  };
  if (spec.pattern) schema.pattern = spec.pattern;
  return schema;
}

/** Every outcome status and the HTTP statuses it is answered with. */
export function statusTable(): Map<OutcomeStatus, Set<number>> {
  const table = new Map<OutcomeStatus, Set<number>>();
  const add = (status: OutcomeStatus, http: number): void => {
    table.set(status, (table.get(status) ?? new Set()).add(http));
  };
  for (const [status, http] of Object.entries(SUCCESS_HTTP)) add(status as OutcomeStatus, http);
  for (const row of Object.values(ERROR_TABLE)) add(row.status, row.http);
  return table;
}

function requestSchema(routeHasMachineId: boolean): Schema {
  const properties: Record<string, Schema> = {};
  for (const spec of Object.values(REQUEST_FIELDS)) properties[spec.name] = fieldSchema(spec);
  return {
    type: 'object',
    description:
      'Release request. Keys are matched case-insensitively (MDE\'s "Comment" works); unknown keys are ignored.',
    properties,
    required: REQUIRED_FIELDS.filter((f) => !(routeHasMachineId && f === 'machineId')),
  };
}

/** Builds the OpenAPI document. `serverUrl` is the app's base URL, e.g. `https://<app>.azurewebsites.net`. */
export function buildOpenApi(serverUrl = '/'): Schema {
  const table = statusTable();
  const statuses = [...table.keys()];
  const errorCodes = Object.keys(ERROR_TABLE);
  const responses: Record<string, Schema> = {};
  const byHttp = new Map<number, OutcomeStatus[]>();
  for (const [status, codes] of table)
    for (const code of codes) byHttp.set(code, [...(byHttp.get(code) ?? []), status]);
  for (const [code, list] of [...byHttp].sort((a, b) => a[0] - b[0])) {
    const response: Schema = {
      description: `Outcome with status ${list.join(' or ')}`,
      content: { 'application/json': { schema: { $ref: '#/components/schemas/Outcome' } } },
    };
    if (code === 429 || code === 502 || code === 503 || code === 504) {
      response.headers = {
        'Retry-After': { description: 'Seconds to wait before retrying', schema: { type: 'integer' } },
      };
    }
    responses[String(code)] = response;
  }
  const operation = (operationId: string, summary: string, routeHasMachineId: boolean): Schema => ({
    operationId,
    summary,
    security: [{ functionKey: [] }, { functionKeyQuery: [] }],
    requestBody: {
      required: true,
      content: { 'application/json': { schema: requestSchema(routeHasMachineId) } },
    },
    responses,
  });
  return {
    openapi: '3.0.3',
    info: {
      title: 'mde-unisolate',
      version: '1.0.0',
      description:
        'Releases devices from isolation in Microsoft Defender for Endpoint. Every request ends in exactly one ' +
        'outcome, returned here and sent to the response Service Bus queue.',
    },
    servers: [{ url: serverUrl }],
    paths: {
      '/api/machines/{machineId}/unisolate': {
        post: {
          ...operation('ReleaseMachine', 'Release a device from isolation (MDE-compatible route)', true),
          parameters: [
            {
              name: 'machineId',
              in: 'path',
              required: true,
              description: REQUEST_FIELDS.machineId.description,
              schema: fieldSchema(REQUEST_FIELDS.machineId),
            },
          ],
        },
      },
      '/api/unisolate': { post: operation('Release', 'Release a device from isolation', false) },
    },
    components: {
      securitySchemes: {
        functionKey: { type: 'apiKey', in: 'header', name: 'x-functions-key' },
        functionKeyQuery: { type: 'apiKey', in: 'query', name: 'code' },
      },
      schemas: {
        Outcome: {
          type: 'object',
          required: [
            'schemaVersion',
            'correlationId',
            'machineId',
            'status',
            'machineAction',
            'error',
            'trigger',
            'requestedBy',
            'receivedAt',
            'completedAt',
            'attempts',
          ],
          properties: {
            schemaVersion: { type: 'integer', enum: [1] },
            correlationId: { type: 'string' },
            machineId: { type: 'string', nullable: true },
            status: { type: 'string', enum: statuses },
            machineAction: { allOf: [{ $ref: '#/components/schemas/MachineAction' }], nullable: true },
            error: {
              type: 'object',
              nullable: true,
              required: ['code', 'message'],
              properties: {
                code: { type: 'string', enum: errorCodes },
                message: { type: 'string', description: 'What happened and what to do; never a secret.' },
              },
            },
            trigger: { type: 'string', enum: ['http', 'serviceBus'] },
            requestedBy: { type: 'string', nullable: true },
            receivedAt: { type: 'string', format: 'date-time' },
            completedAt: { type: 'string', format: 'date-time' },
            attempts: { type: 'integer', minimum: 0 },
          },
        },
        MachineAction: {
          type: 'object',
          description:
            'The Defender for Endpoint MachineAction (see MDE API docs); other fields pass through.',
          properties: {
            id: { type: 'string' },
            type: { type: 'string', example: 'Unisolate' },
            title: { type: 'string' },
            requestor: { type: 'string' },
            requestorComment: { type: 'string' },
            status: {
              type: 'string',
              enum: ['Pending', 'InProgress', 'Succeeded', 'Failed', 'TimeOut', 'Cancelled'],
            },
            machineId: { type: 'string' },
            computerDnsName: { type: 'string', nullable: true },
            creationDateTimeUtc: { type: 'string', format: 'date-time' },
            lastUpdateDateTimeUtc: { type: 'string', format: 'date-time' },
          },
        },
      },
    },
  };
}
