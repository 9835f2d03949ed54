/**
 * Policy tests on the parsed templates: security properties (no secrets, local auth off, TLS 1.2, no FTP)
 * and role assignments (exactly the least-privilege set, each on its narrowest scope).
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
  getPath,
  loadInfra,
  parseBicepSource,
  ResourceDecl,
} from './bicep';

/** Text that only appears where a key, a SAS or a connection string with a secret is made or used. */
const SECRET_PATTERNS: readonly RegExp[] = [
  /\blistKeys\s*\(/i,
  /\blist[A-Za-z]*Keys\s*\(/i, // listAccountKeys, listQueryKeys, ...
  /\blistConnectionStrings\b/i,
  /\blist(Account|Service)Sas\b/i,
  /SharedAccessKey/i,
  /SharedAccessSignature/i,
  /AccountKey=/i,
  /DefaultEndpointsProtocol=/i,
  /InstrumentationKey\s*:/i, // telemetry by key instead of Entra ID
  /authorizationRules/i, // Service Bus SAS policies
  /StorageAccountConnectionString/i, // Flex deployment storage by connection string
  /@secure\(\)/, // nothing secret is passed in at all: the operator sets secrets in Key Vault
];

function secretsIn(file: Pick<BicepFile, 'source' | 'tree'>): string[] {
  const code = codeWithoutComments(file);
  return SECRET_PATTERNS.filter((pattern) => pattern.test(code)).map(String);
}

describe('templates', () => {
  let files: Map<string, BicepFile>;
  let resources: ResourceDecl[];

  /** The one declared (not `existing`) resource of a type. */
  function declared(type: string): ResourceDecl {
    const matches = resources.filter((r) => r.type === type && !r.existing);
    expect(matches.map((r) => r.symbol)).toHaveLength(1);
    return matches[0]!;
  }

  function property(resource: ResourceDecl, dotted: string): BicepValue | undefined {
    return getPath(resource.body, dotted);
  }

  beforeAll(async () => {
    files = await loadInfra();
    resources = [...files.values()].flatMap((file) => file.resources);
  });

  describe('hold no secrets', () => {
    it('use no keys, SAS or connection strings with secrets', () => {
      for (const [name, file] of files)
        expect({ name, secrets: secretsIn(file) }).toEqual({ name, secrets: [] });
    });

    it.each([
      ["listKeys(storage.id, '2023-05-01').keys[0].value"],
      ["'Endpoint=sb://x/;SharedAccessKeyName=root;SharedAccessKey=abc'"],
      ["'DefaultEndpointsProtocol=https;AccountName=st;AccountKey=abc'"],
      ["storage.listAccountSas('2023-05-01', {}).accountSasToken"],
    ])('notices %s (so the check above can fail)', async (expression) => {
      const source = `var leaked = ${expression} // comment\n`;
      expect(secretsIn({ source, tree: await parseBicepSource(source) })).not.toEqual([]);
    });

    it('ignores comments when scanning (so comments may explain what is not used)', async () => {
      const source = '// never listKeys( or AccountKey= here\nvar x = 1\n';
      expect(secretsIn({ source, tree: await parseBicepSource(source) })).toEqual([]);
    });
  });

  it('deploy at subscription scope', () => {
    expect(files.get('main.bicep')!.targetScope).toBe('subscription');
  });

  describe('Service Bus', () => {
    it('has local (SAS) authentication disabled and TLS 1.2', () => {
      const namespace = declared('Microsoft.ServiceBus/namespaces');
      expect(property(namespace, 'properties.disableLocalAuth')).toBe(true);
      expect(property(namespace, 'properties.minimumTlsVersion')).toBe('1.2');
    });

    it('dead-letters expired requests and locks a request longer than one invocation may run', () => {
      const queues = resources.filter(
        (r) => r.type === 'Microsoft.ServiceBus/namespaces/queues' && !r.existing,
      );
      expect(queues.map((q) => q.symbol).sort()).toEqual(['requestQueue', 'responseQueue']);
      for (const queue of queues)
        expect(property(queue, 'properties.deadLetteringOnMessageExpiration')).toBe(true);
      const request = queues.find((q) => q.symbol === 'requestQueue')!;
      const lockDuration = property(request, 'properties.lockDuration');
      expect(typeof lockDuration).toBe('string');
      const lock = /^PT(?:(\d+)M)?(?:(\d+)S)?$/.exec(lockDuration as string);
      expect(lock).not.toBeNull();
      const seconds = Number(lock![1] ?? 0) * 60 + Number(lock![2] ?? 0);
      // 60 s retry budget + one 30 s Defender call, and Service Bus' 5 minute maximum.
      expect(seconds).toBeGreaterThanOrEqual(90);
      expect(seconds).toBeLessThanOrEqual(300);
    });
  });

  it('Application Insights accepts only Entra-authenticated telemetry', () => {
    expect(property(declared('Microsoft.Insights/components'), 'properties.DisableLocalAuth')).toBe(true);
  });

  it('storage has shared-key and public blob access disabled, HTTPS and TLS 1.2 only', () => {
    const storage = declared('Microsoft.Storage/storageAccounts');
    expect(property(storage, 'properties.allowSharedKeyAccess')).toBe(false);
    expect(property(storage, 'properties.allowBlobPublicAccess')).toBe(false);
    expect(property(storage, 'properties.supportsHttpsTrafficOnly')).toBe(true);
    expect(property(storage, 'properties.minimumTlsVersion')).toBe('TLS1_2');
  });

  it('storage holds the deployment container and the state table', () => {
    expect(declared('Microsoft.Storage/storageAccounts/blobServices/containers').body.name).toEqual(
      expect.objectContaining({ text: 'deploymentContainerName' }),
    );
    expect(declared('Microsoft.Storage/storageAccounts/tableServices/tables').body.name).toEqual(
      expect.objectContaining({ text: 'stateTableName' }),
    );
  });

  it('Key Vault uses RBAC, soft delete and purge protection', () => {
    const vault = declared('Microsoft.KeyVault/vaults');
    expect(property(vault, 'properties.enableRbacAuthorization')).toBe(true);
    expect(property(vault, 'properties.enableSoftDelete')).toBe(true);
    expect(property(vault, 'properties.enablePurgeProtection')).toBe(true);
    expect(property(vault, 'properties.accessPolicies')).toBeUndefined();
  });

  describe('function app', () => {
    it('runs on a Flex Consumption (FC1) plan, Node.js 22', () => {
      expect(property(declared('Microsoft.Web/serverfarms'), 'sku.name')).toBe('FC1');
      const site = declared('Microsoft.Web/sites');
      expect(property(site, 'kind')).toBe('functionapp,linux');
      expect(property(site, 'properties.functionAppConfig.runtime')).toEqual({ name: 'node', version: '22' });
    });

    it('is HTTPS only with TLS 1.2 and FTP(S) disabled', () => {
      const site = declared('Microsoft.Web/sites');
      expect(property(site, 'properties.httpsOnly')).toBe(true);
      expect(property(site, 'properties.siteConfig.minTlsVersion')).toBe('1.2');
      expect(property(site, 'properties.siteConfig.ftpsState')).toBe('Disabled');
    });

    it('disallows basic (user name and password) publishing on FTP and SCM', () => {
      const policies = resources.filter(
        (r) => r.type === 'Microsoft.Web/sites/basicPublishingCredentialsPolicies',
      );
      expect(policies.map((p) => p.body.name).sort()).toEqual(['ftp', 'scm']);
      for (const policy of policies) {
        expect(property(policy, 'properties.allow')).toBe(false);
        expect(policy.condition).toBeUndefined();
      }
    });

    it('runs as the user-assigned identity and reads its deployment package with it', () => {
      const site = declared('Microsoft.Web/sites');
      expect(property(site, 'identity.type')).toBe('UserAssigned');
      expect(property(site, 'properties.functionAppConfig.deployment.storage.authentication')).toEqual({
        type: 'UserAssignedIdentity',
        userAssignedIdentityResourceId: expect.objectContaining({ text: 'identityId' }),
      });
    });

    it('can require Entra ID tokens (App Service Authentication), off unless asked for', () => {
      const auth = resources.find(
        (r) => r.type === 'Microsoft.Web/sites/config' && r.body.name === 'authsettingsV2',
      );
      expect(auth?.condition).toBe('(enableAppServiceAuth)');
      expect(property(auth!, 'properties.globalValidation')).toEqual({
        requireAuthentication: true,
        unauthenticatedClientAction: 'Return401',
      });
      expect(
        exprText(property(auth!, 'properties.identityProviders.azureActiveDirectory.registration.clientId')),
      ).toBe('authClientId');
      const main = files.get('main.bicep')!;
      expect(main.params.get('enableAppServiceAuth')?.defaultValue).toBe(false);
    });
  });
});

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
        // The trigger receives: on the request queue.
        {
          roleId: ROLE.serviceBusDataReceiver,
          scopeType: 'Microsoft.ServiceBus/namespaces/queues',
          scopeName: 'requestQueueName',
          principal: 'appPrincipalId',
        },
        // Parked releases are handed back: on the request queue.
        {
          roleId: ROLE.serviceBusDataSender,
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
    expect(actual).toHaveLength(8);
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
