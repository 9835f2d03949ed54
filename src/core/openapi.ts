/**
 * The OpenAPI 3 description of the HTTP API, generated from the same tables the app validates and answers
 * with (`REQUEST_FIELDS`, `ERROR_TABLE`), so it cannot drift from the code. Logic Apps and Power Automate
 * can import it as a custom connector.
 */
import { ERROR_TABLE, SUCCESS_HTTP, type OutcomeStatus } from './outcome';
import { ONE_OF_FIELDS, REQUEST_FIELDS, REQUIRED_FIELDS, type FieldSpec } from './request';

type Schema = Record<string, unknown>;

/**
 * What each outcome status means. A `Record` over the union: adding a status without documenting it here is
 * a compile error, so the description cannot fall behind the code.
 */
export const STATUS_DESCRIPTIONS: Readonly<Record<OutcomeStatus, string>> = {
  Accepted: 'MDE queued the release (201 Created with a MachineAction, status Pending).',
  AlreadyInProgress: 'A release of this device is already running; machineAction is that action when found.',
  Queued:
    'phase "queued": the Defender API budget cannot take the release now; it is parked and runs by itself at ' +
    'retryAt (202 with Location to the status route). Its accepted-phase outcome follows when it runs.',
  Invalid: 'The request failed validation; error.message lists every problem.',
  NotFound: 'MDE does not know the device (or no device has that name).',
  Forbidden: 'MDE refused: the app lacks Machine.Isolate, or the device is outside its device-group scope.',
  Throttled:
    'The Defender API budget (100/minute, 1500/hour per API) did not free in time: within the retry budget ' +
    'without durable state; with it, the release stayed parked longer than QUEUE_MAX_HOURS. See Retry-After.',
  Failed: 'MDE, Key Vault, Entra ID or the configuration failed once retries were spent.',
  Ambiguous: 'The device name matches several devices; candidates lists them. Nothing was released.',
  NotIsolated: 'The device is not isolated (never isolated, or already released). Nothing was sent.',
  IsolationPending: 'An Isolate action is still running; releasing now could race it. Retry when it ends.',
  Blocked: 'The health gate (RELEASE_POLICY) refused the device; "force": true bypasses it.',
  Unauthorized: 'The caller was refused before anything was done (signature or role check).',
  Released: 'phase "completed": the tracked Unisolate action Succeeded.',
  ReleaseFailed: 'phase "completed": the tracked Unisolate action Failed, timed out or was cancelled.',
  TrackingExpired: 'phase "completed": the action did not end within TRACK_MAX_HOURS.',
};

function fieldSchema(spec: FieldSpec): Schema {
  const type = spec.type ?? 'string';
  const schema: Schema = {
    type,
    description: `${spec.description} Must be ${spec.rule}.`,
    example: spec.example,
  };
  if (type === 'string') Object.assign(schema, { minLength: spec.minLength, maxLength: spec.maxLength });
  if (type === 'array') {
    Object.assign(schema, {
      minItems: spec.minLength,
      maxItems: spec.maxLength,
      items: {
        type: 'object',
        description: `Exactly one of ${(spec.items ?? []).join(', ')}`,
        properties: Object.fromEntries((spec.items ?? []).map((f) => [f, fieldSchema(REQUEST_FIELDS[f])])),
        oneOf: (spec.items ?? []).map((f) => ({ required: [f] })),
      },
    });
  }
  if (spec.pattern) schema.pattern = spec.pattern;
  return schema;
}

/** Every outcome status and the HTTP statuses it is answered with. */

/** The caller checks' refusals on the GET routes (app roles, signed webhooks), as on the release routes. */
const CALLER_REFUSED = {
  401: 'Not authenticated, or the webhook signature of "<timestamp>.GET <path>" is missing, stale or wrong',
  403: 'The authenticated caller has none of ALLOWED_CALLER_ROLES',
};
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
  const schema: Schema = {
    type: 'object',
    description:
      'Release request. Keys are matched case-insensitively (MDE\'s "Comment" works); unknown keys are ignored. ' +
      `Besides the required fields, exactly one of ${ONE_OF_FIELDS.join(', ')} identifies the device(s)` +
      (routeHasMachineId ? ' (here the route gives machineId).' : '.'),
    properties,
    required: [...REQUIRED_FIELDS],
  };
  if (!routeHasMachineId) schema.oneOf = ONE_OF_FIELDS.map((f) => ({ required: [f] }));
  return schema;
}

/** Builds the OpenAPI document. `serverUrl` is the app's base URL, e.g. `https://<app>.azurewebsites.net`. */
export function buildOpenApi(serverUrl = '/'): Schema {
  const table = statusTable();
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
    if (code === 202) {
      response.headers = {
        Location: {
          description: 'The status route of this release: GET it to follow the release (no need to resend).',
          schema: { type: 'string' },
        },
        'Retry-After': {
          description: 'Seconds until the release runs (retryAt)',
          schema: { type: 'integer' },
        },
      };
    }
    responses[String(code)] = response;
  }
  responses['207'] = {
    description: 'Bulk request ("devices"): one outcome per device, each with its index',
    content: {
      'application/json': { schema: { type: 'array', items: { $ref: '#/components/schemas/Outcome' } } },
    },
  };
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
        'Releases devices from isolation in Microsoft Defender for Endpoint. Every device of a request gets ' +
        'exactly one answer (phase "accepted"), sent to the response Service Bus queue and, when it is ready in ' +
        'time, returned here. A 202 Queued response is not that answer: the release is parked and runs by ' +
        'itself at retryAt; follow it at its Location (the status route) or on the response queue. With durable ' +
        'state a "completed" outcome follows when the Unisolate action ends. GET /api/selftest is for ' +
        'operators: it checks the deployment.',
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
      '/api/unisolate/{correlationId}': {
        get: {
          operationId: 'ReleaseStatus',
          summary: 'Every release recorded under a correlation id, each with its latest outcome',
          security: [{ functionKey: [] }, { functionKeyQuery: [] }],
          parameters: [
            {
              name: 'correlationId',
              in: 'path',
              required: true,
              description: REQUEST_FIELDS.correlationId.description,
              schema: fieldSchema(REQUEST_FIELDS.correlationId),
            },
          ],
          responses: {
            '200': {
              description: 'The releases (needs durable state)',
              content: { 'application/json': { schema: { $ref: '#/components/schemas/ReleaseStatus' } } },
            },
            '400': { description: 'The correlation id is not valid' },
            '401': { description: CALLER_REFUSED[401] },
            '403': { description: CALLER_REFUSED[403] },
            '404': { description: 'No release is recorded under this correlation id' },
            '503': { description: 'Durable state is not configured or not reachable' },
          },
        },
      },
      '/api/selftest': {
        get: {
          operationId: 'SelfTest',
          summary: 'The deployment self-test, for operators',
          description:
            'Checks the settings, Key Vault, the MDE app token and its permissions, the Defender API, the state ' +
            'table, the queues and telemetry, and says what to fix. Never returns a secret or a token.',
          security: [{ functionKey: [] }, { functionKeyQuery: [] }],
          responses: {
            '200': {
              description: 'Every check passes',
              content: { 'application/json': { schema: { $ref: '#/components/schemas/SelfTestReport' } } },
            },
            '401': { description: CALLER_REFUSED[401] },
            '403': { description: CALLER_REFUSED[403] },
            '503': {
              description: 'At least one check failed',
              content: { 'application/json': { schema: { $ref: '#/components/schemas/SelfTestReport' } } },
            },
          },
        },
      },
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
            status: {
              type: 'string',
              enum: Object.keys(STATUS_DESCRIPTIONS),
              description: Object.entries(STATUS_DESCRIPTIONS)
                .map(([status, text]) => `${status}: ${text}`)
                .join(' '),
            },
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
            deviceName: { type: 'string', description: 'The host name the caller gave.' },
            candidates: {
              type: 'array',
              description: 'Ambiguous: the devices the name could mean.',
              items: {
                type: 'object',
                properties: {
                  id: { type: 'string' },
                  computerDnsName: { type: 'string' },
                  lastSeen: { type: 'string', nullable: true },
                  healthStatus: { type: 'string', nullable: true },
                },
              },
            },
            forced: { type: 'boolean', description: 'The health gate was bypassed with "force": true.' },
            index: { type: 'integer', description: 'Bulk requests: position in "devices".' },
            warnings: { type: 'array', items: { type: 'string' }, description: 'Checks that were skipped.' },
            phase: {
              type: 'string',
              enum: ['queued', 'accepted', 'completed'],
              description:
                'queued: parked until retryAt (at most one such message per release); accepted: the answer to ' +
                'the request (one per release); completed: the tracked action ended.',
            },
            retryAt: {
              type: 'string',
              format: 'date-time',
              description: 'Queued: when the parked release runs (once the Defender API budget frees).',
            },
            replayed: { type: 'boolean', description: 'A stored outcome repeated for a duplicate request.' },
            duplicate: {
              type: 'boolean',
              description:
                'The answer to a duplicate that arrived while the first request with the same idempotency key ' +
                'was still running (IdempotencyKeyInUse): not the outcome of the request, which the first ' +
                'request reports with the same correlationId. Ignore it when updating a ticket.',
            },
          },
        },
        ReleaseStatus: {
          type: 'object',
          required: ['correlationId', 'releases'],
          properties: {
            correlationId: { type: 'string' },
            releases: {
              type: 'array',
              description:
                'Every release under the correlation id (each device of each request), in the order they were ' +
                'received, each with its latest outcome: queued, accepted, or completed.',
              items: { $ref: '#/components/schemas/Outcome' },
            },
          },
        },
        SelfTestReport: {
          type: 'object',
          required: ['ok', 'cloud', 'credential', 'checks'],
          properties: {
            ok: { type: 'boolean', description: 'Every check passed.' },
            cloud: { type: 'string', description: 'MDE_CLOUD in use.' },
            credential: {
              type: 'string',
              description: 'MDE_CREDENTIAL in use: secret, certificate or federated.',
            },
            checks: {
              type: 'array',
              items: {
                type: 'object',
                required: ['name', 'ok', 'detail', 'fix'],
                properties: {
                  name: { type: 'string', example: 'keyVault' },
                  ok: { type: 'boolean' },
                  detail: { type: 'string', description: 'What the check found.' },
                  fix: { type: 'string', nullable: true, description: 'What to do (null when it passed).' },
                },
              },
            },
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
