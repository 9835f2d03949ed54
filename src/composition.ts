/**
 * The composition root: builds the real clients once per cold start (lazily, on the first invocation) and
 * hands them to the handlers. Tests reset it to point the real clients at local simulators.
 */
import {
  AzureCliCredential,
  AzureDeveloperCliCredential,
  ChainedTokenCredential,
  ManagedIdentityCredential,
  type TokenCredential,
} from '@azure/identity';
import { SecretClient } from '@azure/keyvault-secrets';
import { ConfigError, loadConfig, type Config } from './config';
import { UnisolateError } from './core/errors';
import type { Clock, DefenderApi, Logger, Telemetry } from './core/ports';
import { RateLimiter } from './core/rateLimiter';
import type { ReleaseDeps } from './core/releaseDevice';
import type { StateDeps } from './core/idempotency';
import { createReleaseStore } from './adapters/releaseStore';
import { DefenderClient } from './adapters/defenderClient';
import { createLogger } from './adapters/logger';
import { isLoopbackUrl } from './adapters/loopback';
import { MdeCredentials } from './adapters/mdeCredentials';
import { createTelemetry, noTelemetry } from './adapters/telemetry';
import { WebhookSecret } from './adapters/webhookSecret';
import type { CallerPolicy } from './core/callerPrincipal';
import { SignatureVerifier } from './core/signature';
import { runSelfTest, type SelfTestProbes, type SelfTestReport, type SelfTestSetup } from './core/selfTest';
import { deadlineIn, within } from './adapters/sharedFlight';

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
  /** The self-test's probes of Key Vault, the token and the state table (absent: invalid settings). */
  selfTestProbes?: SelfTestProbes;
}

/** HTTP caller checks (docs/security.md): signed webhooks and Entra ID app roles. */
export interface CallerChecks {
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

/**
 * The identity the app reads Key Vault (and sends telemetry) with: the managed identity in Azure (the
 * platform sets IDENTITY_ENDPOINT), the developer's Azure CLI / azd login elsewhere.
 */
export function appIdentity(clientId: string | undefined, env = process.env): TokenCredential {
  if (env.IDENTITY_ENDPOINT || env.MSI_ENDPOINT) {
    return clientId ? new ManagedIdentityCredential({ clientId }) : new ManagedIdentityCredential();
  }
  return new ChainedTokenCredential(new AzureCliCredential(), new AzureDeveloperCliCredential());
}

function unconfiguredDefender(error: ConfigError): DefenderApi {
  const fail = async (): Promise<never> => {
    throw new UnisolateError(
      'ConfigurationError',
      `The function app is misconfigured: ${error.problems.join('; ')}. Fix the app settings.`,
    );
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
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    consoleLogger.error('Invalid app settings; every release will fail until they are fixed', {
      problems: error.problems,
    });
    const limiter = RateLimiter.forMde(100, 1500, clock.now);
    return {
      release: {
        defender: unconfiguredDefender(error),
        limiter,
        clock,
        random: Math.random,
        telemetry: noTelemetry,
        requestTimeoutMs: 30_000,
        retryBudgetMs: { http: 20_000, serviceBus: 60_000 },
        apiHost: 'unconfigured',
      },
      config: error,
      maxDeliveryCount: Number(env.MAX_DELIVERY_COUNT) || 10,
      telemetry: noTelemetry,
    };
  }

  let identity: TokenCredential | undefined;
  const getIdentity = (): TokenCredential => (identity ??= appIdentity(config.managedIdentityClientId, env));
  // No vault at all in the federated mode with both ids in the settings (and no signed webhooks).
  const secretClient =
    config.keyVaultUrl === undefined
      ? undefined
      : new SecretClient(config.keyVaultUrl, getIdentity(), {
          // A loopback vault (local simulator) cannot match Key Vault's challenge resource; Azure vaults do.
          disableChallengeResourceVerification: isLoopbackUrl(config.keyVaultUrl),
          // Few, quick SDK retries: each read is bounded by the request's budget (abort signal), and the
          // core retries whole attempts within it.
          retryOptions: { maxRetries: 2, retryDelayInMs: 500, maxRetryDelayInMs: 4000 },
        });
  const { credential } = config;
  const credentials = new MdeCredentials({
    mode: credential.mode,
    secretClient,
    secretNames: config.secretNames,
    certificateName: credential.certificateName,
    ids: { tenantId: credential.tenantId, clientId: credential.clientId },
    sendCertificateChain: credential.sendCertificateChain,
    // The user-assigned identity (loadConfig insists on AZURE_CLIENT_ID in this mode) is the federated
    // credential of the MDE app: its token for the exchange audience is the client assertion.
    assertion:
      credential.mode === 'federated'
        ? { identity: getIdentity(), audience: credential.tokenExchangeAudience }
        : undefined,
    authorityHost: config.mde.authorityHost,
    scope: config.mde.tokenScope,
    ttlMs: config.secretCacheTtlMs,
    now: clock.now,
    log: consoleLogger,
  });
  const defenderClient = new DefenderClient(config.mde.apiBaseUrl, credentials);
  const telemetry = createTelemetry({
    connectionString: config.appInsightsConnectionString,
    credential: config.appInsightsUseAad
      ? () =>
          config.appInsightsAadClientId ? appIdentity(config.appInsightsAadClientId, env) : getIdentity()
      : undefined,
    // The same identity, described for the telemetry worker thread (the SDK runs there: npm run bench).
    aadIdentity: config.appInsightsUseAad
      ? {
          managed: Boolean(env.IDENTITY_ENDPOINT || env.MSI_ENDPOINT),
          clientId: config.appInsightsAadClientId ?? config.managedIdentityClientId,
        }
      : undefined,
    log: consoleLogger,
  });
  const state = buildState(config, getIdentity);
  const webhookSecretName = config.callers.webhookSigningSecretName;
  const selfTestProbes: SelfTestProbes = {
    vault: (remainingMs) =>
      credentials.inspectVault(
        webhookSecretName ? [{ name: webhookSecretName, what: 'webhook signing key' }] : [],
        remainingMs,
      ),
    token: (remainingMs) => credentials.getToken({ remainingMs }),
    stateTable: state
      ? async (remainingMs) => {
          const deadline = deadlineIn(remainingMs);
          await within(
            state.store.readRelease('selftest-probe'),
            deadline,
            () => new Error('no answer in time'),
          );
        }
      : undefined,
  };
  return {
    selfTestProbes,
    release: {
      defender: defenderClient,
      limiter: RateLimiter.forMde(config.rateLimit.perMinute, config.rateLimit.perHour, clock.now),
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
    callers: {
      policy: config.callers,
      webhookSecret:
        config.callers.webhookSigningSecretName && secretClient
          ? new WebhookSecret({
              secretClient,
              name: config.callers.webhookSigningSecretName,
              ttlMs: config.secretCacheTtlMs,
              now: clock.now,
              log: consoleLogger,
            })
          : undefined,
      signatures: new SignatureVerifier({ now: clock.now }),
    },
  };
}

/** The release store, built once per instance, when `STATE_TABLE_URL` / `STATE_TABLE_CONNECTION_STRING` is set. */
function buildState(config: Config, identity: () => TokenCredential): StateDeps | undefined {
  const table = config.stateTable;
  if (!table) return undefined;
  const store =
    table.connectionString !== undefined
      ? createReleaseStore({ connectionString: table.connectionString, tableName: table.tableName })
      : createReleaseStore({ tableUrl: table.tableUrl, credential: identity });
  return { store, idempotencyWindowMs: config.idempotencyWindowMs, trackMaxMs: config.trackMaxMs };
}

/** What the settings ask of the deployment, for the self-test (from a ConfigError: its problems). */
function selfTestSetup(config: Config | ConfigError): SelfTestSetup {
  if (config instanceof ConfigError) {
    return {
      cloud: process.env.MDE_CLOUD || 'Commercial',
      credential: process.env.MDE_CREDENTIAL || 'secret',
      problems: [...config.problems],
      tokenScope: '',
      needs: { isolationCheck: false, tracking: false, riskGate: false, alertGate: false },
      queues: { request: '', response: '' },
      telemetryConfigured: false,
    };
  }
  return {
    cloud: config.cloud,
    credential: config.credential.mode,
    problems: [],
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

/** Runs the self-test against this instance's dependencies (`GET /api/selftest`, and at cold start). */
export function selfTestOf(deps: AppDependencies): Promise<SelfTestReport> {
  const { defender, limiter, clock, random, requestTimeoutMs } = deps.release;
  return runSelfTest(selfTestSetup(deps.config), deps.selfTestProbes, {
    defender,
    limiter,
    clock,
    random,
    requestTimeoutMs,
  });
}

/**
 * The self-test once per instance, in the background: a `UnisolateSelfTest` event, and a warning naming each
 * failed check. It never delays or fails a release (it starts after the first one had its turn) and never
 * throws.
 */
export async function startupSelfTest(deps: AppDependencies, log: Logger = consoleLogger): Promise<void> {
  const started = deps.release.clock.now();
  try {
    const report = await selfTestOf(deps);
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
