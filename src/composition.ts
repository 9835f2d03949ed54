/**
 * The composition root: builds the real clients once per cold start (lazily, on the first invocation) and
 * hands them to the handlers. Tests reset it to point the real clients at local simulators.
 */
import type { TokenCredential } from '@azure/identity';
import { SecretClient } from '@azure/keyvault-secrets';
import { callerCheckProblems, ConfigError, parseSettings, safetyOptions, type Config } from './config';
import { misconfigured } from './core/errors';
import type { Clock, DefenderApi, Logger, Telemetry } from './core/ports';
import { LocalBudget, type BudgetLimits, type LeaseTiming } from './core/budget';
import { SharedBudget } from './core/sharedBudget';
import type { ReleaseDeps } from './core/release';
import type { PipelineDeps, StateDeps } from './core/pipeline';
import type { CallerChecks } from './core/callerChecks';
import { createReleaseStore } from './adapters/releaseStore';
import { withCircuitBreaker } from './adapters/circuitBreaker';
import { DefenderClient } from './adapters/defenderClient';
import { createLogger } from './adapters/logger';
import { isLoopbackUrl } from './adapters/loopback';
import { MdeCredentials } from './adapters/mdeCredentials';
import { appIdentity, identitySpec, prefetchVaultToken, vaultTokenScope } from './adapters/identity';
import { createTelemetry, noTelemetry } from './adapters/telemetry';
import { WebhookSecret, webhookSecretItem } from './adapters/webhookSecret';
import { VaultReader } from './adapters/vaultReader';
import { SignatureVerifier } from './core/signature';
import { runSelfTest, type SelfTestProbes, type SelfTestReport, type SelfTestSetup } from './core/selfTest';
import { SDK_RETRY_OPTIONS } from './adapters/sharedFlight';

/** Everything the handlers need, except the per-invocation logger. */
export type { CallerChecks };

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
  /** The self-test's probes of Key Vault, the token and the state table (absent: invalid settings). */
  selfTestProbes?: SelfTestProbes;
}

const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

const consoleLogger: Logger = createLogger(console);

/** Longest one state-table operation may take before the store counts as unavailable. */
const STORE_OPERATION_TIMEOUT_MS = 2_000;

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
    ensureCredentials: fail,
    refreshCredentials: async () => undefined,
  };
}

/** Knobs for tests and benchmarks that run on a scaled clock (never settings: production uses the defaults). */
export interface Tuning {
  /** How long a leased call may wait and the latency margin (see core/budget.ts), in the clock's time. */
  leaseTiming?: LeaseTiming;
}

/** What the pipeline needs for one invocation: this instance's dependencies and the invocation's logger. */
export function pipelineDeps(deps: AppDependencies, log: Logger): PipelineDeps {
  return {
    ...deps.release,
    safety: safetyOptions(deps.config),
    log,
    state: deps.state,
    callers: deps.callers,
    maxDeliveryCount: deps.maxDeliveryCount,
  };
}

/** Builds the dependencies from settings. Exported for tests, the sandbox and the benchmarks. */
export function buildDependencies(
  env: NodeJS.ProcessEnv = process.env,
  clock: Clock = systemClock,
  tuning: Tuning = {},
): AppDependencies {
  const parsed = parseSettings(env);
  const { config } = parsed;
  let identity: TokenCredential | undefined;
  const getIdentity = (): TokenCredential => (identity ??= appIdentity(config.managedIdentityClientId, env));
  // No vault at all in the federated mode with both ids in the settings (and no signed webhooks).
  let secretClient: SecretClient | undefined;
  const getSecretClient = (): SecretClient | undefined => {
    const vault = config.keyVaultUrl;
    if (vault === undefined) return undefined;
    const loopback = isLoopbackUrl(vault);
    return (secretClient ??= new SecretClient(vault, getIdentity(), {
      // A loopback vault (local simulator) cannot match Key Vault's challenge resource; Azure vaults do.
      disableChallengeResourceVerification: loopback,
      // The identity's token is fetched while the vault answers the first request's challenge.
      additionalPolicies: [
        { policy: prefetchVaultToken(getIdentity(), vaultTokenScope(vault, loopback)), position: 'perCall' },
      ],
      // Each read is bounded by the request's budget (abort signal), and the core retries whole attempts.
      retryOptions: SDK_RETRY_OPTIONS,
    }));
  };

  if (parsed.problems.length > 0) {
    const error = new ConfigError(parsed.problems, config);
    consoleLogger.error('Invalid app settings; every release will fail until they are fixed', {
      problems: error.problems,
    });
    // The caller checks are judged on their own settings: an unrelated mistake never switches them off.
    const callerProblems = callerCheckProblems(parsed);
    const callers: CallerChecks =
      callerProblems.length === 0
        ? callerChecksOf(
            config,
            () =>
              new VaultReader({ client: getSecretClient(), ttlMs: config.secretCacheTtlMs, now: clock.now }),
            clock,
          )
        : {
            misconfigured: callerProblems,
            policy: config.callers,
            signatures: new SignatureVerifier({ now: clock.now }),
          };
    return {
      release: {
        defender: unconfiguredDefender(error),
        budget: new LocalBudget(budgetLimits(config), clock.now),
        clock,
        random: Math.random,
        telemetry: noTelemetry,
        requestTimeoutMs: config.requestTimeoutMs,
        retryBudgetMs: config.retryBudgetMs,
        apiHost: 'unconfigured',
      },
      config: error,
      maxDeliveryCount: config.maxDeliveryCount,
      telemetry: noTelemetry,
      callers,
    };
  }

  const { credential } = config;
  // One reader for everything read from Key Vault: the MDE app credentials and the webhook signing key.
  const vault = new VaultReader({
    client: getSecretClient(),
    ttlMs: config.secretCacheTtlMs,
    now: clock.now,
  });
  const credentials = new MdeCredentials({
    mode: credential.mode,
    vault,
    secretNames: config.secretNames,
    certificateName: credential.certificateName,
    ids: { tenantId: credential.tenantId, clientId: credential.clientId },
    sendCertificateChain: credential.sendCertificateChain,
    // The user-assigned identity (parseSettings insists on AZURE_CLIENT_ID in this mode) is the federated
    // credential of the MDE app: its token for the exchange audience is the client assertion.
    assertionIdentity: credential.mode === 'federated' ? getIdentity() : undefined,
    tokenExchangeAudience: credential.tokenExchangeAudience,
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
    // built when the SDK loads.
    aad: config.appInsightsUseAad
      ? identitySpec(config.appInsightsAadClientId ?? config.managedIdentityClientId, env)
      : undefined,
    log: consoleLogger,
  });
  const limits = budgetLimits(config);
  const state = buildState(config, getIdentity, clock);
  const webhookSecretName = config.callers.webhookSigningSecretName;
  const selfTestProbes: SelfTestProbes = {
    vault: (remainingMs) =>
      vault.inspect(
        [...credentials.vaultItems(), ...(webhookSecretName ? [webhookSecretItem(webhookSecretName)] : [])],
        remainingMs,
      ),
    token: (remainingMs) => credentials.getToken({ remainingMs }),
    // Bounded by the store's own operation timeout (STORE_OPERATION_TIMEOUT_MS).
    stateTable: state
      ? async () => {
          await state.store.readTrackerPoll();
        }
      : undefined,
  };
  return {
    selfTestProbes,
    release: {
      defender: defenderClient,
      budget: state
        ? new SharedBudget({
            store: state.store,
            limits,
            now: clock.now,
            log: consoleLogger,
            ...(tuning.leaseTiming ? { timing: tuning.leaseTiming } : {}),
          })
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
    callers: callerChecksOf(config, () => vault, clock),
  };
}

/**
 * The caller checks from valid caller-check settings (the signing key is read from Key Vault, cached); `vault`
 * is asked for only when webhooks are signed.
 */
function callerChecksOf(config: Config, vault: () => VaultReader, clock: Clock): CallerChecks {
  const name = config.callers.webhookSigningSecretName;
  return {
    policy: config.callers,
    webhookSecret:
      name !== undefined
        ? new WebhookSecret({
            vault: vault(),
            name,
            ttlMs: config.secretCacheTtlMs,
            now: clock.now,
            log: consoleLogger,
          })
        : undefined,
    signatures: new SignatureVerifier({ now: clock.now }),
  };
}

/** The Defender API call budget the settings ask for: per API, and the tracker's share. */
function budgetLimits(config: Config): BudgetLimits {
  return { perApi: config.rateLimit, tracker: config.trackerRateLimit };
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

/** What the settings ask of the deployment, for the self-test (from a ConfigError: the invalid settings). */
function selfTestSetup(config: Config | ConfigError): SelfTestSetup {
  if (config instanceof ConfigError) {
    return {
      cloud: config.parsed.cloud,
      credential: config.parsed.credential.mode,
      invalidSettings: [...config.settings],
      tokenScope: '',
      needs: { isolationCheck: false, tracking: false, riskGate: false, alertGate: false },
      queues: { request: '', response: '' },
      telemetryConfigured: false,
    };
  }
  return {
    cloud: config.cloud,
    credential: config.credential.mode,
    invalidSettings: [],
    tokenScope: config.mde.tokenScope,
    needs: {
      isolationCheck: config.checkIsolationState,
      tracking: config.stateTable !== undefined,
      riskGate: config.releasePolicy?.blockRiskScore !== undefined,
      alertGate: config.releasePolicy?.blockAlertSeverity !== undefined,
    },
    queues: { request: config.requestQueueName, response: config.responseQueueName },
    telemetryConfigured: config.appInsightsConnectionString !== undefined,
  };
}

/**
 * Runs the self-test against this instance's dependencies (`GET /api/selftest`, and at cold start). Key
 * Vault items read within the secret cache's TTL are reported as read, not read again.
 * @param readDefender - whether to make the Defender read (not at cold start: the first release proves it)
 */
function selfTestOf(
  deps: AppDependencies,
  { readDefender }: { readDefender: boolean },
): Promise<SelfTestReport> {
  const { defender, budget, clock, random, requestTimeoutMs } = deps.release;
  return runSelfTest(
    selfTestSetup(deps.config),
    deps.selfTestProbes,
    readDefender
      ? {
          defender,
          // Counted in the budget of the API it reads like every call, in the tracker's small share of it (a
          // read of machine actions like the tracker's polls): never in what releases need.
          budget,
          spender: 'tracker',
          clock,
          random,
          requestTimeoutMs,
        }
      : undefined,
  );
}

/** How long a report of `GET /api/selftest` is reused on an instance: a repeated GET reads nothing again. */
export const SELF_TEST_REUSE_MS = 30_000;

/** The latest `GET /api/selftest` run of each instance's dependencies (shared by concurrent GETs). */
const requestedRuns = new WeakMap<AppDependencies, { startedAt: number; report: Promise<SelfTestReport> }>();

/**
 * The self-test for `GET /api/selftest`, with the Defender read: the report of a run started less than
 * {@link SELF_TEST_REUSE_MS} ago (`ageMs`: how long ago), else a new run. The report names invalid settings
 * only; their problems, with the values found, go to `log`.
 */
export async function requestedSelfTest(
  deps: AppDependencies,
  log: Logger,
): Promise<{ report: SelfTestReport; ageMs: number }> {
  if (deps.config instanceof ConfigError) {
    log.error('Self-test: invalid app settings', { problems: deps.config.problems });
  }
  const now = deps.release.clock.now();
  const last = requestedRuns.get(deps);
  if (last && now - last.startedAt < SELF_TEST_REUSE_MS) {
    return { report: await last.report, ageMs: now - last.startedAt };
  }
  const report = selfTestOf(deps, { readDefender: true });
  requestedRuns.set(deps, { startedAt: now, report });
  return { report: await report, ageMs: 0 };
}

/**
 * The self-test once per instance, in the background: a `UnisolateSelfTest` event, and a warning naming each
 * failed check. It never delays or fails a release (it starts after the first one had its turn) and never
 * throws. It costs next to nothing: the Key Vault items the first invocation read are reported from that
 * read, and there is no Defender read (the first release's calls prove the API, the token check the roles).
 */
export async function startupSelfTest(deps: AppDependencies, log: Logger = consoleLogger): Promise<void> {
  const started = deps.release.clock.now();
  try {
    const report = await selfTestOf(deps, { readDefender: false });
    deps.telemetry.trackSelfTest(report, deps.release.clock.now() - started);
    if (!report.ok) {
      const failed = report.checks.filter((c) => !c.ok);
      log.warn(`Self-test failed: ${failed.map((c) => c.name).join(', ')}`, {
        failed: failed.map((c) => ({ name: c.name, detail: c.detail, fix: c.fix })),
      });
    }
  } catch (error) {
    log.warn('Self-test could not run', { error: error instanceof Error ? error.name : 'unknown' });
  }
}

/** Delay before the cold-start self-test, so that the invocation that started the instance goes first. */
const STARTUP_SELF_TEST_DELAY_MS = 1000;

let current: AppDependencies | undefined;

/** The dependencies of this instance, built on first use (which also schedules the cold-start self-test). */
export function getDependencies(): AppDependencies {
  if (!current) {
    const built = (current = buildDependencies());
    setTimeout(() => void startupSelfTest(built), STARTUP_SELF_TEST_DELAY_MS).unref();
  }
  return current;
}

/** Replaces (or, with no argument, forgets) the dependencies: for tests, benchmarks and the sandbox. */
export function setDependencies(deps?: AppDependencies): void {
  current = deps;
}
