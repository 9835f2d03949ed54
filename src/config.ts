/**
 * Every setting the app reads, declared once and parsed once per cold start.
 *
 * {@link DECLARED} is the one table of settings: for each, its default, its parser (with its bounds and the
 * problem it reports), its meaning and where it must be set. The parser ({@link parseSettings}) reads every
 * value through it; `SETTINGS` (derived from it) feeds the README table, `local.settings.sample.json` and the
 * infra policy tests, which hold them all together. Rules that span settings (which credential needs Key
 * Vault, the tracker's share below the per-API limit, one retry budget for both triggers) are in
 * {@link parseSettings}, each once.
 */

import { isLoopbackUrl } from './adapters/loopback';
import { MDE_LIMITS } from './core/budget';
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

/** Description of one setting, for the README table, the sample settings and the infra policy test. */
export interface SettingSpec {
  name: string;
  /** The default as documented: the value, or what applies without one ("(from cloud)"). */
  default: string;
  meaning: string;
  scope: SettingScope;
}

/** How one setting is read: its documented default, and its parser (`raw` is the trimmed value, if any). */
interface Kind<T> {
  default: string;
  read(name: string, raw: string | undefined, problems: string[]): T;
}

/** A declared setting: how it is read, where it must be set, what it means. */
interface Setting<T> extends Kind<T> {
  scope: SettingScope;
  meaning: string;
}

function setting<T>(scope: SettingScope, kind: Kind<T>, meaning: string): Setting<T> {
  return { ...kind, scope, meaning };
}

/** The default retry budgets: webhook callers time out sooner than a queue message's lock. */
const RETRY_BUDGET_MS = { http: 20_000, serviceBus: 60_000 } as const;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** A directory id, or one of its verified domain names. */
const TENANT =
  /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z0-9-]+(?:\.[a-z0-9-]+)+)$/i;
/** Key Vault object names: 1-127 alphanumerics and dashes. */
const VAULT_NAME = /^[0-9a-zA-Z-]{1,127}$/;
const MDE_CLOUDS = Object.keys(CLOUD_PROFILES) as MdeCloud[];

/** Text, or undefined when empty. */
function text(doc: string): Kind<string | undefined> {
  return { default: doc, read: (_name, raw) => raw };
}

/** Text with a default. */
function textOr(fallback: string): Kind<string> {
  return { default: fallback, read: (_name, raw) => raw ?? fallback };
}

/** Read by the Functions host, not by the app (documented and set by infra all the same). */
function hostOnly(doc: string): Kind<undefined> {
  return { default: doc, read: () => undefined };
}

/** Text that must match `pattern` (`what` says how). */
function matching(pattern: RegExp, what: string, doc: string): Kind<string | undefined> {
  return {
    default: doc,
    read: (name, raw, problems) => {
      if (raw === undefined || pattern.test(raw)) return raw;
      problems.push(`${name} must be ${what} (got "${raw}")`);
      return undefined;
    },
  };
}

/** A Key Vault secret or certificate name, with a default. */
function vaultName(fallback: string): Kind<string> {
  return {
    default: fallback,
    read: (name, raw, problems) => {
      const value = raw ?? fallback;
      if (!VAULT_NAME.test(value)) problems.push(`${name} must be a Key Vault secret name (got "${value}")`);
      return value;
    },
  };
}

/** An optional Key Vault secret name. */
function optionalVaultName(doc: string): Kind<string | undefined> {
  return {
    default: doc,
    read: (name, raw, problems) => {
      if (raw !== undefined && !VAULT_NAME.test(raw)) {
        problems.push(`${name} must be a Key Vault secret name (got "${raw}")`);
      }
      return raw;
    },
  };
}

/** A whole number within bounds, with a default. */
function whole(fallback: number, min: number, max: number): Kind<number> {
  return {
    default: String(fallback),
    read: (name, raw, problems) => wholeNumber(name, raw, min, max, problems) ?? fallback,
  };
}

/** A whole number within bounds, or undefined (`doc` says what applies then). */
function optionalWhole(min: number, max: number, doc: string): Kind<number | undefined> {
  return { default: doc, read: (name, raw, problems) => wholeNumber(name, raw, min, max, problems) };
}

function wholeNumber(
  name: string,
  raw: string | undefined,
  min: number,
  max: number,
  problems: string[],
): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (Number.isInteger(value) && value >= min && value <= max) return value;
  problems.push(`${name} must be a whole number from ${min} to ${max} (got "${raw}")`);
  return undefined;
}

/** `true` or `false` (any casing), with a default. */
function flag(fallback: boolean): Kind<boolean> {
  return {
    default: String(fallback),
    read: (name, raw, problems) => {
      const value = (raw ?? String(fallback)).toLowerCase();
      if (value === 'true' || value === 'false') return value === 'true';
      problems.push(`${name} must be true or false (got "${raw}")`);
      return fallback;
    },
  };
}

/** One of `values` (any casing), with a default. */
function oneOf<T extends string>(values: readonly T[], fallback: T): Kind<T> {
  return {
    default: fallback,
    read: (name, raw, problems) => {
      if (raw === undefined) return fallback;
      const found = values.find((v) => v.toLowerCase() === raw.toLowerCase());
      if (found) return found;
      problems.push(`${name} must be one of ${values.join(', ')} (got "${raw}")`);
      return fallback;
    },
  };
}

/** An absolute https URL (plain http only for a simulator on this machine), trailing slashes dropped. */
function url(options: { doc: string }): Kind<string | undefined> {
  return {
    default: options.doc,
    read: (name, raw, problems) => {
      if (raw === undefined) return undefined;
      try {
        const parsed = new URL(raw);
        const loopbackHttp = parsed.protocol === 'http:' && isLoopbackUrl(raw);
        if (parsed.protocol !== 'https:' && !loopbackHttp) {
          problems.push(`${name} must be an https URL (got ${parsed.protocol})`);
        }
        return raw.replace(/\/+$/, '');
      } catch {
        problems.push(`${name} must be an absolute URL (got "${raw}")`);
        return undefined;
      }
    },
  };
}

/** An NCRONTAB timer schedule, with a default (used, and reported, when the value is not valid). */
function schedule(fallback: string): Kind<string> {
  return {
    default: fallback,
    read: (name, raw, problems) => {
      if (raw === undefined) return fallback;
      const value = raw.split(/\s+/).join(' ');
      if (isNcrontab(value)) return value;
      problems.push(
        `${name} must be an NCRONTAB expression with six fields, seconds first, e.g. "${fallback}" (got "${raw}")`,
      );
      return fallback;
    },
  };
}

/** `RELEASE_POLICY` (see core/healthGate.ts). */
function releasePolicy(): Kind<ReleasePolicy | null> {
  return {
    default: '(off)',
    read: (_name, raw, problems) => {
      const parsed = parseReleasePolicy(raw);
      problems.push(...parsed.problems);
      return parsed.policy;
    },
  };
}

/** `ALLOWED_CALLER_ROLES`: comma- or space-separated app roles. */
function roles(): Kind<string[]> {
  return { default: '(none: no role check)', read: (_name, raw) => parseRoleList(raw) };
}

/** `WEBSITE_AUTH_ENABLED`, as the platform sets it (`True`). */
function platformFlag(): Kind<boolean> {
  return { default: '(set by the platform)', read: (_name, raw) => /^(true|1)$/i.test(raw ?? '') };
}

/** Every setting the code reads (`process.env`), in README order: the one place each is declared. */
const DECLARED = {
  KEY_VAULT_URL: setting(
    'azure',
    url({ doc: '(required)' }),
    'Key Vault holding the MDE app credentials, `https://<vault>.vault.azure.net/` (not needed with `MDE_CREDENTIAL=federated` and `MDE_TENANT_ID` / `MDE_CLIENT_ID` set, unless webhooks are signed)',
  ),
  MDE_CREDENTIAL: setting(
    'azure',
    oneOf(MDE_CREDENTIAL_MODES, 'secret'),
    'how the app authenticates as the MDE app: `secret` (client secret in Key Vault), `certificate` (Key Vault certificate `KV_CERTIFICATE_NAME`) or `federated` (the user-assigned managed identity is a federated credential of the MDE app: no secret anywhere); see docs/security.md',
  ),
  KV_SECRET_TENANT_ID: setting(
    'azure',
    vaultName('mde-tenant-id'),
    'name of the secret holding the MDE app tenant id',
  ),
  KV_SECRET_CLIENT_ID: setting(
    'azure',
    vaultName('mde-client-id'),
    'name of the secret holding the MDE app client id',
  ),
  KV_SECRET_CLIENT_SECRET: setting(
    'azure',
    vaultName('mde-client-secret'),
    'name of the secret holding the MDE app client secret',
  ),
  KV_CERTIFICATE_NAME: setting(
    'azure',
    vaultName('mde-client-certificate'),
    'name of the Key Vault certificate of the MDE app (`MDE_CREDENTIAL=certificate`), read through its secret (PEM or PKCS#12)',
  ),
  MDE_SEND_CERTIFICATE_CHAIN: setting(
    'optional',
    flag(false),
    '`true`: send the certificate chain (`x5c`) with certificate assertions, for subject name + issuer authentication',
  ),
  MDE_TENANT_ID: setting(
    'optional',
    matching(TENANT, 'a tenant id (GUID) or domain', '(from Key Vault)'),
    'tenant id of the MDE app registration, instead of the Key Vault secret `KV_SECRET_TENANT_ID` (not a secret)',
  ),
  MDE_CLIENT_ID: setting(
    'optional',
    matching(GUID, 'an application (client) id, a GUID', '(from Key Vault)'),
    'client id of the MDE app registration, instead of the Key Vault secret `KV_SECRET_CLIENT_ID` (not a secret)',
  ),
  MDE_TOKEN_EXCHANGE_AUDIENCE: setting(
    'optional',
    text('(from cloud)'),
    'override of the audience of the managed identity token exchanged for the MDE app token (`MDE_CREDENTIAL=federated`): `api://AzureADTokenExchange`, `api://AzureADTokenExchangeUSGov` for GCC High and DoD',
  ),
  AZURE_CLIENT_ID: setting(
    'azure',
    text('(none)'),
    'client id of the user-assigned managed identity (absent: system-assigned); required with `MDE_CREDENTIAL=federated`',
  ),
  MDE_CLOUD: setting(
    'azure',
    oneOf(MDE_CLOUDS, 'Commercial'),
    '`Commercial`, `GCC`, `GCCHigh` or `DoD`: picks API host, login authority and token scope together',
  ),
  MDE_API_BASE_URL: setting(
    'optional',
    url({ doc: '(from cloud)' }),
    'override of the API host, e.g. a regional `https://us.api.security.microsoft.com`',
  ),
  MDE_AUTHORITY_HOST: setting('optional', url({ doc: '(from cloud)' }), 'override of the login host'),
  MDE_TOKEN_SCOPE: setting('optional', text('(from cloud)'), 'override of the token scope'),
  REQUEST_QUEUE_NAME: setting(
    'azure',
    textOr('unisolate-requests'),
    'Service Bus queue the trigger reads requests from',
  ),
  RESPONSE_QUEUE_NAME: setting(
    'azure',
    textOr('unisolate-responses'),
    'Service Bus queue every outcome is sent to',
  ),
  ServiceBusConnection__fullyQualifiedNamespace: setting(
    'azure',
    hostOnly('(required in Azure)'),
    'identity-based Service Bus connection, `<ns>.servicebus.windows.net`',
  ),
  ServiceBusConnection__credential: setting(
    'azure',
    hostOnly('(none)'),
    '`managedidentity` for identity-based connections',
  ),
  ServiceBusConnection__clientId: setting(
    'azure',
    hostOnly('(none)'),
    'user-assigned identity used for Service Bus',
  ),
  APPLICATIONINSIGHTS_CONNECTION_STRING: setting(
    'azure',
    text('(none)'),
    'telemetry target; absent means telemetry off, never a failure',
  ),
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: setting(
    'azure',
    text('(none)'),
    '`Authorization=AAD;ClientId=<identity>`: send telemetry with the managed identity (resource with local auth disabled)',
  ),
  MAX_DELIVERY_COUNT: setting(
    'azure',
    whole(10, 1, 2000),
    "the request queue's max delivery count: on that delivery a transient failure is reported instead of thrown; with durable state, how many runs of a release may end in a transient failure (each parked with backoff) before it ends `Failed`",
  ),
  MDE_REQUEST_TIMEOUT_MS: setting(
    'optional',
    whole(30_000, 100, 600_000),
    'timeout of one Defender API call',
  ),
  MDE_RETRY_BUDGET_MS: setting(
    'optional',
    optionalWhole(0, 600_000, `${RETRY_BUDGET_MS.serviceBus} (Service Bus) / ${RETRY_BUDGET_MS.http} (HTTP)`),
    'total time one invocation may spend on retries and rate-limit waits; when set, applies to both triggers',
  ),
  SECRET_CACHE_TTL_SECONDS: setting(
    'optional',
    whole(900, 0, 86_400),
    'how long the Key Vault secrets are cached per instance',
  ),
  MDE_RATE_LIMIT_PER_MINUTE: setting(
    'optional',
    whole(MDE_LIMITS.perMinute, 1, MDE_LIMITS.perMinute),
    'cap on calls per minute of each Defender API (MDE limit: 100 per API); shared by every instance with durable state, per instance without. Lower it when another tool uses the same app registration',
  ),
  MDE_RATE_LIMIT_PER_HOUR: setting(
    'optional',
    whole(MDE_LIMITS.perHour, 1, MDE_LIMITS.perHour),
    'cap on calls per hour of each Defender API (MDE limit: 1500 per API); shared like the minute cap',
  ),
  TRACK_RATE_LIMIT_PER_MINUTE: setting(
    'optional',
    whole(2, 1, MDE_LIMITS.perMinute - 1),
    "the tracker's own share of the list-machine-actions budget per minute (taken out of that API's cap, so polling never takes what releases need)",
  ),
  TRACK_RATE_LIMIT_PER_HOUR: setting(
    'optional',
    whole(60, 1, MDE_LIMITS.perHour - 1),
    "the tracker's own share of the list-machine-actions budget per hour",
  ),
  QUEUE_MAX_HOURS: setting(
    'optional',
    whole(24, 1, 168),
    'how long a release may stay parked (`Queued`) waiting for the Defender API budget before it ends `Throttled` (needs durable state)',
  ),
  RESUME_SCHEDULE: setting(
    'azure',
    schedule('*/30 * * * * *'),
    'NCRONTAB schedule of the timer that hands parked releases back to the request queue when their budget frees (and running ones whose lease ended), and deletes expired records; an invalid value is reported and the default used',
  ),
  CHECK_ISOLATION_STATE: setting(
    'optional',
    flag(true),
    "derive the device's isolation state from its newest Isolate/Unisolate action before releasing (one extra Defender API call, needs Machine.Read.All): NotIsolated / IsolationPending instead of a release",
  ),
  RELEASE_POLICY: setting(
    'optional',
    releasePolicy(),
    'health gate, e.g. `blockRiskScore=High;blockAlertSeverity=Medium`: refuse (Blocked) devices at or above that risk score or with unresolved alerts of that severity or higher; `"force": true` bypasses it. Needs Machine.Read.All / Alert.Read.All',
  ),
  STATE_TABLE_URL: setting(
    'azure',
    text('(none: no durable state)'),
    'durable state: idempotency keys, release tracking and status, parked (`Queued`) releases and the Defender API budget shared by all instances; a table `https://<account>.table.core.windows.net/<table>` reached with the managed identity (Storage Table Data Contributor)',
  ),
  STATE_TABLE_CONNECTION_STRING: setting(
    'optional',
    text('(none)'),
    "local development only: connection string of the state table's account (Azurite); table `releases`, or the last segment of `STATE_TABLE_URL` when both are set",
  ),
  IDEMPOTENCY_WINDOW_HOURS: setting(
    'optional',
    whole(24, 1, 720),
    'how long a repeat with the same idempotency key gets the stored outcome instead of a new release',
  ),
  TRACK_SCHEDULE: setting(
    'azure',
    schedule('0 */1 * * * *'),
    'NCRONTAB schedule (six fields, seconds first) of the tracker that polls accepted releases until their MachineAction ends; an invalid value is reported and the default used',
  ),
  TRACK_MAX_HOURS: setting(
    'optional',
    whole(24, 1, 720),
    'how long a release is tracked before a `TrackingExpired` completion is sent',
  ),
  WEBHOOK_SIGNING_SECRET_NAME: setting(
    'optional',
    optionalVaultName('(none: signatures not required)'),
    'name of the Key Vault secret holding the webhook signing key: when set, every HTTP request must carry a valid `X-Unisolate-Signature` (see docs/security.md)',
  ),
  ALLOWED_CALLER_ROLES: setting(
    'optional',
    roles(),
    'comma-separated Entra ID app roles (e.g. `Unisolate.Invoke`) of which an HTTP caller must hold one; needs App Service Authentication',
  ),
  WEBSITE_AUTH_ENABLED: setting(
    'optional',
    platformFlag(),
    '`True` when App Service Authentication is on: only then is `X-MS-CLIENT-PRINCIPAL` trusted',
  ),
} satisfies Record<string, Setting<unknown>>;

type SettingName = keyof typeof DECLARED;

/** Every setting the code reads, in README order (derived from the declarations). */
export const SETTINGS: readonly SettingSpec[] = Object.entries(DECLARED).map(([name, s]) => ({
  name,
  default: s.default,
  meaning: s.meaning,
  scope: s.scope,
}));

type Env = Readonly<Record<string, string | undefined>>;

/** Reads one declared setting from `env` (trimmed; empty is absent). */
function read<K extends SettingName>(
  env: Env,
  name: K,
  problems: string[],
): ReturnType<(typeof DECLARED)[K]['read']> {
  const raw = env[name]?.trim();
  return DECLARED[name].read(name, raw ? raw : undefined, problems) as ReturnType<
    (typeof DECLARED)[K]['read']
  >;
}

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
 * Invalid settings. `problems` (and the message) list every problem with the values found: for the function
 * log only. `settings` names the invalid settings without values: what a caller may see. `parsed` is every
 * setting as {@link parseSettings} read it, an invalid one replaced by its default.
 */
export class ConfigError extends Error {
  /** Names of the invalid settings, without values. */
  readonly settings: readonly string[];

  constructor(
    readonly problems: readonly string[],
    readonly parsed: Config,
  ) {
    super(`Invalid app settings: ${problems.join('; ')}`);
    this.name = 'ConfigError';
    this.settings = [...new Set(problems.map(settingOf))];
  }
}

/**
 * The settings of the HTTP caller checks (docs/security.md). They are judged on their own
 * ({@link callerCheckProblems}), so that a mistake in an unrelated setting never switches the checks off.
 */
export const CALLER_CHECK_SETTINGS = [
  'WEBHOOK_SIGNING_SECRET_NAME',
  'ALLOWED_CALLER_ROLES',
  'WEBSITE_AUTH_ENABLED',
] as const satisfies readonly SettingName[];

/**
 * The problems that concern the caller checks: their own settings, and `KEY_VAULT_URL` when signatures are
 * required (the signing key is read from Key Vault). None: the checks can run even if other settings are
 * invalid. Any: the checks cannot be trusted, so every HTTP release must be refused (fail closed).
 */
export function callerCheckProblems(parsed: { config: Config; problems: readonly string[] }): string[] {
  const concerned = new Set<string>(CALLER_CHECK_SETTINGS);
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
 * A timer's schedule setting (`TRACK_SCHEDULE`, `RESUME_SCHEDULE`): the value when it is valid NCRONTAB, else
 * the documented default (and the problem). Resolved when the timer is registered, because a
 * `%TRACK_SCHEDULE%` binding expression without that app setting stops the host from indexing the function.
 */
export function timerSchedule(
  name: 'TRACK_SCHEDULE' | 'RESUME_SCHEDULE',
  env: Env = process.env,
): { schedule: string; problem?: string } {
  const problems: string[] = [];
  const value = read(env, name, problems);
  return problems.length > 0 ? { schedule: value, problem: problems[0]! } : { schedule: value };
}

/** `STATE_TABLE_URL` (https; http only for a loopback emulator) and/or `STATE_TABLE_CONNECTION_STRING`. */
function stateTable(env: Env, problems: string[]): Config['stateTable'] {
  const raw = read(env, 'STATE_TABLE_URL', problems);
  const connectionString = read(env, 'STATE_TABLE_CONNECTION_STRING', problems);
  let tableName: string | undefined;
  if (raw !== undefined) {
    try {
      const parsed = new URL(raw);
      tableName = parsed.pathname.split('/').filter(Boolean).pop();
      if (parsed.protocol !== 'https:' && !(parsed.protocol === 'http:' && isLoopbackUrl(raw)))
        problems.push(`STATE_TABLE_URL must be an https URL (got ${parsed.protocol})`);
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

/**
 * Parses the settings without throwing: every value (an invalid one replaced by its default, or empty) and
 * every problem, each message starting with its setting's name ({@link settingOf}).
 * @param env - usually `process.env`
 */
export function parseSettings(env: Env = process.env): { config: Config; problems: string[] } {
  const problems: string[] = [];
  const get = <K extends SettingName>(name: K) => read(env, name, problems);

  const cloud = get('MDE_CLOUD');
  const profile = CLOUD_PROFILES[cloud];
  const credential: CredentialConfig = {
    mode: get('MDE_CREDENTIAL'),
    certificateName: get('KV_CERTIFICATE_NAME'),
    sendCertificateChain: get('MDE_SEND_CERTIFICATE_CHAIN'),
    tokenExchangeAudience: get('MDE_TOKEN_EXCHANGE_AUDIENCE') ?? TOKEN_EXCHANGE_AUDIENCES[cloud],
    tenantId: get('MDE_TENANT_ID'),
    clientId: get('MDE_CLIENT_ID'),
  };
  const managedIdentityClientId = get('AZURE_CLIENT_ID');
  if (credential.mode === 'federated' && managedIdentityClientId === undefined) {
    problems.push(
      'MDE_CREDENTIAL=federated needs a user-assigned managed identity: set AZURE_CLIENT_ID to its client id. Entra ID accepts only user-assigned managed identities as federated credentials of an app; a system-assigned identity cannot be one',
    );
  }
  const webhookSigningSecretName = get('WEBHOOK_SIGNING_SECRET_NAME');
  // Key Vault is needed for whatever is read from it: the MDE app credentials (unless federated with both ids
  // in the settings) and the webhook signing secret.
  const keyVaultUrl = get('KEY_VAULT_URL');
  const needsVault =
    credential.mode !== 'federated' ||
    credential.tenantId === undefined ||
    credential.clientId === undefined ||
    webhookSigningSecretName !== undefined;
  if (keyVaultUrl === undefined && needsVault && !problems.some((p) => p.startsWith('KEY_VAULT_URL'))) {
    problems.push(
      credential.mode === 'federated'
        ? 'KEY_VAULT_URL is required (https://<vault>.vault.azure.net/) unless MDE_TENANT_ID and MDE_CLIENT_ID are set and WEBHOOK_SIGNING_SECRET_NAME is not'
        : 'KEY_VAULT_URL is required (https://<vault>.vault.azure.net/)',
    );
  }

  // One setting for both triggers' retry budgets when set.
  const retryBudget = get('MDE_RETRY_BUDGET_MS');
  const rateLimit = { perMinute: get('MDE_RATE_LIMIT_PER_MINUTE'), perHour: get('MDE_RATE_LIMIT_PER_HOUR') };
  // The tracker's share is taken out of the per-API limit: it must leave releases some.
  const trackerRateLimit = {
    perMinute: get('TRACK_RATE_LIMIT_PER_MINUTE'),
    perHour: get('TRACK_RATE_LIMIT_PER_HOUR'),
  };
  for (const window of ['perMinute', 'perHour'] as const) {
    if (trackerRateLimit[window] >= rateLimit[window]) {
      const [own, api] =
        window === 'perMinute'
          ? ['TRACK_RATE_LIMIT_PER_MINUTE', 'MDE_RATE_LIMIT_PER_MINUTE']
          : ['TRACK_RATE_LIMIT_PER_HOUR', 'MDE_RATE_LIMIT_PER_HOUR'];
      problems.push(
        `${own} must be below ${api} (got ${trackerRateLimit[window]} of ${rateLimit[window]}): the rest is the releases' share`,
      );
      trackerRateLimit[window] = Math.max(1, Math.min(trackerRateLimit[window], rateLimit[window] - 1));
    }
  }
  const authString = get('APPLICATIONINSIGHTS_AUTHENTICATION_STRING');
  const hours = 3_600_000;

  const config: Config = {
    keyVaultUrl,
    secretNames: {
      tenantId: get('KV_SECRET_TENANT_ID'),
      clientId: get('KV_SECRET_CLIENT_ID'),
      clientSecret: get('KV_SECRET_CLIENT_SECRET'),
    },
    credential,
    managedIdentityClientId,
    cloud,
    mde: {
      apiBaseUrl: get('MDE_API_BASE_URL') ?? profile.apiBaseUrl,
      authorityHost: get('MDE_AUTHORITY_HOST') ?? profile.authorityHost,
      tokenScope: get('MDE_TOKEN_SCOPE') ?? profile.tokenScope,
    },
    requestQueueName: get('REQUEST_QUEUE_NAME'),
    responseQueueName: get('RESPONSE_QUEUE_NAME'),
    appInsightsConnectionString: get('APPLICATIONINSIGHTS_CONNECTION_STRING'),
    appInsightsUseAad: /Authorization=AAD/i.test(authString ?? ''),
    appInsightsAadClientId: /(?:^|;)\s*ClientId=([^;]+)/i.exec(authString ?? '')?.[1]?.trim(),
    maxDeliveryCount: get('MAX_DELIVERY_COUNT'),
    requestTimeoutMs: get('MDE_REQUEST_TIMEOUT_MS'),
    retryBudgetMs: {
      http: retryBudget ?? RETRY_BUDGET_MS.http,
      serviceBus: retryBudget ?? RETRY_BUDGET_MS.serviceBus,
    },
    secretCacheTtlMs: get('SECRET_CACHE_TTL_SECONDS') * 1000,
    rateLimit,
    trackerRateLimit,
    queueMaxMs: get('QUEUE_MAX_HOURS') * hours,
    stateTable: stateTable(env, problems),
    idempotencyWindowMs: get('IDEMPOTENCY_WINDOW_HOURS') * hours,
    trackMaxMs: get('TRACK_MAX_HOURS') * hours,
    checkIsolationState: get('CHECK_ISOLATION_STATE'),
    releasePolicy: get('RELEASE_POLICY'),
    callers: {
      webhookSigningSecretName,
      allowedRoles: get('ALLOWED_CALLER_ROLES'),
      platformAuthEnabled: get('WEBSITE_AUTH_ENABLED'),
    },
  };
  // Read here so that their problems are reported with the others (the timers resolve them at registration).
  get('TRACK_SCHEDULE');
  get('RESUME_SCHEDULE');
  return { config, problems };
}
