/**
 * Security properties of the templates: no secrets anywhere, local auth off, TLS 1.2, no FTP.
 */
import {
  BicepFile,
  BicepValue,
  codeWithoutComments,
  exprText,
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
