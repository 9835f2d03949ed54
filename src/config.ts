/**
 * Every setting the app reads, parsed once per cold start.
 *
 * `SETTINGS` is the single list of settings: the parser, the README table test and the Bicep policy
 * test (every setting the code reads is set by `infra/`) all read it, so a new setting cannot be
 * forgotten in one of them.
 */

import { isLoopbackUrl } from './adapters/loopback';
import { parseRoleList } from './core/callerPrincipal';
import { parseReleasePolicy, type ReleasePolicy } from './core/healthGate';

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

/**
 * The audience a managed identity's token must have to be exchanged for an app's token (workload identity
 * federation), per cloud: GCC uses the commercial login and audience, GCC High and DoD the US Government ones.
 * https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity
 */
export const TOKEN_EXCHANGE_AUDIENCES: Readonly<Record<MdeCloud, string>> = {
  Commercial: 'api://AzureADTokenExchange',
  GCC: 'api://AzureADTokenExchange',
  GCCHigh: 'api://AzureADTokenExchangeUSGov',
  DoD: 'api://AzureADTokenExchangeUSGov',
};

/** How the function authenticates as the MDE app (`MDE_CREDENTIAL`). */
export type MdeCredentialMode = 'secret' | 'certificate' | 'federated';

/** The modes, in documentation order. */
export const MDE_CREDENTIAL_MODES: readonly MdeCredentialMode[] = ['secret', 'certificate', 'federated'];

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
    meaning:
      'Key Vault holding the MDE app credentials, `https://<vault>.vault.azure.net/` (not needed with `MDE_CREDENTIAL=federated` and `MDE_TENANT_ID` / `MDE_CLIENT_ID` set, unless webhooks are signed)',
    scope: 'azure',
  },
  {
    name: 'MDE_CREDENTIAL',
    default: 'secret',
    meaning:
      'how the app authenticates as the MDE app: `secret` (client secret in Key Vault), `certificate` (Key Vault certificate `KV_CERTIFICATE_NAME`) or `federated` (the user-assigned managed identity is a federated credential of the MDE app: no secret anywhere); see docs/security.md',
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
    name: 'KV_CERTIFICATE_NAME',
    default: 'mde-client-certificate',
    meaning:
      'name of the Key Vault certificate of the MDE app (`MDE_CREDENTIAL=certificate`), read through its secret (PEM or PKCS#12)',
    scope: 'azure',
  },
  {
    name: 'MDE_SEND_CERTIFICATE_CHAIN',
    default: 'false',
    meaning:
      '`true`: send the certificate chain (`x5c`) with certificate assertions, for subject name + issuer authentication',
    scope: 'optional',
  },
  {
    name: 'MDE_TENANT_ID',
    default: '(from Key Vault)',
    meaning:
      'tenant id of the MDE app registration, instead of the Key Vault secret `KV_SECRET_TENANT_ID` (not a secret)',
    scope: 'optional',
  },
  {
    name: 'MDE_CLIENT_ID',
    default: '(from Key Vault)',
    meaning:
      'client id of the MDE app registration, instead of the Key Vault secret `KV_SECRET_CLIENT_ID` (not a secret)',
    scope: 'optional',
  },
  {
    name: 'MDE_TOKEN_EXCHANGE_AUDIENCE',
    default: '(from cloud)',
    meaning:
      'override of the audience of the managed identity token exchanged for the MDE app token (`MDE_CREDENTIAL=federated`): `api://AzureADTokenExchange`, `api://AzureADTokenExchangeUSGov` for GCC High and DoD',
    scope: 'optional',
  },
  {
    name: 'AZURE_CLIENT_ID',
    default: '(none)',
    meaning:
      'client id of the user-assigned managed identity (absent: system-assigned); required with `MDE_CREDENTIAL=federated`',
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
    meaning:
      'cap on calls per minute of each Defender API (MDE limit: 100 per API); shared by every instance with durable state, per instance without. Lower it when another tool uses the same app registration',
    scope: 'optional',
  },
  {
    name: 'MDE_RATE_LIMIT_PER_HOUR',
    default: '1500',
    meaning:
      'cap on calls per hour of each Defender API (MDE limit: 1500 per API); shared like the minute cap',
    scope: 'optional',
  },
  {
    name: 'TRACK_RATE_LIMIT_PER_MINUTE',
    default: '2',
    meaning:
      "the tracker's own share of the list-machine-actions budget per minute (taken out of that API's cap, so polling never takes what releases need)",
    scope: 'optional',
  },
  {
    name: 'TRACK_RATE_LIMIT_PER_HOUR',
    default: '60',
    meaning: "the tracker's own share of the list-machine-actions budget per hour",
    scope: 'optional',
  },
  {
    name: 'QUEUE_MAX_HOURS',
    default: '24',
    meaning:
      'how long a release may stay parked (`Queued`) waiting for the Defender API budget before it ends `Throttled` (needs durable state)',
    scope: 'optional',
  },
  {
    name: 'RESUME_SCHEDULE',
    default: '*/30 * * * * *',
    meaning:
      'NCRONTAB schedule of the timer that hands parked releases back to the request queue when their budget frees, and deletes expired records; an invalid value is reported and the default used',
    scope: 'azure',
  },
  {
    name: 'CHECK_ISOLATION_STATE',
    default: 'true',
    meaning:
      "derive the device's isolation state from its newest Isolate/Unisolate action before releasing (one extra " +
      'Defender API call, needs Machine.Read.All): NotIsolated / IsolationPending instead of a release',
    scope: 'optional',
  },
  {
    name: 'RELEASE_POLICY',
    default: '(off)',
    meaning:
      'health gate, e.g. `blockRiskScore=High;blockAlertSeverity=Medium`: refuse (Blocked) devices at or above ' +
      'that risk score or with unresolved alerts of that severity or higher; `"force": true` bypasses it. Needs ' +
      'Machine.Read.All / Alert.Read.All',
    scope: 'optional',
  },
  {
    name: 'STATE_TABLE_URL',
    default: '(none: no idempotency or tracking)',
    meaning:
      'Table Storage table for idempotency keys and release tracking, `https://<account>.table.core.windows.net/<table>`, reached with the managed identity (Storage Table Data Contributor)',
    scope: 'azure',
  },
  {
    name: 'STATE_TABLE_CONNECTION_STRING',
    default: '(none)',
    meaning:
      "local development only: connection string of the state table's account (Azurite); table `releases`, or the last segment of `STATE_TABLE_URL` when both are set",
    scope: 'optional',
  },
  {
    name: 'IDEMPOTENCY_WINDOW_HOURS',
    default: '24',
    meaning:
      'how long a repeat with the same idempotency key gets the stored outcome instead of a new release',
    scope: 'optional',
  },
  {
    name: 'TRACK_SCHEDULE',
    default: '0 */1 * * * *',
    meaning:
      'NCRONTAB schedule (six fields, seconds first) of the tracker that polls accepted releases until their MachineAction ends; an invalid value is reported and the default used',
    scope: 'azure',
  },
  {
    name: 'TRACK_MAX_HOURS',
    default: '24',
    meaning: 'how long a release is tracked before a `TrackingExpired` completion is sent',
    scope: 'optional',
  },
  {
    name: 'WEBHOOK_SIGNING_SECRET_NAME',
    default: '(none: signatures not required)',
    meaning:
      'name of the Key Vault secret holding the webhook signing key: when set, every HTTP request must carry a valid `X-Unisolate-Signature` (see docs/security.md)',
    scope: 'optional',
  },
  {
    name: 'ALLOWED_CALLER_ROLES',
    default: '(none: no role check)',
    meaning:
      'comma-separated Entra ID app roles (e.g. `Unisolate.Invoke`) of which an HTTP caller must hold one; needs App Service Authentication',
    scope: 'optional',
  },
  {
    name: 'WEBSITE_AUTH_ENABLED',
    default: '(set by the platform)',
    meaning: '`True` when App Service Authentication is on: only then is `X-MS-CLIENT-PRINCIPAL` trusted',
    scope: 'optional',
  },
];

/** How the app authenticates as the MDE app: the parsed `MDE_CREDENTIAL` and what goes with it. */
export interface CredentialConfig {
  mode: MdeCredentialMode;
  /** Key Vault certificate (`certificate` mode). */
  certificateName: string;
  sendCertificateChain: boolean;
  /** Audience of the managed identity token exchanged for the MDE app token (`federated` mode). */
  tokenExchangeAudience: string;
  /** From the settings instead of Key Vault, when set. */
  tenantId: string | undefined;
  clientId: string | undefined;
}

/** The parsed settings. */
export interface Config {
  /** Undefined only when nothing is read from Key Vault (federated, ids in the settings, no signing). */
  keyVaultUrl: string | undefined;
  secretNames: { tenantId: string; clientId: string; clientSecret: string };
  credential: CredentialConfig;
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
  /** Calls per minute / hour of each Defender API. */
  rateLimit: { perMinute: number; perHour: number };
  /** The tracker's share of list machine actions. */
  trackerRateLimit: { perMinute: number; perHour: number };
  /** `QUEUE_MAX_HOURS` in ms. */
  queueMaxMs: number;
  /** Durable state (idempotency, tracking); undefined when neither setting is present. */
  stateTable:
    | { tableUrl: string; connectionString?: undefined }
    | { connectionString: string; tableName: string | undefined; tableUrl?: undefined }
    | undefined;
  /** `IDEMPOTENCY_WINDOW_HOURS` in ms. */
  idempotencyWindowMs: number;
  /** `TRACK_MAX_HOURS` in ms. */
  trackMaxMs: number;
  /** `CHECK_ISOLATION_STATE` (default true). */
  checkIsolationState: boolean;
  /** `RELEASE_POLICY` (null: off). */
  releasePolicy: ReleasePolicy | null;
  /** Who may call the HTTP routes, beyond the function key. */
  callers: {
    /** Key Vault secret with the webhook signing key; undefined: signatures not required. */
    webhookSigningSecretName: string | undefined;
    /** App roles of which a caller must hold one; empty: no role check. */
    allowedRoles: string[];
    /** Whether App Service Authentication is on (so `X-MS-CLIENT-PRINCIPAL` comes from the platform). */
    platformAuthEnabled: boolean;
  };
}

/** The setting a problem is about: every problem message starts with the setting's name. */
export function settingOf(problem: string): string {
  return /^[A-Za-z0-9_]+/.exec(problem)?.[0] ?? problem;
}

/**
 * Thrown when settings are invalid. `problems` (and the message) list every problem with the values found:
 * for the function log only. `settings` names the invalid settings without values: what a caller may see.
 */
export class ConfigError extends Error {
  /** Names of the invalid settings, without values. */
  readonly settings: readonly string[];

  constructor(readonly problems: readonly string[]) {
    super(`Invalid app settings: ${problems.join('; ')}`);
    this.name = 'ConfigError';
    this.settings = [...new Set(problems.map(settingOf))];
  }
}

/**
 * The settings of the HTTP caller checks (docs/security.md). They are judged on their own
 * ({@link callerCheckProblems}), so that a mistake in an unrelated setting never switches the checks off.
 */
export const CALLER_CHECK_SETTINGS: readonly string[] = [
  'WEBHOOK_SIGNING_SECRET_NAME',
  'ALLOWED_CALLER_ROLES',
  'WEBSITE_AUTH_ENABLED',
];

/**
 * The problems that concern the caller checks: their own settings, and `KEY_VAULT_URL` when signatures are
 * required (the signing key is read from Key Vault). None: the checks can run even if other settings are
 * invalid. Any: the checks cannot be trusted, so every HTTP release must be refused (fail closed).
 */
export function callerCheckProblems(parsed: { config: Config; problems: readonly string[] }): string[] {
  const concerned = new Set(CALLER_CHECK_SETTINGS);
  if (parsed.config.callers.webhookSigningSecretName !== undefined) concerned.add('KEY_VAULT_URL');
  return parsed.problems.filter((problem) => concerned.has(settingOf(problem)));
}

/**
 * The safety checks a release makes, from the settings. With invalid settings every release fails anyway;
 * the defaults are returned then.
 */
export function safetyOptions(config: Config | ConfigError): {
  checkIsolationState: boolean;
  releasePolicy: ReleasePolicy | null;
} {
  return config instanceof ConfigError
    ? { checkIsolationState: true, releasePolicy: null }
    : { checkIsolationState: config.checkIsolationState, releasePolicy: config.releasePolicy };
}

type Env = Readonly<Record<string, string | undefined>>;

/** Fields of an NCRONTAB expression: second, minute, hour, day, month, day of week (Sunday = 0). */
const NCRONTAB_FIELDS: readonly { min: number; max: number; names?: readonly string[] }[] = [
  { min: 0, max: 59 },
  { min: 0, max: 59 },
  { min: 0, max: 23 },
  { min: 1, max: 31 },
  {
    min: 1,
    max: 12,
    names: ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'],
  },
  { min: 0, max: 6, names: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] },
];

/**
 * Whether `expression` is a six-field NCRONTAB expression as the timer trigger takes it: each field `*`, a
 * value, a range `a-b` or a list of those, each optionally with a step `/n`; month and day names allowed.
 * https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions
 */
export function isNcrontab(expression: string): boolean {
  const fields = expression.trim().split(/\s+/);
  if (fields.length !== NCRONTAB_FIELDS.length) return false;
  return fields.every((field, index) => {
    const spec = NCRONTAB_FIELDS[index]!;
    const value = (text: string): number | undefined => {
      const named = spec.names?.indexOf(text.toLowerCase()) ?? -1;
      const n = named >= 0 ? named + spec.min : /^\d{1,2}$/.test(text) ? Number(text) : NaN;
      return n >= spec.min && n <= spec.max ? n : undefined;
    };
    return field.split(',').every((item) => {
      const match = /^(\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:\/(\d{1,2}))?$/.exec(item);
      if (!match) return false;
      if (match[2] !== undefined && Number(match[2]) < 1) return false;
      if (match[1] === '*') return true;
      const [from, to] = match[1]!.split('-');
      const low = value(from!);
      const high = to === undefined ? low : value(to);
      return low !== undefined && high !== undefined && low <= high;
    });
  });
}

/**
 * The tracker's timer schedule: `TRACK_SCHEDULE` when it is valid NCRONTAB, else the documented default (and
 * the problem). Resolved when the timer is registered, because a `%TRACK_SCHEDULE%` binding expression
 * without that app setting stops the host from indexing the function.
 */
export function trackSchedule(env: Env = process.env): { schedule: string; problem?: string } {
  return timerSchedule('TRACK_SCHEDULE', env);
}

/** A timer's schedule setting (`TRACK_SCHEDULE`, `RESUME_SCHEDULE`), resolved like {@link trackSchedule}. */
export function timerSchedule(
  name: 'TRACK_SCHEDULE' | 'RESUME_SCHEDULE',
  env: Env = process.env,
): { schedule: string; problem?: string } {
  const fallback = SETTINGS.find((s) => s.name === name)!.default;
  const raw = text(env, name);
  if (raw === undefined) return { schedule: fallback };
  const schedule = raw.split(/\s+/).join(' ');
  if (isNcrontab(schedule)) return { schedule };
  return {
    schedule: fallback,
    problem: `${name} must be an NCRONTAB expression with six fields, seconds first, e.g. "${fallback}" (got "${raw}")`,
  };
}

function text(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

function httpsUrl(env: Env, name: string, problems: string[], fallback?: string): string | undefined {
  const raw = text(env, name) ?? fallback;
  if (raw === undefined) return undefined;
  try {
    const url = new URL(raw);
    // Plain http only for a simulator on this machine (tests, sandbox); anything else must be https.
    const loopbackHttp = url.protocol === 'http:' && isLoopbackUrl(raw);
    if (url.protocol !== 'https:' && !loopbackHttp) {
      problems.push(`${name} must be an https URL (got ${url.protocol})`);
    }
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

/** `STATE_TABLE_URL` (https; http only for a loopback emulator) and/or `STATE_TABLE_CONNECTION_STRING`. */
function stateTable(env: Env, problems: string[]): Config['stateTable'] {
  const raw = text(env, 'STATE_TABLE_URL');
  const connectionString = text(env, 'STATE_TABLE_CONNECTION_STRING');
  let tableName: string | undefined;
  if (raw !== undefined) {
    try {
      const url = new URL(raw);
      const loopback = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])$/i.test(url.hostname);
      tableName = url.pathname.split('/').filter(Boolean).pop();
      if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback))
        problems.push(`STATE_TABLE_URL must be an https URL (got ${url.protocol})`);
      if (!tableName || !/^[A-Za-z][A-Za-z0-9]{2,62}$/.test(tableName))
        problems.push(
          `STATE_TABLE_URL must end with a table name, https://<account>.table.core.windows.net/<table> (got "${raw}")`,
        );
    } catch {
      problems.push(`STATE_TABLE_URL must be an absolute URL (got "${raw}")`);
    }
  }
  if (connectionString !== undefined) return { connectionString, tableName };
  return raw === undefined ? undefined : { tableUrl: raw.replace(/\/+$/, '') };
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** `MDE_CREDENTIAL` and its settings. */
function credentialConfig(
  env: Env,
  cloud: MdeCloud,
  problems: string[],
  secretName: (name: string, fallback: string) => string,
): CredentialConfig {
  const raw = (text(env, 'MDE_CREDENTIAL') ?? 'secret').toLowerCase();
  const mode = MDE_CREDENTIAL_MODES.find((m) => m === raw);
  if (!mode) {
    problems.push(`MDE_CREDENTIAL must be one of ${MDE_CREDENTIAL_MODES.join(', ')} (got "${raw}")`);
  }
  const chain = (text(env, 'MDE_SEND_CERTIFICATE_CHAIN') ?? 'false').toLowerCase();
  if (chain !== 'true' && chain !== 'false') {
    problems.push(`MDE_SEND_CERTIFICATE_CHAIN must be true or false (got "${chain}")`);
  }
  const tenantId = text(env, 'MDE_TENANT_ID');
  // A directory id, or one of its verified domain names.
  if (tenantId !== undefined && !GUID.test(tenantId) && !/^[a-z0-9-]+(\.[a-z0-9-]+)+$/i.test(tenantId)) {
    problems.push(`MDE_TENANT_ID must be a tenant id (GUID) or domain (got "${tenantId}")`);
  }
  const clientId = text(env, 'MDE_CLIENT_ID');
  if (clientId !== undefined && !GUID.test(clientId)) {
    problems.push(`MDE_CLIENT_ID must be an application (client) id, a GUID (got "${clientId}")`);
  }
  if (mode === 'federated' && text(env, 'AZURE_CLIENT_ID') === undefined) {
    problems.push(
      'MDE_CREDENTIAL=federated needs a user-assigned managed identity: set AZURE_CLIENT_ID to its client id. Entra ID accepts only user-assigned managed identities as federated credentials of an app; a system-assigned identity cannot be one',
    );
  }
  return {
    mode: mode ?? 'secret',
    certificateName: secretName('KV_CERTIFICATE_NAME', 'mde-client-certificate'),
    sendCertificateChain: chain === 'true',
    tokenExchangeAudience: text(env, 'MDE_TOKEN_EXCHANGE_AUDIENCE') ?? TOKEN_EXCHANGE_AUDIENCES[cloud],
    tenantId,
    clientId,
  };
}

/**
 * Parses the settings. Throws one {@link ConfigError} listing every problem.
 * @param env - usually `process.env`
 */
export function loadConfig(env: Env = process.env): Config {
  const { config, problems } = parseSettings(env);
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/**
 * Parses the settings without throwing: every value (an invalid one replaced by its default, or empty) and
 * every problem, each message starting with its setting's name ({@link settingOf}).
 * @param env - usually `process.env`
 */
export function parseSettings(env: Env = process.env): { config: Config; problems: string[] } {
  const problems: string[] = [];

  const keyVaultUrl = httpsUrl(env, 'KEY_VAULT_URL', problems);

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
  const webhookSecretName = text(env, 'WEBHOOK_SIGNING_SECRET_NAME');
  if (webhookSecretName !== undefined) secretName('WEBHOOK_SIGNING_SECRET_NAME', webhookSecretName);
  const credential = credentialConfig(env, cloud ?? 'Commercial', problems, secretName);
  // Key Vault is needed for whatever is read from it: the MDE app credentials (unless federated with both
  // ids in the settings) and the webhook signing secret.
  const needsVault =
    credential.mode !== 'federated' ||
    credential.tenantId === undefined ||
    credential.clientId === undefined ||
    webhookSecretName !== undefined;
  if (keyVaultUrl === undefined && needsVault && !problems.some((p) => p.startsWith('KEY_VAULT_URL'))) {
    problems.push(
      credential.mode === 'federated'
        ? 'KEY_VAULT_URL is required (https://<vault>.vault.azure.net/) unless MDE_TENANT_ID and MDE_CLIENT_ID are set and WEBHOOK_SIGNING_SECRET_NAME is not'
        : 'KEY_VAULT_URL is required (https://<vault>.vault.azure.net/)',
    );
  }

  const budget = text(env, 'MDE_RETRY_BUDGET_MS');
  const budgetBoth =
    budget === undefined ? undefined : integer(env, 'MDE_RETRY_BUDGET_MS', 0, 0, 600_000, problems);

  const authString = text(env, 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING');
  const aadClientId = /(?:^|;)\s*ClientId=([^;]+)/i.exec(authString ?? '')?.[1]?.trim();

  const checkRaw = (text(env, 'CHECK_ISOLATION_STATE') ?? 'true').toLowerCase();
  if (checkRaw !== 'true' && checkRaw !== 'false') {
    problems.push(`CHECK_ISOLATION_STATE must be true or false (got "${checkRaw}")`);
  }
  const policy = parseReleasePolicy(env.RELEASE_POLICY);
  problems.push(...policy.problems);
  const schedule = trackSchedule(env);
  if (schedule.problem !== undefined) problems.push(schedule.problem);
  const resume = timerSchedule('RESUME_SCHEDULE', env);
  if (resume.problem !== undefined) problems.push(resume.problem);
  const perMinute = integer(env, 'MDE_RATE_LIMIT_PER_MINUTE', 100, 1, 100, problems);
  const perHour = integer(env, 'MDE_RATE_LIMIT_PER_HOUR', 1500, 1, 1500, problems);
  const tracker = {
    perMinute: integer(env, 'TRACK_RATE_LIMIT_PER_MINUTE', 2, 1, Math.max(1, perMinute - 1), problems),
    perHour: integer(env, 'TRACK_RATE_LIMIT_PER_HOUR', 60, 1, Math.max(1, perHour - 1), problems),
  };

  const config: Config = {
    keyVaultUrl,
    secretNames,
    credential,
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
    rateLimit: { perMinute, perHour },
    trackerRateLimit: tracker,
    queueMaxMs: integer(env, 'QUEUE_MAX_HOURS', 24, 1, 168, problems) * 3_600_000,
    stateTable: stateTable(env, problems),
    idempotencyWindowMs: integer(env, 'IDEMPOTENCY_WINDOW_HOURS', 24, 1, 720, problems) * 3_600_000,
    trackMaxMs: integer(env, 'TRACK_MAX_HOURS', 24, 1, 720, problems) * 3_600_000,
    checkIsolationState: checkRaw !== 'false',
    releasePolicy: policy.policy,
    callers: {
      webhookSigningSecretName: webhookSecretName,
      allowedRoles: parseRoleList(text(env, 'ALLOWED_CALLER_ROLES')),
      platformAuthEnabled: /^(true|1)$/i.test(text(env, 'WEBSITE_AUTH_ENABLED') ?? ''),
    },
  };
  return { config, problems };
}
