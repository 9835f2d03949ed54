/**
 * The composition root: builds the real clients once per cold start (lazily, on the first invocation) and
 * hands them to the handlers. Tests reset it to point the real clients at local simulators.
 */
import type { TokenCredential } from '@azure/identity';
import { SecretClient } from '@azure/keyvault-secrets';
import { callerCheckProblems, ConfigError, parseSettings, type Config } from './config';
import { misconfigured } from './core/errors';
import type { Clock, DefenderApi, Logger, Telemetry } from './core/ports';
import { LocalBudget, MDE_LIMITS, type BudgetLimits } from './core/budget';
import { SharedBudget } from './core/sharedBudget';
import type { ReleaseDeps } from './core/release';
import type { StateDeps } from './core/pipeline';
import { createReleaseStore } from './adapters/releaseStore';
import { withCircuitBreaker } from './adapters/circuitBreaker';
import { DefenderClient } from './adapters/defenderClient';
import { createLogger } from './adapters/logger';
import { isLoopbackUrl } from './adapters/loopback';
import { MdeCredentials } from './adapters/mdeCredentials';
import { appIdentity, identitySpec } from './adapters/identity';
import { createTelemetry, noTelemetry } from './adapters/telemetry';
import { WebhookSecret } from './adapters/webhookSecret';
import type { CallerPolicy } from './core/callerPrincipal';
import { SignatureVerifier } from './core/signature';

/** Everything the handlers need, except the per-invocation logger. */
export interface AppDependencies {
  release: Omit<ReleaseDeps, 'log'>;
  /** Parsed settings, or the configuration problem (every request then fails with ConfigurationError). */
  config: Config | ConfigError;
  maxDeliveryCount: number;
  telemetry: Telemetry;
  /** Present when configured: counters for diagnostics and benchmarks. */
  credentials?: MdeCredentials;
  defenderClient?: DefenderClient;
  /** HTTP caller checks beyond the function key; absent: none (the function key only). */
  callers?: CallerChecks;
  /** Durable state (idempotency, tracking, status endpoint); absent: not configured, none of those. */
  state?: StateDeps;
}

/** HTTP caller checks (docs/security.md): signed webhooks and Entra ID app roles. */
export interface CallerChecks {
  /**
   * Present when the caller-check settings themselves are invalid: the problems (with values, for the log).
   * The checks cannot be trusted then, so every HTTP release is refused (fail closed).
   */
  misconfigured?: readonly string[];
  policy: CallerPolicy;
  /** Present when WEBHOOK_SIGNING_SECRET_NAME is set: every request must then be signed. */
  webhookSecret?: Pick<WebhookSecret, 'keys'>;
  /** Verifier with this instance's replay cache. */
  signatures: SignatureVerifier;
}

const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

const consoleLogger: Logger = createLogger(console);

/** Longest one state-table operation may take before the store counts as unavailable. */
const STORE_OPERATION_TIMEOUT_MS = 2_000;

export { appIdentity } from './adapters/identity';

function unconfiguredDefender(error: ConfigError): DefenderApi {
  // Reached only by callers that passed the caller checks: the names of the invalid settings, no values.
  const fail = async (): Promise<never> => {
    throw misconfigured(error.settings);
  };
  return {
    unisolate: fail,
    listMachineActions: fail,
    listMachines: fail,
    getMachine: fail,
    getMachineAlerts: fail,
    getMachineAction: fail,
    refreshCredentials: async () => undefined,
  };
}

/** Builds the dependencies from settings. Exported for tests and the sandbox. */
export function buildDependencies(
  env: NodeJS.ProcessEnv = process.env,
  clock: Clock = systemClock,
): AppDependencies {
  const parsed = parseSettings(env);
  const { config } = parsed;
  let identity: TokenCredential | undefined;
  const getIdentity = (): TokenCredential => (identity ??= appIdentity(config.managedIdentityClientId, env));
  let secretClient: SecretClient | undefined;
  const getSecretClient = (): SecretClient =>
    (secretClient ??= new SecretClient(config.keyVaultUrl, getIdentity(), {
      // A loopback vault (local simulator) cannot match Key Vault's challenge resource; Azure vaults always do.
      disableChallengeResourceVerification: isLoopbackUrl(config.keyVaultUrl),
    }));

  if (parsed.problems.length > 0) {
    const error = new ConfigError(parsed.problems);
    consoleLogger.error('Invalid app settings; every release will fail until they are fixed', {
      problems: error.problems,
    });
    // The caller checks are judged on their own settings: an unrelated mistake never switches them off.
    const callerProblems = callerCheckProblems(parsed);
    const callers: CallerChecks =
      callerProblems.length === 0
        ? callerChecksOf(config, getSecretClient, clock)
        : {
            misconfigured: callerProblems,
            policy: config.callers,
            signatures: new SignatureVerifier({ now: clock.now }),
          };
    return {
      release: {
        defender: unconfiguredDefender(error),
        budget: new LocalBudget({ perApi: MDE_LIMITS, tracker: config.trackerRateLimit }, clock.now),
        clock,
        random: Math.random,
        telemetry: noTelemetry,
        requestTimeoutMs: 30_000,
        retryBudgetMs: { http: 20_000, serviceBus: 60_000 },
        apiHost: 'unconfigured',
      },
      config: error,
      maxDeliveryCount: config.maxDeliveryCount,
      telemetry: noTelemetry,
      callers,
    };
  }

  const credentials = new MdeCredentials({
    secretClient: getSecretClient(),
    secretNames: config.secretNames,
    authorityHost: config.mde.authorityHost,
    scope: config.mde.tokenScope,
    ttlMs: config.secretCacheTtlMs,
    now: clock.now,
    log: consoleLogger,
  });
  const defenderClient = new DefenderClient(config.mde.apiBaseUrl, credentials);
  const telemetry = createTelemetry({
    connectionString: config.appInsightsConnectionString,
    // AAD ingestion as the app's identity (or the one APPLICATIONINSIGHTS_AUTHENTICATION_STRING names),
    // described as data: the credential is built where the SDK runs, in the telemetry worker thread.
    aad: config.appInsightsUseAad
      ? identitySpec(config.appInsightsAadClientId ?? config.managedIdentityClientId, env)
      : undefined,
    log: consoleLogger,
  });
  const limits: BudgetLimits = {
    perApi: { perMinute: config.rateLimit.perMinute, perHour: config.rateLimit.perHour },
    tracker: config.trackerRateLimit,
  };
  const state = buildState(config, getIdentity, clock);
  return {
    release: {
      defender: defenderClient,
      budget: state
        ? new SharedBudget({ store: state.store, limits, now: clock.now, log: consoleLogger })
        : new LocalBudget(limits, clock.now),
      clock,
      random: Math.random,
      telemetry,
      requestTimeoutMs: config.requestTimeoutMs,
      retryBudgetMs: config.retryBudgetMs,
      apiHost: new URL(config.mde.apiBaseUrl).host,
    },
    config,
    maxDeliveryCount: config.maxDeliveryCount,
    telemetry,
    credentials,
    defenderClient,
    state,
    callers: callerChecksOf(config, getSecretClient, clock),
  };
}

/** The caller checks from valid caller-check settings (the signing key is read from Key Vault, cached). */
function callerChecksOf(config: Config, secretClient: () => SecretClient, clock: Clock): CallerChecks {
  const name = config.callers.webhookSigningSecretName;
  return {
    policy: config.callers,
    webhookSecret: name
      ? new WebhookSecret({
          secretClient: secretClient(),
          name,
          ttlMs: config.secretCacheTtlMs,
          now: clock.now,
          log: consoleLogger,
        })
      : undefined,
    signatures: new SignatureVerifier({ now: clock.now }),
  };
}

/** The release store, built once per instance, when `STATE_TABLE_URL` / `STATE_TABLE_CONNECTION_STRING` is set. */
function buildState(config: Config, identity: () => TokenCredential, clock: Clock): StateDeps | undefined {
  const table = config.stateTable;
  if (!table) return undefined;
  // A table operation takes milliseconds; one that hangs is cut short and opens the breaker.
  const options = { operationTimeoutMs: STORE_OPERATION_TIMEOUT_MS };
  const store =
    table.connectionString !== undefined
      ? createReleaseStore({ connectionString: table.connectionString, tableName: table.tableName }, options)
      : createReleaseStore({ tableUrl: table.tableUrl, credential: identity }, options);
  return {
    store: withCircuitBreaker(store, { now: clock.now, log: consoleLogger }),
    idempotencyWindowMs: config.idempotencyWindowMs,
    trackMaxMs: config.trackMaxMs,
    queueMaxMs: config.queueMaxMs,
    maxFailures: config.maxDeliveryCount,
  };
}

let current: AppDependencies | undefined;

/** The dependencies of this instance, built on first use. */
export function getDependencies(): AppDependencies {
  current ??= buildDependencies();
  return current;
}

/** Replaces (or, with no argument, forgets) the dependencies: for tests, benchmarks and the sandbox. */
export function setDependencies(deps?: AppDependencies): void {
  current = deps;
}
