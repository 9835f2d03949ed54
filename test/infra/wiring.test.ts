/**
 * How the templates fit together and with the code: every setting the code reads is set, parameters and
 * outputs line up, module calls match module declarations, and the docs say what the templates do.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CLOUD_PROFILES, MDE_CREDENTIAL_MODES, SETTINGS, TOKEN_EXCHANGE_AUDIENCES } from '../../src/config';
import {
  asObject,
  BicepFile,
  BicepObject,
  BicepValue,
  exprText,
  getPath,
  INFRA_DIR,
  loadInfra,
  ModuleDecl,
  parseBicepSource,
  referencedIdentifiers,
  REPO_ROOT,
  ResourceDecl,
} from './bicep';

const read = (relative: string): string => fs.readFileSync(path.join(REPO_ROOT, relative), 'utf8');

/** App settings Flex Consumption rejects or ignores (the platform sets them from functionAppConfig). */
const FLEX_UNSUPPORTED_SETTINGS = [
  'FUNCTIONS_EXTENSION_VERSION',
  'FUNCTIONS_WORKER_RUNTIME',
  'FUNCTIONS_WORKER_RUNTIME_VERSION',
  'WEBSITE_RUN_FROM_PACKAGE',
  'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING',
  'WEBSITE_CONTENTSHARE',
  'WEBSITE_NODE_DEFAULT_VERSION',
];

describe('wiring', () => {
  let files: Map<string, BicepFile>;
  let main: BicepFile;
  let api: BicepFile;
  let appSettings: BicepObject;

  function moduleCall(source: string): ModuleDecl {
    const call = main.modules.find((m) => m.source === source);
    if (!call) throw new Error(`main.bicep does not call ${source}`);
    return call;
  }

  function moduleParams(source: string): BicepObject {
    return asObject(moduleCall(source).body.params);
  }

  function allowedValues(file: BicepFile, param: string): unknown {
    return file.params.get(param)?.decorators.find((d) => d.name === 'allowed')?.args[0];
  }

  beforeAll(async () => {
    files = await loadInfra();
    main = files.get('main.bicep')!;
    api = files.get('app/api.bicep')!;
    appSettings = asObject(api.vars.get('appSettings'));
  });

  describe('app settings', () => {
    it('are the appSettings variable, over any additional ones', () => {
      const configs = api.resources.filter((r: ResourceDecl) => r.type === 'Microsoft.Web/sites/config');
      const config = configs.find((r) => r.body.name === 'appsettings');
      expect(config?.condition).toBeUndefined();
      expect(exprText(getPath(config?.body, 'properties'))).toBe('union(additionalAppSettings, appSettings)');
      expect(exprText(moduleParams('app/api.bicep').additionalAppSettings)).toBe('additionalAppSettings');
      expect(main.params.get('additionalAppSettings')?.defaultValue).toEqual({});
    });

    const azureSettings = SETTINGS.filter((setting) => setting.scope === 'azure').map(
      (setting) => setting.name,
    );

    it("cover the code's settings list (read from src/config.ts)", () => {
      expect(azureSettings.length).toBeGreaterThan(0);
      expect(azureSettings).toContain('KEY_VAULT_URL');
    });

    it.each(azureSettings)('set %s', (name) => {
      expect(Object.keys(appSettings)).toContain(name);
      expect(appSettings[name]).not.toBe('');
    });

    it('connect to storage and Service Bus with the managed identity', () => {
      expect(appSettings).toMatchObject({
        AzureWebJobsStorage__credential: 'managedidentity',
        ServiceBusConnection__credential: 'managedidentity',
      });
      for (const name of [
        'AzureWebJobsStorage__clientId',
        'ServiceBusConnection__clientId',
        'AZURE_CLIENT_ID',
      ]) {
        expect(exprText(appSettings[name])).toBe('identityClientId');
      }
      expect(exprText(appSettings.AzureWebJobsStorage__accountName)).toBe('storageAccountName');
      expect(Object.keys(appSettings)).not.toContain('AzureWebJobsStorage');
      expect(exprText(moduleParams('app/api.bicep').identityClientId)).toBe('identity.outputs.clientId');
    });

    it('send telemetry with an Entra token for the managed identity', () => {
      expect(exprText(appSettings.APPLICATIONINSIGHTS_AUTHENTICATION_STRING)).toBe(
        "'Authorization=AAD;ClientId=${identityClientId}'",
      );
    });

    it('point STATE_TABLE_URL at the state table', () => {
      expect(exprText(appSettings.STATE_TABLE_URL)).toBe('stateTableUrl');
      expect(exprText(moduleParams('app/api.bicep').stateTableUrl)).toBe('storage.outputs.stateTableUrl');
      const storage = files.get('app/storage.bicep')!;
      expect(exprText(storage.outputs.get('stateTableUrl')?.value)).toBe(
        "'${storage.properties.primaryEndpoints.table}${stateTableName}'",
      );
      expect(main.vars.get('stateTableName')).toBe('releases');
    });

    it('set nothing Flex Consumption rejects', () => {
      for (const name of FLEX_UNSUPPORTED_SETTINGS) expect(Object.keys(appSettings)).not.toContain(name);
    });

    it("give MAX_DELIVERY_COUNT the request queue's own maxDeliveryCount", () => {
      expect(exprText(appSettings.MAX_DELIVERY_COUNT)).toBe('string(maxDeliveryCount)');
      // api.bicep's maxDeliveryCount comes from the Service Bus module's output ...
      expect(exprText(moduleParams('app/api.bicep').maxDeliveryCount)).toBe(
        'serviceBus.outputs.requestQueueMaxDeliveryCount',
      );
      // ... which is the deployed request queue's property ...
      const serviceBus = files.get('app/servicebus.bicep')!;
      expect(exprText(serviceBus.outputs.get('requestQueueMaxDeliveryCount')?.value)).toBe(
        'requestQueue.properties.maxDeliveryCount',
      );
      // ... which is set from main.bicep's parameter, 10 by default (the code's default too).
      const requestQueue = serviceBus.resources.find((r) => r.symbol === 'requestQueue')!;
      expect(exprText(getPath(requestQueue.body, 'properties.maxDeliveryCount'))).toBe('maxDeliveryCount');
      expect(exprText(moduleParams('app/servicebus.bicep').maxDeliveryCount)).toBe('maxDeliveryCount');
      expect(main.params.get('maxDeliveryCount')?.defaultValue).toBe(10);
      expect(SETTINGS.find((s) => s.name === 'MAX_DELIVERY_COUNT')?.default).toBe('10');
    });

    it("pass MDE_CLOUD from a parameter limited to the code's cloud profiles", () => {
      const clouds = Object.keys(CLOUD_PROFILES).sort();
      expect(exprText(appSettings.MDE_CLOUD)).toBe('mdeCloud');
      expect(exprText(moduleParams('app/api.bicep').mdeCloud)).toBe('mdeCloud');
      expect((allowedValues(main, 'mdeCloud') as string[]).slice().sort()).toEqual(clouds);
      expect((allowedValues(api, 'mdeCloud') as string[]).slice().sort()).toEqual(clouds);
      expect(main.params.get('mdeCloud')?.defaultValue).toBe('Commercial');
    });

    it("pass MDE_CREDENTIAL from a parameter limited to the code's modes, secret by default", () => {
      const modes = [...MDE_CREDENTIAL_MODES].sort();
      expect(exprText(appSettings.MDE_CREDENTIAL)).toBe('mdeCredential');
      expect(exprText(moduleParams('app/api.bicep').mdeCredential)).toBe('mdeCredential');
      expect((allowedValues(main, 'mdeCredential') as string[]).slice().sort()).toEqual(modes);
      expect((allowedValues(api, 'mdeCredential') as string[]).slice().sort()).toEqual(modes);
      expect(main.params.get('mdeCredential')?.defaultValue).toBe('secret');
      expect(SETTINGS.find((s) => s.name === 'MDE_CREDENTIAL')?.default).toBe('secret');
      for (const [setting, param] of [
        ['MDE_TENANT_ID', 'mdeTenantId'],
        ['MDE_CLIENT_ID', 'mdeClientId'],
      ] as const) {
        expect(exprText(appSettings[setting])).toBe(param);
        expect(exprText(moduleParams('app/api.bicep')[param])).toBe(param);
        expect(main.params.get(param)?.defaultValue).toBe('');
      }
    });

    it("output the federated identity credential the MDE app needs, with the code's exchange audiences", () => {
      expect(exprText(main.vars.get('federatedCredentialIssuer'))).toBe(
        "'${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'",
      );
      // The audience per cloud in Bicep is the code's table (GCC High and DoD: US Government).
      const audience = exprText(main.vars.get('tokenExchangeAudience'));
      const usGov = Object.entries(TOKEN_EXCHANGE_AUDIENCES).filter(([, a]) => a.endsWith('USGov'));
      expect(audience).toBe(
        `contains([${usGov.map(([cloud]) => `'${cloud}'`).join(', ')}], mdeCloud) ? '${TOKEN_EXCHANGE_AUDIENCES.GCCHigh}' : '${TOKEN_EXCHANGE_AUDIENCES.Commercial}'`,
      );
      expect(exprText(main.outputs.get('MDE_FEDERATED_CREDENTIAL_SUBJECT')?.value)).toBe(
        'identity.outputs.principalId',
      );
      const command = exprText(main.outputs.get('MDE_FEDERATED_CREDENTIAL_COMMAND')?.value);
      for (const part of [
        'az ad app federated-credential create',
        '${federatedCredentialIssuer}',
        '${identity.outputs.principalId}',
        '${tokenExchangeAudience}',
      ]) {
        expect(command).toContain(part);
      }
    });

    it('name the queues and secrets and schedule the tracker the way the code defaults them', () => {
      const defaults = Object.fromEntries(SETTINGS.map((s) => [s.name, s.default]));
      expect(main.vars.get('requestQueueName')).toBe(defaults.REQUEST_QUEUE_NAME);
      expect(main.vars.get('responseQueueName')).toBe(defaults.RESPONSE_QUEUE_NAME);
      expect(api.params.get('kvSecretTenantIdName')?.defaultValue).toBe(defaults.KV_SECRET_TENANT_ID);
      expect(api.params.get('kvSecretClientIdName')?.defaultValue).toBe(defaults.KV_SECRET_CLIENT_ID);
      expect(api.params.get('kvSecretClientSecretName')?.defaultValue).toBe(defaults.KV_SECRET_CLIENT_SECRET);
      expect(api.params.get('kvCertificateName')?.defaultValue).toBe(defaults.KV_CERTIFICATE_NAME);
      // The tracker's timer (TRACK_SCHEDULE) arrives with the state-table work in src/.
      if ('TRACK_SCHEDULE' in defaults)
        expect(api.params.get('trackSchedule')?.defaultValue).toBe(defaults.TRACK_SCHEDULE);
    });

    it.each([
      ['ALLOWED_CALLER_ROLES', 'allowedCallerRoles'],
      ['WEBHOOK_SIGNING_SECRET_NAME', 'webhookSigningSecretName'],
    ])('pass %s from the %s parameter, off by default', (setting, param) => {
      expect(exprText(appSettings[setting])).toBe(param);
      expect(exprText(moduleParams('app/api.bicep')[param])).toBe(param);
      expect(main.params.get(param)?.defaultValue).toBe('');
    });
  });

  describe('main.parameters.json', () => {
    let parameters: Record<string, { value: unknown }>;

    beforeAll(() => {
      const json = JSON.parse(fs.readFileSync(path.join(INFRA_DIR, 'main.parameters.json'), 'utf8')) as {
        parameters: Record<string, { value: unknown }>;
      };
      parameters = json.parameters;
    });

    it('maps the azd environment', () => {
      expect(parameters.environmentName?.value).toBe('${AZURE_ENV_NAME}');
      expect(parameters.location?.value).toBe('${AZURE_LOCATION}');
      expect(parameters.principalId?.value).toBe('${AZURE_PRINCIPAL_ID}');
    });

    it('only sets parameters main.bicep declares', () => {
      for (const name of Object.keys(parameters)) expect([...main.params.keys()]).toContain(name);
    });

    it('sets every parameter main.bicep requires', () => {
      const required = [...main.params.values()]
        .filter((p) => p.defaultValue === undefined)
        .map((p) => p.name);
      expect(required.sort()).toEqual(['environmentName', 'location']);
      for (const name of required) expect(Object.keys(parameters)).toContain(name);
    });
  });

  describe('main.bicep', () => {
    it('names resources with the azd resource token', () => {
      expect(exprText(main.vars.get('resourceToken'))).toBe(
        'toLower(uniqueString(subscription().id, environmentName, location))',
      );
      expect(exprText(main.vars.get('abbrs'))).toBe("loadJsonContent('abbreviations.json')");
    });

    it('outputs what azd and the operator need, in UPPER_SNAKE case', () => {
      const outputs = [...main.outputs.keys()];
      expect(outputs).toEqual(
        expect.arrayContaining([
          'AZURE_LOCATION',
          'AZURE_TENANT_ID',
          'AZURE_RESOURCE_GROUP',
          'AZURE_FUNCTION_APP_NAME',
          'AZURE_KEY_VAULT_NAME',
          'KEY_VAULT_URL',
          'SERVICE_BUS_NAMESPACE',
          'REQUEST_QUEUE_NAME',
          'RESPONSE_QUEUE_NAME',
          'APPLICATIONINSIGHTS_CONNECTION_STRING',
          'AZURE_CLIENT_ID',
        ]),
      );
      for (const name of outputs) expect(name).toMatch(/^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/);
      expect(exprText(main.outputs.get('AZURE_CLIENT_ID')?.value)).toBe('identity.outputs.clientId');
    });

    it('calls every module under app/, each once', () => {
      const onDisk = [...files.keys()].filter((name) => name.startsWith('app/')).sort();
      expect(main.modules.map((m) => m.source).sort()).toEqual(onDisk);
    });

    it('deploys every module into the resource group', () => {
      for (const call of main.modules)
        expect({ module: call.symbol, scope: exprText(call.body.scope) }).toEqual({
          module: call.symbol,
          scope: 'rg',
        });
    });
  });

  describe('every file', () => {
    it('uses every parameter and variable it declares (like the Bicep linter)', () => {
      for (const [name, file] of files) {
        const used = referencedIdentifiers(file);
        const unused = [...file.params.keys(), ...file.vars.keys()].filter((declared) => !used.has(declared));
        expect({ name, unused }).toEqual({ name, unused: [] });
      }
    });

    it('notices an unused parameter (so the check above can fail)', async () => {
      const source = 'param used string\nparam unused string\noutput o string = used\n';
      const used = referencedIdentifiers({ tree: await parseBicepSource(source) });
      expect(used.has('used')).toBe(true);
      expect(used.has('unused')).toBe(false);
    });

    it('uses stable (non-preview) API versions', () => {
      for (const resource of [...files.values()].flatMap((file) => file.resources)) {
        expect({ resource: resource.symbol, apiVersion: resource.apiVersion }).toEqual({
          resource: resource.symbol,
          apiVersion: expect.stringMatching(/^\d{4}-\d{2}-\d{2}$/),
        });
      }
    });
  });

  describe('module calls', () => {
    it('pass only declared parameters and every required one', () => {
      for (const [name, file] of files) {
        for (const call of file.modules) {
          const target = files.get(path.posix.join(path.posix.dirname(name), call.source))!;
          expect(target).toBeDefined();
          const passed = Object.keys(asObject(call.body.params));
          const declared = [...target.params.values()];
          for (const param of passed)
            expect({ call: call.symbol, param, declared: target.params.has(param) }).toEqual({
              call: call.symbol,
              param,
              declared: true,
            });
          for (const param of declared.filter((p) => p.defaultValue === undefined)) {
            expect({ call: call.symbol, param: param.name, passed: passed.includes(param.name) }).toEqual({
              call: call.symbol,
              param: param.name,
              passed: true,
            });
          }
        }
      }
    });

    it('read only outputs the modules declare', () => {
      const symbols = new Map(main.modules.map((m) => [m.symbol, files.get(m.source)!]));
      const references = [...main.source.matchAll(/\b(\w+)\.outputs\.(\w+)/g)];
      expect(references.length).toBeGreaterThan(10);
      for (const [, symbol, output] of references) {
        expect({ symbol, output, declared: symbols.get(symbol!)?.outputs.has(output!) }).toEqual({
          symbol,
          output,
          declared: true,
        });
      }
    });
  });

  describe('monitoring queries', () => {
    const kqlDir = path.join(INFRA_DIR, 'app', 'kql');
    const queries = fs.readdirSync(kqlDir).filter((name) => name.endsWith('.kql'));

    it('alert on Failed and Forbidden outcomes', () => {
      const alert = files
        .get('app/alerts.bicep')!
        .resources.find((r) => r.type === 'Microsoft.Insights/scheduledQueryRules')!;
      const scopes = getPath(alert.body, 'properties.scopes') as BicepValue[];
      expect(scopes.map(exprText)).toEqual(['applicationInsightsId']);
      const criteria = getPath(alert.body, 'properties.criteria.allOf') as BicepObject[];
      expect(exprText(criteria[0]!.query)).toBe("loadTextContent('kql/failed-outcomes.kql')");
      const kql = fs.readFileSync(path.join(kqlDir, 'failed-outcomes.kql'), 'utf8');
      expect(kql).toContain("where name == 'UnisolateOutcome'");
      expect(kql).toContain("status in ('Failed', 'Forbidden')");
    });

    it('are all used by the workbook or the alert', () => {
      const code = files.get('app/workbook.bicep')!.source + files.get('app/alerts.bicep')!.source;
      expect(queries.length).toBeGreaterThan(0);
      for (const query of queries) expect(code).toContain(`loadTextContent('kql/${query}')`);
    });
  });
});

describe('docs', () => {
  let files: Map<string, BicepFile>;
  const deploy = read('docs/deploy.md');
  const monitoring = read('docs/monitoring.md');

  beforeAll(async () => {
    files = await loadInfra();
  });

  it('deploy.md sets each Key Vault secret the app reads, by the name api.bicep gives it', () => {
    const api = files.get('app/api.bicep')!;
    const names = ['kvSecretTenantIdName', 'kvSecretClientIdName', 'kvSecretClientSecretName'].map(
      (param) => api.params.get(param)?.defaultValue,
    );
    expect(names).toEqual(['mde-tenant-id', 'mde-client-id', 'mde-client-secret']);
    for (const name of names as string[]) {
      expect(deploy).toMatch(
        new RegExp(`az keyvault secret set --vault-name "\\$KEY_VAULT" --name ${name} `),
      );
    }
  });

  it('deploy.md covers sign-in, azd up, the MDE permission and a smoke test', () => {
    for (const text of [
      'azd auth login',
      'azd up',
      'Machine.Isolate',
      'WindowsDefenderATP',
      'admin-consent',
      'az functionapp keys list',
      'curl ',
      'azd env set MDE_CLOUD',
    ]) {
      expect(deploy).toContain(text);
    }
  });

  it('deploy.md documents every parameter azd maps', () => {
    const parameters = JSON.parse(fs.readFileSync(path.join(INFRA_DIR, 'main.parameters.json'), 'utf8')) as {
      parameters: Record<string, { value: string }>;
    };
    const azdOwned = new Set(['AZURE_ENV_NAME', 'AZURE_LOCATION', 'AZURE_PRINCIPAL_ID']);
    for (const { value } of Object.values(parameters.parameters)) {
      const variable = /^\$\{([A-Z_]+)/.exec(value)?.[1];
      expect(variable).toBeDefined();
      if (!azdOwned.has(variable!)) expect(deploy).toContain(`\`${variable}\``);
    }
  });

  it('monitoring.md shows every query the workbook and alert use, exactly', () => {
    const kqlDir = path.join(INFRA_DIR, 'app', 'kql');
    const queries = fs.readdirSync(kqlDir).filter((name) => name.endsWith('.kql'));
    expect(queries.length).toBeGreaterThan(0);
    for (const query of queries) {
      const text = fs.readFileSync(path.join(kqlDir, query), 'utf8').trimEnd();
      expect({ query, shown: monitoring.includes(`\`\`\`kusto\n${text}\n\`\`\``) }).toEqual({
        query,
        shown: true,
      });
    }
  });
});
