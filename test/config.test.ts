/**
 * Settings: parsing and validating every setting, the MDE_CREDENTIAL kinds, and the README settings table
 * kept in step with the declared settings.
 */
import { readFileSync } from 'node:fs';
import {
  CLOUD_PROFILES,
  ConfigError,
  parseSettings,
  SETTINGS,
  settingOf,
  TOKEN_EXCHANGE_AUDIENCES,
} from '../src/config';

const base = { KEY_VAULT_URL: 'https://kv-mde.vault.azure.net/' };

/** The settings parsed from `env`, which must be valid. */
function valid(env: Record<string, string>) {
  const { config, problems } = parseSettings(env);
  expect(problems).toEqual([]);
  return config;
}

/** Every problem `env` has. */
const problemsOf = (env: Record<string, string>): string[] => parseSettings(env).problems;

describe('parseSettings', () => {
  it('defaults to the commercial cloud and the documented names', () => {
    const config = valid(base);
    expect(config.mde).toEqual({
      apiBaseUrl: 'https://api.securitycenter.microsoft.com',
      authorityHost: 'https://login.microsoftonline.com',
      tokenScope: 'https://api.securitycenter.microsoft.com/.default',
    });
    expect(config.secretNames).toEqual({
      tenantId: 'mde-tenant-id',
      clientId: 'mde-client-id',
      clientSecret: 'mde-client-secret',
    });
    expect([config.requestQueueName, config.responseQueueName, config.maxDeliveryCount]).toEqual([
      'unisolate-requests',
      'unisolate-responses',
      10,
    ]);
    expect(config.retryBudgetMs).toEqual({ http: 20_000, serviceBus: 60_000 });
  });

  it.each([
    ['GCC', 'https://api-gcc.securitycenter.microsoft.us', 'https://login.microsoftonline.com'],
    ['GCCHigh', 'https://api-gov.securitycenter.microsoft.us', 'https://login.microsoftonline.us'],
    ['DoD', 'https://api-gov.securitycenter.microsoft.us', 'https://login.microsoftonline.us'],
  ])('picks host, authority and scope together for %s', (cloud, api, authority) => {
    const config = valid({ ...base, MDE_CLOUD: cloud });
    expect(config.mde).toEqual({ apiBaseUrl: api, authorityHost: authority, tokenScope: `${api}/.default` });
    expect(CLOUD_PROFILES[config.cloud].tokenScope).toBe(`${api}/.default`);
  });

  it('accepts overrides (regional API host) and a single retry budget for both triggers', () => {
    const config = valid({
      ...base,
      MDE_API_BASE_URL: 'https://us.api.security.microsoft.com/',
      MDE_RETRY_BUDGET_MS: '5000',
    });
    expect(config.mde.apiBaseUrl).toBe('https://us.api.security.microsoft.com');
    expect(config.mde.tokenScope).toBe('https://api.securitycenter.microsoft.com/.default');
    expect(config.retryBudgetMs).toEqual({ http: 5000, serviceBus: 5000 });
  });

  it('accepts plain http only for a loopback simulator', () => {
    expect(valid({ ...base, MDE_API_BASE_URL: 'http://127.0.0.1:8080' }).mde.apiBaseUrl).toBe(
      'http://127.0.0.1:8080',
    );
    expect(problemsOf({ ...base, MDE_API_BASE_URL: 'http://api.contoso.com' })).toEqual([
      expect.stringMatching(/https URL/),
    ]);
  });

  it('lists every problem', () => {
    const problems = problemsOf({
      MDE_CLOUD: 'Azure',
      MAX_DELIVERY_COUNT: '0',
      MDE_API_BASE_URL: 'http://api',
      KV_SECRET_CLIENT_SECRET: 'a b',
    }).join('\n');
    for (const name of [
      'KEY_VAULT_URL',
      'MDE_CLOUD',
      'MAX_DELIVERY_COUNT',
      'MDE_API_BASE_URL',
      'KV_SECRET_CLIENT_SECRET',
    ]) {
      expect(problems).toContain(name);
    }
  });

  it('starts every problem with its setting, so a caller can be told the names without the values', () => {
    const invalid = {
      KEY_VAULT_URL: 'ftp://kv',
      KV_SECRET_TENANT_ID: 'a b',
      MDE_CLOUD: 'Mars',
      MDE_AUTHORITY_HOST: 'nope',
      MAX_DELIVERY_COUNT: '0',
      MDE_REQUEST_TIMEOUT_MS: 'x',
      MDE_RETRY_BUDGET_MS: '-1',
      SECRET_CACHE_TTL_SECONDS: 'y',
      MDE_RATE_LIMIT_PER_MINUTE: '101',
      MDE_RATE_LIMIT_PER_HOUR: '0',
      CHECK_ISOLATION_STATE: 'maybe',
      RELEASE_POLICY: 'blockRiskScore=Huge',
      STATE_TABLE_URL: 'http://table.example/t',
      IDEMPOTENCY_WINDOW_HOURS: '0',
      TRACK_SCHEDULE: '* * *',
      TRACK_MAX_HOURS: '0',
      WEBHOOK_SIGNING_SECRET_NAME: 'a/b',
    };
    const { config, problems } = parseSettings(invalid);
    const error = new ConfigError(problems, config);
    expect([...new Set(error.problems.map(settingOf))].sort()).toEqual(Object.keys(invalid).sort());
    expect([...error.settings].sort()).toEqual(Object.keys(invalid).sort());
    for (const value of ['ftp://kv', 'Mars', 'maybe', 'a/b']) {
      expect(error.settings.join(' ')).not.toContain(value);
    }
  });
});

describe('MDE_CREDENTIAL', () => {
  const uami = '1d1d1d1d-0000-4000-8000-0000000001d1';
  const ids = { MDE_TENANT_ID: '72f988bf-0000-4000-8000-00000000c0de', MDE_CLIENT_ID: uami };

  it('defaults to the client secret, with the documented certificate name', () => {
    expect(valid(base).credential).toEqual({
      mode: 'secret',
      certificateName: 'mde-client-certificate',
      sendCertificateChain: false,
      tokenExchangeAudience: 'api://AzureADTokenExchange',
      tenantId: undefined,
      clientId: undefined,
    });
  });

  it.each([
    ['Commercial', 'api://AzureADTokenExchange'],
    ['GCC', 'api://AzureADTokenExchange'],
    ['GCCHigh', 'api://AzureADTokenExchangeUSGov'],
    ['DoD', 'api://AzureADTokenExchangeUSGov'],
  ])('%s exchanges managed identity tokens for audience %s', (cloud, audience) => {
    expect(valid({ ...base, MDE_CLOUD: cloud }).credential.tokenExchangeAudience).toBe(audience);
    expect(TOKEN_EXCHANGE_AUDIENCES[cloud as keyof typeof TOKEN_EXCHANGE_AUDIENCES]).toBe(audience);
  });

  it('federated with both ids in the settings needs no Key Vault; MDE_TOKEN_EXCHANGE_AUDIENCE overrides', () => {
    const config = valid({
      MDE_CREDENTIAL: 'Federated',
      AZURE_CLIENT_ID: uami,
      MDE_TOKEN_EXCHANGE_AUDIENCE: 'api://custom',
      ...ids,
    });
    expect(config.keyVaultUrl).toBeUndefined();
    expect(config.credential).toMatchObject({
      mode: 'federated',
      tokenExchangeAudience: 'api://custom',
      ...{ tenantId: ids.MDE_TENANT_ID },
    });
  });

  it('refuses a system-assigned identity for the federated mode, saying why', () => {
    expect(problemsOf({ MDE_CREDENTIAL: 'federated', ...ids }).join('\n')).toMatch(
      /AZURE_CLIENT_ID.*only user-assigned managed identities/,
    );
  });

  it('still needs Key Vault for ids not in the settings, or for signed webhooks', () => {
    expect(problemsOf({ MDE_CREDENTIAL: 'federated', AZURE_CLIENT_ID: uami }).join()).toMatch(
      /KEY_VAULT_URL/,
    );
    expect(
      problemsOf({
        MDE_CREDENTIAL: 'federated',
        AZURE_CLIENT_ID: uami,
        ...ids,
        WEBHOOK_SIGNING_SECRET_NAME: 'k',
      }).join(),
    ).toMatch(/KEY_VAULT_URL/);
    expect(problemsOf({ MDE_CREDENTIAL: 'certificate', ...ids }).join()).toMatch(/KEY_VAULT_URL is required/);
  });

  it('lists every bad credential setting', () => {
    const problems = problemsOf({
      ...base,
      MDE_CREDENTIAL: 'password',
      KV_CERTIFICATE_NAME: 'no spaces',
      MDE_SEND_CERTIFICATE_CHAIN: 'yes',
      MDE_TENANT_ID: 'not a tenant',
      MDE_CLIENT_ID: 'not-a-guid',
    }).join('\n');
    for (const name of [
      'MDE_CREDENTIAL',
      'KV_CERTIFICATE_NAME',
      'MDE_SEND_CERTIFICATE_CHAIN',
      'MDE_TENANT_ID',
      'MDE_CLIENT_ID',
    ]) {
      expect(problems).toContain(name);
    }
  });
});

describe('settings documentation', () => {
  const names = SETTINGS.map((s) => s.name);

  it('local.settings.sample.json names every setting', () => {
    const sample = JSON.parse(readFileSync('local.settings.sample.json', 'utf8')) as {
      Values: Record<string, string>;
    };
    expect(Object.keys(sample.Values)).toEqual(expect.arrayContaining(names));
  });

  it('the README settings table documents every setting once, with its default and meaning', () => {
    const readme = readFileSync('README.md', 'utf8');
    for (const setting of SETTINGS) {
      const rows = readme.split('\n').filter((line) => line.startsWith(`| \`${setting.name}\``));
      expect({ setting: setting.name, rows: rows.length }).toEqual({ setting: setting.name, rows: 1 });
      const cells = rows[0]!
        .split('|')
        .slice(1, -1)
        .map((cell) => cell.trim());
      // The default cell: a value is shown in backticks, a description ("(from cloud)") as written.
      expect({
        setting: setting.name,
        default: cells[1]?.replace(/^`(.*)`$/, '$1'),
        meaning: cells[2],
      }).toEqual({
        setting: setting.name,
        default: setting.default,
        meaning: setting.meaning,
      });
    }
  });

  it('every process.env read in src/ is a documented setting', () => {
    const { execSync } = jest.requireActual<typeof import('node:child_process')>('node:child_process');
    // Direct reads (env.X, env['X']) and the config parser's reads (read(env, 'X', ...), get('X')).
    const hits = execSync(
      `grep -rhoE "(env(\\.[A-Z][A-Za-z_]+|\\['[A-Za-z_]+|, '[A-Za-z_]+')|get\\('[A-Z][A-Z0-9_]+)" src`,
      { encoding: 'utf8' },
    );
    const read = new Set(
      hits
        .split('\n')
        .filter(Boolean)
        .map((h) => h.replace(/^(env(\.|\['|, ')|get\(')/, '').replace(/'$/, '')),
    );
    expect(read.size).toBeGreaterThan(15);
    // Set by the platform, or SDK switches the telemetry adapter sets (not settings an operator chooses).
    const platform = new Set([
      'IDENTITY_ENDPOINT',
      'MSI_ENDPOINT',
      'WEBSITE_SITE_NAME',
      'APPLICATION_INSIGHTS_NO_STATSBEAT',
      'APPLICATIONINSIGHTS_STATSBEAT_DISABLED',
      'APPLICATIONINSIGHTS_SDKSTATS_DISABLED',
    ]);
    for (const name of read) if (!platform.has(name)) expect(names).toContain(name);
  });
});
