/**
 * Role assignments: exactly the least-privilege set, each on the narrowest scope.
 * Role definition ids verified against https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
 */
import {
  asObject,
  asString,
  BicepFile,
  BicepValue,
  codeWithoutComments,
  exprText,
  Expr,
  loadInfra,
  ResourceDecl,
} from './bicep';

const ROLE = {
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6',
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7',
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0',
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39',
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb',
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b',
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3',
} as const;

/** Roles no assignment may use: they grant management of resources or all data. */
const FORBIDDEN_ROLES = {
  owner: '8e3af657-a8ff-443c-a75c-2fe8c4bcb635',
  contributor: 'b24988ac-6180-42a0-ab88-20f7382dd24c',
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419',
  keyVaultAdministrator: '00482a5a-887f-4fb3-b363-3b7fe8e74483',
} as const;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Assignment {
  symbol: string;
  roleId: string;
  scopeType: string;
  /** The scope resource's `name`, as source text. */
  scopeName: string;
  principal: string;
  principalType: string;
  condition: string | undefined;
  name: string;
}

/** Resolves `subscriptionResourceId('Microsoft.Authorization/roleDefinitions', <id>)` to the role GUID. */
function roleIdOf(file: BicepFile, value: BicepValue | undefined): string {
  const match = /^subscriptionResourceId\(\s*'Microsoft\.Authorization\/roleDefinitions'\s*,\s*(.+)\)$/s.exec(
    exprText(value),
  );
  if (!match) throw new Error(`roleDefinitionId is not a built-in role reference: ${exprText(value)}`);
  const argument = match[1]!.trim();
  const literal = /^'([^']*)'$/.exec(argument);
  if (literal) return literal[1]!;
  const [variable, ...keys] = argument.split('.');
  let resolved: BicepValue | undefined = file.vars.get(variable!);
  for (const key of keys) resolved = asObject(resolved)[key];
  return asString(resolved);
}

function assignmentsIn(file: BicepFile): Assignment[] {
  return file.resources
    .filter((resource) => resource.type === 'Microsoft.Authorization/roleAssignments')
    .map((resource) => {
      const properties = asObject(resource.body.properties);
      const scopeSymbol = exprText(resource.body.scope);
      const scope = file.resources.find((candidate: ResourceDecl) => candidate.symbol === scopeSymbol);
      if (!scope)
        throw new Error(`${resource.symbol}: scope ${scopeSymbol} is not a resource of ${file.file}`);
      return {
        symbol: resource.symbol,
        roleId: roleIdOf(file, properties.roleDefinitionId),
        scopeType: scope.type,
        scopeName: exprText(scope.body.name),
        principal: exprText(properties.principalId),
        principalType: exprText(properties.principalType),
        condition: resource.condition,
        name: exprText(resource.body.name),
      };
    });
}

describe('role assignments', () => {
  let files: Map<string, BicepFile>;
  let rbac: BicepFile;
  let assignments: Assignment[];

  beforeAll(async () => {
    files = await loadInfra();
    rbac = files.get('app/rbac.bicep')!;
    assignments = [...files.values()].flatMap(assignmentsIn);
  });

  it('are all in app/rbac.bicep', () => {
    const elsewhere = [...files.entries()]
      .filter(([name]) => name !== 'app/rbac.bicep')
      .flatMap(([name, file]) =>
        file.resources.filter((r) => r.type === 'Microsoft.Authorization/roleAssignments').map(() => name),
      );
    expect(elsewhere).toEqual([]);
    expect(assignments.length).toBeGreaterThan(0);
  });

  it('are exactly the least-privilege set, each on its narrowest scope', () => {
    const actual = assignments.map(({ roleId, scopeType, scopeName, principal }) => ({
      roleId,
      scopeType,
      scopeName,
      principal,
    }));
    expect(actual).toEqual(
      expect.arrayContaining([
        // The app reads the MDE secrets: on the vault.
        {
          roleId: ROLE.keyVaultSecretsUser,
          scopeType: 'Microsoft.KeyVault/vaults',
          scopeName: 'keyVaultName',
          principal: 'appPrincipalId',
        },
        // The trigger receives: on the request queue only.
        {
          roleId: ROLE.serviceBusDataReceiver,
          scopeType: 'Microsoft.ServiceBus/namespaces/queues',
          scopeName: 'requestQueueName',
          principal: 'appPrincipalId',
        },
        // Outcomes are sent: on the response queue only.
        {
          roleId: ROLE.serviceBusDataSender,
          scopeType: 'Microsoft.ServiceBus/namespaces/queues',
          scopeName: 'responseQueueName',
          principal: 'appPrincipalId',
        },
        // Telemetry with an Entra token: on the Application Insights component.
        {
          roleId: ROLE.monitoringMetricsPublisher,
          scopeType: 'Microsoft.Insights/components',
          scopeName: 'applicationInsightsName',
          principal: 'appPrincipalId',
        },
        // Host storage and deployment package: on the app's own storage account.
        {
          roleId: ROLE.storageBlobDataOwner,
          scopeType: 'Microsoft.Storage/storageAccounts',
          scopeName: 'storageAccountName',
          principal: 'appPrincipalId',
        },
        // Release state: on the one table.
        {
          roleId: ROLE.storageTableDataContributor,
          scopeType: 'Microsoft.Storage/storageAccounts/tableServices/tables',
          scopeName: 'stateTableName',
          principal: 'appPrincipalId',
        },
        // The operator sets the secrets: on the vault.
        {
          roleId: ROLE.keyVaultSecretsOfficer,
          scopeType: 'Microsoft.KeyVault/vaults',
          scopeName: 'keyVaultName',
          principal: 'userPrincipalId',
        },
      ]),
    );
    expect(actual).toHaveLength(7);
  });

  it('scope the queues to the request and response queue names main.bicep passes', () => {
    const main = files.get('main.bicep')!;
    const params = asObject(main.modules.find((m) => m.source === 'app/rbac.bicep')!.body.params);
    expect(exprText(params.requestQueueName)).toBe('serviceBus.outputs.requestQueueName');
    expect(exprText(params.responseQueueName)).toBe('serviceBus.outputs.responseQueueName');
    expect(exprText(params.appPrincipalId)).toBe('identity.outputs.principalId');
    expect(exprText(params.userPrincipalId)).toBe('principalId');
  });

  it('give the deploying user a role only when principalId is set', () => {
    const user = assignments.filter((a) => a.principal === 'userPrincipalId');
    expect(user.length).toBeGreaterThan(0);
    for (const assignment of user)
      expect(assignment.condition?.replace(/\s/g, '')).toBe('(!empty(userPrincipalId))');
    // ... and every app assignment is unconditional, to a service principal.
    for (const assignment of assignments.filter((a) => a.principal === 'appPrincipalId')) {
      expect(assignment.condition).toBeUndefined();
      expect(assignment.principalType).toBe("'ServicePrincipal'");
    }
  });

  it('are named guid(scope, principal, role)', () => {
    for (const assignment of assignments) {
      const scope = exprText(rbac.resources.find((r) => r.symbol === assignment.symbol)!.body.scope);
      expect(assignment.name).toMatch(
        new RegExp(`^guid\\(${scope}\\.id, ${assignment.principal}, roleIds\\.\\w+\\)$`),
      );
    }
  });

  it('use only verified built-in role ids, never Owner, Contributor or a data-owner role beyond blob storage', () => {
    const forbidden = new Set<string>(Object.values(FORBIDDEN_ROLES));
    for (const assignment of assignments) {
      expect(assignment.roleId).toMatch(GUID);
      expect(forbidden.has(assignment.roleId)).toBe(false);
      expect(Object.values(ROLE)).toContain(assignment.roleId);
    }
    // Not even mentioned in code (comments aside), e.g. in a variable for later.
    for (const file of files.values()) {
      const code = codeWithoutComments(file);
      for (const [role, id] of Object.entries(FORBIDDEN_ROLES)) {
        expect({ file: file.file, role, found: code.includes(id) }).toEqual({
          file: file.file,
          role,
          found: false,
        });
      }
    }
  });

  it('resolves role ids through roleIds (so the checks above can fail)', () => {
    expect(
      roleIdOf(
        rbac,
        new Expr(
          "subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataSender)",
        ),
      ),
    ).toBe(ROLE.serviceBusDataSender);
    expect(
      roleIdOf(
        rbac,
        new Expr(
          `subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '${FORBIDDEN_ROLES.owner}')`,
        ),
      ),
    ).toBe(FORBIDDEN_ROLES.owner);
    expect(() =>
      roleIdOf(rbac, new Expr("resourceId('Microsoft.Authorization/roleDefinitions', 'x')")),
    ).toThrow();
  });
});
