/**
 * Every setting the app reads, parsed once per cold start.
 *
 * `SETTINGS` is the single list of settings: the parser, the README table test and the Bicep policy
 * test (every setting the code reads is set by `infra/`) all read it, so a new setting cannot be
 * forgotten in one of them.
 */

/** Sovereign cloud profiles of Microsoft Defender for Endpoint. */
export type MdeCloud = 'Commercial' | 'GCC' | 'GCCHigh' | 'DoD';

/** Host, login authority and token scope of one cloud, chosen together. */
export interface CloudProfile {
  apiBaseUrl: string;
  authorityHost: string;
  tokenScope: string;
}

/**
 * Endpoints per cloud.
 * See https://learn.microsoft.com/en-us/defender-endpoint/gov#api (US Government) and
 * https://learn.microsoft.com/en-us/defender-endpoint/api/exposed-apis-create-app-webapp.
 */
export const CLOUD_PROFILES: Readonly<Record<MdeCloud, CloudProfile>> = {
  Commercial: {
    apiBaseUrl: 'https://api.securitycenter.microsoft.com',
    authorityHost: 'https://login.microsoftonline.com',
    tokenScope: 'https://api.securitycenter.microsoft.com/.default',
  },
  GCC: {
    apiBaseUrl: 'https://api-gcc.securitycenter.microsoft.us',
    authorityHost: 'https://login.microsoftonline.com',
    tokenScope: 'https://api-gcc.securitycenter.microsoft.us/.default',
  },
  GCCHigh: {
    apiBaseUrl: 'https://api-gov.securitycenter.microsoft.us',
    authorityHost: 'https://login.microsoftonline.us',
    tokenScope: 'https://api-gov.securitycenter.microsoft.us/.default',
  },
  DoD: {
    apiBaseUrl: 'https://api-gov.securitycenter.microsoft.us',
    authorityHost: 'https://login.microsoftonline.us',
    tokenScope: 'https://api-gov.securitycenter.microsoft.us/.default',
  },
};

/** Where a setting must be present. `azure`: infra/ must set it on the deployed app. */
export type SettingScope = 'azure' | 'optional';

/** Description of one setting, for the parser, the README and the infra policy test. */
export interface SettingSpec {
  name: string;
  default: string;
  meaning: string;
  scope: SettingScope;
}

/** Every setting the code reads (`process.env`), in README order. */
export const SETTINGS: readonly SettingSpec[] = [
  {
    name: 'KEY_VAULT_URL',
    default: '(required)',
    meaning: 'Key Vault holding the MDE app credentials, `https://<vault>.vault.azure.net/`',
    scope: 'azure',
  },
  {
    name: 'KV_SECRET_TENANT_ID',
    default: 'mde-tenant-id',
    meaning: 'name of the secret holding the MDE app tenant id',
    scope: 'azure',
  },
  {
    name: 'KV_SECRET_CLIENT_ID',
    default: 'mde-client-id',
    meaning: 'name of the secret holding the MDE app client id',
    scope: 'azure',
  },
  {
    name: 'KV_SECRET_CLIENT_SECRET',
    default: 'mde-client-secret',
    meaning: 'name of the secret holding the MDE app client secret',
    scope: 'azure',
  },
  {
    name: 'AZURE_CLIENT_ID',
    default: '(none)',
    meaning: 'client id of the user-assigned managed identity (absent: system-assigned)',
    scope: 'azure',
  },
  {
    name: 'MDE_CLOUD',
    default: 'Commercial',
    meaning:
      '`Commercial`, `GCC`, `GCCHigh` or `DoD`: picks API host, login authority and token scope together',
    scope: 'azure',
  },
  {
    name: 'MDE_API_BASE_URL',
    default: '(from cloud)',
    meaning: 'override of the API host, e.g. a regional `https://us.api.security.microsoft.com`',
    scope: 'optional',
  },
  {
    name: 'MDE_AUTHORITY_HOST',
    default: '(from cloud)',
    meaning: 'override of the login host',
    scope: 'optional',
  },
  {
    name: 'MDE_TOKEN_SCOPE',
    default: '(from cloud)',
    meaning: 'override of the token scope',
    scope: 'optional',
  },
  {
    name: 'REQUEST_QUEUE_NAME',
    default: 'unisolate-requests',
    meaning: 'Service Bus queue the trigger reads requests from',
    scope: 'azure',
  },
  {
    name: 'RESPONSE_QUEUE_NAME',
    default: 'unisolate-responses',
    meaning: 'Service Bus queue every outcome is sent to',
    scope: 'azure',
  },
  {
    name: 'ServiceBusConnection__fullyQualifiedNamespace',
    default: '(required in Azure)',
    meaning: 'identity-based Service Bus connection, `<ns>.servicebus.windows.net`',
    scope: 'azure',
  },
  {
    name: 'ServiceBusConnection__credential',
    default: '(none)',
    meaning: '`managedidentity` for identity-based connections',
    scope: 'azure',
  },
  {
    name: 'ServiceBusConnection__clientId',
    default: '(none)',
    meaning: 'user-assigned identity used for Service Bus',
    scope: 'azure',
  },
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING',
    default: '(none)',
    meaning: 'telemetry target; absent means telemetry off, never a failure',
    scope: 'azure',
  },
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING',
    default: '(none)',
    meaning:
      '`Authorization=AAD;ClientId=<identity>`: send telemetry with the managed identity (resource with local auth disabled)',
    scope: 'azure',
  },
  {
    name: 'MAX_DELIVERY_COUNT',
    default: '10',
    meaning:
      "the request queue's max delivery count: on that delivery a transient failure is reported instead of thrown",
    scope: 'azure',
  },
  {
    name: 'MDE_REQUEST_TIMEOUT_MS',
    default: '30000',
    meaning: 'timeout of one Defender API call',
    scope: 'optional',
  },
  {
    name: 'MDE_RETRY_BUDGET_MS',
    default: '60000 (Service Bus) / 20000 (HTTP)',
    meaning:
      'total time one invocation may spend on retries and rate-limit waits; when set, applies to both triggers',
    scope: 'optional',
  },
  {
    name: 'SECRET_CACHE_TTL_SECONDS',
    default: '900',
    meaning: 'how long the Key Vault secrets are cached per instance',
    scope: 'optional',
  },
  {
    name: 'MDE_RATE_LIMIT_PER_MINUTE',
    default: '100',
    meaning: 'per-instance cap on Defender API calls per minute (MDE limit: 100)',
    scope: 'optional',
  },
  {
    name: 'MDE_RATE_LIMIT_PER_HOUR',
    default: '1500',
    meaning: 'per-instance cap on Defender API calls per hour (MDE limit: 1500)',
    scope: 'optional',
  },
];

/** The parsed settings. */
export interface Config {
  keyVaultUrl: string;
  secretNames: { tenantId: string; clientId: string; clientSecret: string };
  managedIdentityClientId: string | undefined;
  cloud: MdeCloud;
  mde: CloudProfile;
  requestQueueName: string;
  responseQueueName: string;
  appInsightsConnectionString: string | undefined;
  appInsightsAadClientId: string | undefined;
  appInsightsUseAad: boolean;
  maxDeliveryCount: number;
  requestTimeoutMs: number;
  retryBudgetMs: { http: number; serviceBus: number };
  secretCacheTtlMs: number;
  rateLimit: { perMinute: number; perHour: number };
}

/** Thrown when settings are invalid; the message lists every problem at once. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid app settings: ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

function text(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

function httpsUrl(env: Env, name: string, problems: string[], fallback?: string): string | undefined {
  const raw = text(env, name) ?? fallback;
  if (raw === undefined) return undefined;
  try {
    const url = new URL(raw);
    if (url.protocol !== 'https:') problems.push(`${name} must be an https URL (got ${url.protocol})`);
    return raw.replace(/\/+$/, '');
  } catch {
    problems.push(`${name} must be an absolute URL (got "${raw}")`);
    return undefined;
  }
}

function integer(
  env: Env,
  name: string,
  fallback: number,
  min: number,
  max: number,
  problems: string[],
): number {
  const raw = text(env, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    problems.push(`${name} must be a whole number from ${min} to ${max} (got "${raw}")`);
    return fallback;
  }
  return value;
}

/**
 * Parses the settings. Throws one {@link ConfigError} listing every problem.
 * @param env - usually `process.env`
 */
export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];

  const keyVaultUrl = httpsUrl(env, 'KEY_VAULT_URL', problems);
  if (keyVaultUrl === undefined && !problems.some((p) => p.startsWith('KEY_VAULT_URL'))) {
    problems.push('KEY_VAULT_URL is required (https://<vault>.vault.azure.net/)');
  }

  const cloudRaw = text(env, 'MDE_CLOUD') ?? 'Commercial';
  const cloud = (Object.keys(CLOUD_PROFILES) as MdeCloud[]).find(
    (c) => c.toLowerCase() === cloudRaw.toLowerCase(),
  );
  if (!cloud) problems.push(`MDE_CLOUD must be one of Commercial, GCC, GCCHigh, DoD (got "${cloudRaw}")`);
  const profile = CLOUD_PROFILES[cloud ?? 'Commercial'];
  const apiBaseUrl = httpsUrl(env, 'MDE_API_BASE_URL', problems, profile.apiBaseUrl) ?? profile.apiBaseUrl;
  const authorityHost =
    httpsUrl(env, 'MDE_AUTHORITY_HOST', problems, profile.authorityHost) ?? profile.authorityHost;
  const tokenScope = text(env, 'MDE_TOKEN_SCOPE') ?? profile.tokenScope;

  const secretName = (name: string, fallback: string): string => {
    const value = text(env, name) ?? fallback;
    // Key Vault secret names: 1-127 alphanumerics and dashes.
    if (!/^[0-9a-zA-Z-]{1,127}$/.test(value))
      problems.push(`${name} must be a Key Vault secret name (got "${value}")`);
    return value;
  };
  const secretNames = {
    tenantId: secretName('KV_SECRET_TENANT_ID', 'mde-tenant-id'),
    clientId: secretName('KV_SECRET_CLIENT_ID', 'mde-client-id'),
    clientSecret: secretName('KV_SECRET_CLIENT_SECRET', 'mde-client-secret'),
  };

  const budget = text(env, 'MDE_RETRY_BUDGET_MS');
  const budgetBoth =
    budget === undefined ? undefined : integer(env, 'MDE_RETRY_BUDGET_MS', 0, 0, 600_000, problems);

  const authString = text(env, 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING');
  const aadClientId = /(?:^|;)\s*ClientId=([^;]+)/i.exec(authString ?? '')?.[1]?.trim();

  const config: Config = {
    keyVaultUrl: keyVaultUrl ?? '',
    secretNames,
    managedIdentityClientId: text(env, 'AZURE_CLIENT_ID'),
    cloud: cloud ?? 'Commercial',
    mde: { apiBaseUrl, authorityHost, tokenScope },
    requestQueueName: text(env, 'REQUEST_QUEUE_NAME') ?? 'unisolate-requests',
    responseQueueName: text(env, 'RESPONSE_QUEUE_NAME') ?? 'unisolate-responses',
    appInsightsConnectionString: text(env, 'APPLICATIONINSIGHTS_CONNECTION_STRING'),
    appInsightsUseAad: /Authorization=AAD/i.test(authString ?? ''),
    appInsightsAadClientId: aadClientId,
    maxDeliveryCount: integer(env, 'MAX_DELIVERY_COUNT', 10, 1, 2000, problems),
    requestTimeoutMs: integer(env, 'MDE_REQUEST_TIMEOUT_MS', 30_000, 100, 600_000, problems),
    retryBudgetMs: { http: budgetBoth ?? 20_000, serviceBus: budgetBoth ?? 60_000 },
    secretCacheTtlMs: integer(env, 'SECRET_CACHE_TTL_SECONDS', 900, 0, 86_400, problems) * 1000,
    rateLimit: {
      perMinute: integer(env, 'MDE_RATE_LIMIT_PER_MINUTE', 100, 1, 100, problems),
      perHour: integer(env, 'MDE_RATE_LIMIT_PER_HOUR', 1500, 1, 1500, problems),
    },
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
