/**
 * Checks of the Microsoft Sentinel playbooks under `integrations/sentinel/`: the Bicep parses (no Bicep CLI
 * here: tree-sitter-bicep), no keys anywhere, managed identity on every connection, least-privilege role
 * assignments on the narrowest scopes, and, most important, that the request messages the playbook sends are
 * accepted by the app's own parser and that the outcome playbook reads only fields the app's outcome has.
 * Role ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  asObject,
  BicepFile,
  bicepFiles,
  codeWithoutComments,
  Expr,
  getPath,
  loadBicep,
  parseBicepSource,
  REPO_ROOT,
  syntaxProblems,
} from '../infra/bicep';
import { parseReleaseRequest } from '../../src/core/request';
import { buildOpenApi } from '../../src/core/openapi';
import { allActions, pathsReadFrom, readWorkflow, substitute, type WorkflowDefinition } from './logicApp';

const SENTINEL_DIR = path.join(REPO_ROOT, 'integrations', 'sentinel');
const SENDER = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'; // Azure Service Bus Data Sender
const RECEIVER = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'; // Azure Service Bus Data Receiver
const RESPONDER = '3e150937-b8fe-4cfb-8069-0eaf05ecd056'; // Microsoft Sentinel Responder

/** Text that only appears where a key, a SAS or a connection string is made or used. */
const SECRET_PATTERNS: readonly RegExp[] = [
  /\blist[A-Za-z]*Keys\s*\(/i,
  /listCallbackUrl\s*\(\s*\)\s*\.\s*value/i, // a trigger URL with its SAS signature copied out
  /SharedAccessKey/i,
  /SharedAccessSignature/i,
  /connectionString/i,
  /AccountKey=/i,
  /authorizationRules/i,
  /@secure\(\)/,
];

function secretsIn(text: string): string[] {
  return SECRET_PATTERNS.filter((pattern) => pattern.test(text)).map(String);
}

type Schema = { properties?: Record<string, Schema>; allOf?: { $ref: string }[] };

/** The Outcome schema of the app's OpenAPI document, with `$ref`s resolved: field path -> known. */
function outcomeFieldPaths(): Set<string> {
  const schemas = (buildOpenApi() as { components: { schemas: Record<string, Schema> } }).components.schemas;
  const paths = new Set<string>();
  const walk = (schema: Schema, prefix: string): void => {
    const resolved = schema.allOf?.[0] ? schemas[schema.allOf[0].$ref.split('/').pop()!]! : schema;
    for (const [name, inner] of Object.entries(resolved.properties ?? {})) {
      paths.add(prefix + name);
      walk(inner, `${prefix}${name}.`);
    }
  };
  walk(schemas.Outcome!, '');
  return paths;
}

/** The one resource of a type in a parsed file. */
function resourceOf(file: BicepFile, type: string): BicepFile['resources'][number] {
  const matches = file.resources.filter((r) => r.type === type && !r.existing);
  expect(matches.map((r) => r.symbol)).toHaveLength(1);
  return matches[0]!;
}

function exprOf(value: unknown): string {
  if (!(value instanceof Expr)) throw new Error(`expected an expression, got ${JSON.stringify(value)}`);
  return value.text;
}

describe('Sentinel playbooks', () => {
  const files = new Map<string, BicepFile>();
  const workflows = new Map<string, WorkflowDefinition>();
  let request: BicepFile;
  let response: BicepFile;
  let requestFlow: WorkflowDefinition;
  let responseFlow: WorkflowDefinition;

  beforeAll(async () => {
    for (const file of bicepFiles(SENTINEL_DIR)) {
      files.set(path.relative(SENTINEL_DIR, file).split(path.sep).join('/'), await loadBicep(file));
    }
    request = files.get('request-playbook.bicep')!;
    response = files.get('response-playbook.bicep')!;
    for (const [name, file] of [
      ['request', request],
      ['response', response],
    ] as const) {
      // The workflow definition is the file the template loads (loadJsonContent is resolved at build time).
      const definition = exprOf(
        getPath(resourceOf(file, 'Microsoft.Logic/workflows').body, 'properties.definition'),
      );
      const loaded = /^loadJsonContent\('([^']+)'\)$/.exec(definition);
      expect(loaded).not.toBeNull();
      workflows.set(name, readWorkflow(path.join(path.dirname(file.file), loaded![1]!)));
    }
    requestFlow = workflows.get('request')!;
    responseFlow = workflows.get('response')!;
  });

  describe('templates', () => {
    it('are all there', () => {
      expect([...files.keys()].sort()).toEqual([
        'modules/queue-role.bicep',
        'modules/workspace-role.bicep',
        'request-playbook.bicep',
        'response-playbook.bicep',
      ]);
    });

    it.each(bicepFiles(SENTINEL_DIR).map((file) => [path.relative(SENTINEL_DIR, file), file]))(
      '%s parses without ERROR or MISSING nodes',
      async (_name, file) => {
        expect(syntaxProblems(await parseBicepSource(fs.readFileSync(file, 'utf8')))).toEqual([]);
      },
    );

    it('load workflow definitions in the Logic Apps schema, with one trigger each', () => {
      for (const flow of workflows.values()) {
        expect(flow.$schema).toMatch(/Microsoft\.Logic\/schemas\/2016-06-01\/workflowdefinition\.json#$/);
        expect(Object.keys(flow.triggers)).toHaveLength(1);
        expect(flow.parameters.$connections).toEqual({ type: 'Object', defaultValue: {} });
      }
    });

    it('hold no keys, SAS or connection strings', () => {
      for (const [name, file] of files)
        expect({ name, secrets: secretsIn(codeWithoutComments(file)) }).toEqual({ name, secrets: [] });
      for (const file of fs.readdirSync(SENTINEL_DIR).filter((f) => f.endsWith('.json'))) {
        const text = fs.readFileSync(path.join(SENTINEL_DIR, file), 'utf8');
        expect({ file, secrets: secretsIn(text) }).toEqual({ file, secrets: [] });
      }
    });

    it.each([
      [
        "listKeys(resourceId('Microsoft.ServiceBus/namespaces/authorizationRules', 'ns', 'root'), '2021-11-01')",
      ],
      ["'Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=abc'"],
      ['{ parameterValues: { connectionString: sb } }'],
    ])('notice %s (so the check above can fail)', (text) => {
      expect(secretsIn(text)).not.toEqual([]);
    });
  });

  describe('identity and connections', () => {
    it.each(['request', 'response'])(
      'the %s playbook has a system-assigned identity used by every connection',
      (name) => {
        const file = name === 'request' ? request : response;
        const flow = workflows.get(name)!;
        const workflow = resourceOf(file, 'Microsoft.Logic/workflows');
        expect(getPath(workflow.body, 'identity.type')).toBe('SystemAssigned');
        const connections = asObject(getPath(workflow.body, 'properties.parameters.$connections.value'));
        expect(Object.keys(connections).sort()).toEqual(['azuresentinel', 'servicebus']);
        for (const connection of Object.values(connections)) {
          expect(getPath(connection, 'connectionProperties.authentication')).toEqual({
            type: 'ManagedServiceIdentity',
          });
        }
        // Every connector call of the definition goes through one of these connections.
        const text = JSON.stringify(flow);
        const used = [...text.matchAll(/parameters\('\$connections'\)\['([^']+)'\]/g)].map((m) => m[1]);
        expect(new Set(used)).toEqual(new Set(['azuresentinel', 'servicebus']));
      },
    );

    it.each(['request', 'response'])(
      'the %s playbook connects with the managed identity, not a key',
      (name) => {
        const file = name === 'request' ? request : response;
        const byApi = new Map(
          file.resources
            .filter((r) => r.type === 'Microsoft.Web/connections')
            .map((r) => [
              /'(azuresentinel|servicebus)'\)$/.exec(exprOf(getPath(r.body, 'properties.api.id')))?.[1],
              r,
            ]),
        );
        expect([...byApi.keys()].sort()).toEqual(['azuresentinel', 'servicebus']);
        // Single-authentication connector: parameterValueType Alternative. Multi-authentication (Service Bus):
        // parameterValueSet managedIdentityAuth with the namespace endpoint.
        expect(getPath(byApi.get('azuresentinel')!.body, 'properties.parameterValueType')).toBe(
          'Alternative',
        );
        const valueSet = getPath(byApi.get('servicebus')!.body, 'properties.parameterValueSet');
        expect(getPath(valueSet, 'name')).toBe('managedIdentityAuth');
        expect(exprOf(getPath(valueSet, 'values.namespaceEndpoint.value'))).toContain(
          'namespace.properties.serviceBusEndpoint',
        );
        for (const connection of byApi.values())
          expect(getPath(connection.body, 'properties.parameterValues')).toBeUndefined();
      },
    );
  });

  describe('role assignments (least privilege, narrowest scope)', () => {
    function roleModules(
      file: BicepFile,
    ): { source: string; queueName?: string; role?: unknown; principal: string }[] {
      return file.modules.map((m) => ({
        source: m.source,
        ...(getPath(m.body, 'params.queueName') !== undefined
          ? { queueName: exprOf(getPath(m.body, 'params.queueName')) }
          : {}),
        ...(getPath(m.body, 'params.roleDefinitionId') !== undefined
          ? { role: getPath(m.body, 'params.roleDefinitionId') }
          : {}),
        principal: exprOf(getPath(m.body, 'params.principalId')),
      }));
    }

    it('request playbook: Data Sender on the request queue and Sentinel Responder, nothing else', () => {
      expect(roleModules(request)).toEqual([
        {
          source: 'modules/queue-role.bicep',
          queueName: 'requestQueueName',
          role: SENDER,
          principal: 'playbook.identity.principalId',
        },
        { source: 'modules/workspace-role.bicep', principal: 'playbook.identity.principalId' },
      ]);
    });

    it('response playbook: Data Receiver on the response queue and Sentinel Responder, nothing else', () => {
      expect(roleModules(response)).toEqual([
        {
          source: 'modules/queue-role.bicep',
          queueName: 'responseQueueName',
          role: RECEIVER,
          principal: 'playbook.identity.principalId',
        },
        { source: 'modules/workspace-role.bicep', principal: 'playbook.identity.principalId' },
      ]);
    });

    it('queue roles are assigned on the queue, and only the two data roles are accepted', () => {
      const module = files.get('modules/queue-role.bicep')!;
      const assignment = resourceOf(module, 'Microsoft.Authorization/roleAssignments');
      const scope = exprOf(assignment.body.scope);
      expect(module.resources.find((r) => r.symbol === scope)?.type).toBe(
        'Microsoft.ServiceBus/namespaces/queues',
      );
      const allowed = module.params.get('roleDefinitionId')!.decorators.find((d) => d.name === 'allowed');
      expect(allowed?.args).toEqual([[SENDER, RECEIVER]]);
      expect(getPath(assignment.body, 'properties.principalType')).toBe('ServicePrincipal');
    });

    it('Sentinel Responder is assigned on the workspace', () => {
      const module = files.get('modules/workspace-role.bicep')!;
      const assignment = resourceOf(module, 'Microsoft.Authorization/roleAssignments');
      expect(module.resources.find((r) => r.symbol === exprOf(assignment.body.scope))?.type).toBe(
        'Microsoft.OperationalInsights/workspaces',
      );
      expect(module.vars.get('sentinelResponderRoleId')).toBe(RESPONDER);
      expect(exprOf(getPath(assignment.body, 'properties.roleDefinitionId'))).toContain(
        'sentinelResponderRoleId',
      );
    });

    it("no other role assignment exists, and the Service Bus role ids are the ones the app's infra uses", async () => {
      const assignments = [...files.entries()].flatMap(([name, f]) =>
        f.resources.filter((r) => r.type === 'Microsoft.Authorization/roleAssignments').map(() => name),
      );
      expect(assignments.sort()).toEqual(['modules/queue-role.bicep', 'modules/workspace-role.bicep']);
      const rbac = await loadBicep(path.join(REPO_ROOT, 'infra', 'app', 'rbac.bicep'));
      const roleIds = asObject(rbac.vars.get('roleIds'));
      expect([roleIds.serviceBusDataSender, roleIds.serviceBusDataReceiver]).toEqual([SENDER, RECEIVER]);
    });
  });

  describe('queues', () => {
    it('default to the queue names the infrastructure deploys', async () => {
      const main = await loadBicep(path.join(REPO_ROOT, 'infra', 'main.bicep'));
      expect(request.params.get('requestQueueName')?.defaultValue).toBe(main.vars.get('requestQueueName'));
      expect(response.params.get('responseQueueName')?.defaultValue).toBe(main.vars.get('responseQueueName'));
    });

    it('request playbook sends to the request queue; response playbook peek-locks the response queue and completes', () => {
      const requestParams = asObject(
        getPath(resourceOf(request, 'Microsoft.Logic/workflows').body, 'properties.parameters'),
      );
      expect(exprOf(getPath(requestParams, 'requestQueueName.value'))).toBe('requestQueueName');
      const trigger = Object.values(responseFlow.triggers)[0]!;
      expect(getPath(trigger.inputs as never, 'path')).toBe(
        "/@{encodeURIComponent(encodeURIComponent(parameters('responseQueueName')))}/messages/head/peek",
      );
      const complete = allActions(responseFlow).get('Complete_the_message')!;
      expect(complete.inputs).toEqual(
        expect.objectContaining({
          method: 'delete',
          path: "/@{encodeURIComponent(encodeURIComponent(parameters('responseQueueName')))}/messages/complete",
        }),
      );
      // Completed only once the comment was written: a failed comment leaves the message for a retry.
      expect(complete.runAfter).toEqual({ Condition_from_request_playbook: ['Succeeded'] });
    });
  });

  describe("request messages match the app's request schema", () => {
    const INCIDENT_NAME = '8b2f6c1e-4f0a-4d57-9a43-1f2e7d9b6c10';
    const DEVICE_ID = '1E5BC9D7E413DDD7902C2932E418702B84D0CC07';
    // Long, with quotes and markup: the body is built as an object and serialised by Logic Apps.
    const TITLE = `Multi-stage incident involving "Initial access" & <Execution> on 'ws-fin-042' ${'x'.repeat(180)}`;

    function samples(playbookName: string, deviceId = DEVICE_ID): Record<string, string> {
      return {
        "items('For_each_host')?['additionalData']?['MdatpDeviceId']": deviceId,
        "outputs('Compose_device_name')": 'ws-fin-042.contoso.local',
        "triggerBody()?['object']?['properties']?['incidentNumber']": '4711',
        "triggerBody()?['object']?['properties']?['title']": TITLE,
        "triggerBody()?['object']?['name']": INCIDENT_NAME,
        "workflow()?['name']": playbookName,
      };
    }

    /** The send actions and the message each one would put on the queue, as the app would decode it. */
    function sentMessages(
      sampleValues: Record<string, string>,
    ): Map<string, { body: unknown; message: Record<string, unknown> }> {
      const actions = allActions(requestFlow);
      const sent = new Map<string, { body: unknown; message: Record<string, unknown> }>();
      for (const [name, action] of actions) {
        const inputs = action.inputs as { path?: string; body?: Record<string, unknown> } | undefined;
        if (action.type !== 'ApiConnection' || !inputs?.path?.endsWith('/messages')) continue;
        expect(inputs.path).toBe(
          "/@{encodeURIComponent(encodeURIComponent(parameters('requestQueueName')))}/messages",
        );
        const content = /^@\{base64\(string\(outputs\('([^']+)'\)\)\)\}$/.exec(
          String(inputs.body?.ContentData),
        );
        expect(content).not.toBeNull();
        const compose = actions.get(content![1]!);
        expect(compose?.type).toBe('Compose');
        const body = substitute(compose!.inputs, sampleValues);
        const message = substitute({ ...inputs.body, ContentData: undefined }, sampleValues);
        expect([...body.unknown, ...message.unknown]).toEqual([]);
        // base64(string(object)) on the wire; the app decodes the bytes as JSON.
        sent.set(name, {
          body: JSON.parse(JSON.stringify(body.value)) as unknown,
          message: message.value as Record<string, unknown>,
        });
      }
      return sent;
    }

    it('a host with an MDE device id: a machineId request the app accepts', () => {
      const name = request.params.get('playbookName')!.defaultValue as string;
      const { body, message } = sentMessages(samples(name)).get('Send_request_by_id')!;
      const parsed = parseReleaseRequest(body);
      expect(parsed).toEqual({
        ok: true,
        request: {
          machineId: DEVICE_ID.toLowerCase(),
          comment: `Released by Sentinel playbook for incident 4711: ${TITLE}`,
          correlationId: INCIDENT_NAME,
          requestedBy: `Sentinel playbook ${name}`,
        },
      });
      expect(message).toEqual({ ContentType: 'application/json', CorrelationId: INCIDENT_NAME });
    });

    it('a host without an MDE device id: a deviceName request the app accepts', () => {
      const name = request.params.get('playbookName')!.defaultValue as string;
      const { body, message } = sentMessages(samples(name)).get('Send_request_by_name')!;
      const parsed = parseReleaseRequest(body);
      expect(parsed).toEqual({
        ok: true,
        request: expect.objectContaining({
          machineId: null,
          deviceName: 'ws-fin-042.contoso.local',
          correlationId: INCIDENT_NAME,
          requestedBy: `Sentinel playbook ${name}`,
        }) as unknown,
      });
      expect(message).toEqual({ ContentType: 'application/json', CorrelationId: INCIDENT_NAME });
    });

    it('sends exactly those two kinds of message, one per host (inside the loop over host entities)', () => {
      expect([...sentMessages(samples('p')).keys()].sort()).toEqual([
        'Send_request_by_id',
        'Send_request_by_name',
      ]);
      const loop = requestFlow.actions.For_each_host!;
      expect(loop.foreach).toBe("@body('Entities_-_Get_Hosts')?['Hosts']");
      const inLoop = allActions({ actions: loop.actions ?? {} });
      expect(inLoop.has('Send_request_by_id') && inLoop.has('Send_request_by_name')).toBe(true);
    });

    it('the check can fail: a malformed device id from Sentinel is refused by the same parser', () => {
      const { body } = sentMessages(samples('p', 'not-a-device-id')).get('Send_request_by_id')!;
      expect(parseReleaseRequest(body).ok).toBe(false);
    });

    it('the check can fail: an expression without a sample value is reported', () => {
      expect(substitute({ a: "x @{triggerBody()?['object']?['id']}" }, {}).unknown).toEqual([
        "triggerBody()?['object']?['id']",
      ]);
    });
  });

  describe('outcomes back to the incident', () => {
    // The OpenAPI Outcome schema is checked against the TypeScript type in test/core/openapi.test.ts.
    it("the response playbook reads only fields of the app's Outcome (OpenAPI schema)", () => {
      const known = outcomeFieldPaths();
      const read = pathsReadFrom(JSON.stringify(responseFlow), 'Parse_outcome');
      expect([...read].filter((field) => !known.has(field))).toEqual([]);
      // What the comment must show: status and phase (and when a queued release runs), the device, the
      // MachineAction, the error.
      expect([...read].sort()).toEqual(
        expect.arrayContaining([
          'status',
          'phase',
          'retryAt',
          'machineId',
          'deviceName',
          'machineAction.id',
          'machineAction.status',
          'error.code',
          'error.message',
          'correlationId',
          'requestedBy',
        ]),
      );
    });

    it('its Parse JSON schema declares only Outcome fields', () => {
      const known = outcomeFieldPaths();
      const schema = (allActions(responseFlow).get('Parse_outcome')!.inputs as { schema: Schema }).schema;
      const declared: string[] = [];
      const walk = (s: Schema, prefix: string): void => {
        for (const [name, inner] of Object.entries(s.properties ?? {})) {
          declared.push(prefix + name);
          walk(inner, `${prefix}${name}.`);
        }
      };
      walk(schema, '');
      expect(declared.filter((field) => !known.has(field))).toEqual([]);
    });

    it('the check can fail: a field the outcome does not have is reported', () => {
      const known = outcomeFieldPaths();
      const read = pathsReadFrom(
        "@{body('Parse_outcome')?['incidentId']} @{body('Parse_outcome')?['error']?['detail']}",
        'Parse_outcome',
      );
      expect([...read].filter((field) => !known.has(field))).toEqual(['incidentId', 'error.detail']);
    });

    it('both playbooks agree: requestedBy picks our outcomes, correlationId (incident name) gives the incident ARM id', () => {
      // requestedBy: "Sentinel playbook <request playbook name>" on both sides.
      expect(response.params.get('requestPlaybookName')?.defaultValue).toBe(
        request.params.get('playbookName')?.defaultValue,
      );
      const condition = allActions(responseFlow).get('Condition_from_request_playbook')!;
      expect(condition.expression).toEqual({
        and: [
          {
            equals: [
              "@body('Parse_outcome')?['requestedBy']",
              "@concat('Sentinel playbook ', parameters('requestPlaybookName'))",
            ],
          },
          // A duplicate's IdempotencyKeyInUse answer is not an outcome: no comment on the incident.
          { not: { equals: ["@coalesce(body('Parse_outcome')?['duplicate'], false)", true] } },
        ],
      });
      const compose = allActions(requestFlow).get('Compose_request_by_id')!.inputs as Record<string, string>;
      expect(compose.requestedBy).toBe("Sentinel playbook @{workflow()?['name']}");
      // correlationId: the incident's name (GUID), the last segment of its ARM id.
      expect(compose.correlationId).toBe("@{triggerBody()?['object']?['name']}");
      const comment = allActions(responseFlow).get('Add_comment_to_incident')!.inputs as {
        body: Record<string, string>;
      };
      expect(comment.body.incidentArmId).toBe(
        "@{concat(parameters('incidentArmIdPrefix'), body('Parse_outcome')?['correlationId'])}",
      );
      const prefix = exprOf(response.vars.get('incidentArmIdPrefix'));
      expect(prefix).toMatch(
        /^'\$\{resourceId\(workspaceResourceGroup, 'Microsoft\.OperationalInsights\/workspaces', workspaceName\)\}\/providers\/Microsoft\.SecurityInsights\/Incidents\/'$/,
      );
      const passed = getPath(
        resourceOf(response, 'Microsoft.Logic/workflows').body,
        'properties.parameters.incidentArmIdPrefix.value',
      );
      expect(exprOf(passed)).toBe('incidentArmIdPrefix');
    });
  });
});
