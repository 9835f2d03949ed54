/**
 * The self-test: proves a deployment before the first incident (`GET /api/selftest`, and once per instance at
 * cold start, in the background). Checks, in order: the settings; Key Vault and the items the app reads from
 * it; a token for the cloud's Defender scope and the application permissions (`roles`) it carries; a cheap
 * Defender API read for this tenant (through `callMde`, so it counts in the rate budget like every call; not
 * at cold start, where the first release proves the same); the state table; the queue names; telemetry. Each
 * check says what it found and, when it failed, what to do.
 * Never a secret, a token or a setting's value: checks report names, versions, roles and error messages (which
 * never hold one); invalid settings are named, their problems (with the values found) are for the log.
 */
import { callMde, type CallContext } from './callMde';
import { toUnisolateError, UnisolateError } from './errors';

/** One check of the report. */
export interface SelfTestCheck {
  name: string;
  ok: boolean;
  detail: string;
  /** What to do when it failed (null when it passed). */
  fix: string | null;
}

/** The report: `ok` when every check passed (HTTP 200, else 503). */
export interface SelfTestReport {
  ok: boolean;
  cloud: string;
  credential: string;
  checks: SelfTestCheck[];
}

/** What the deployment is set up to do, from the settings. */
export interface SelfTestSetup {
  cloud: string;
  credential: string;
  /** Names of the invalid settings, without their values (empty: valid). */
  invalidSettings: string[];
  tokenScope: string;
  /** Which features need which read permission. */
  needs: { isolationCheck: boolean; tracking: boolean; riskGate: boolean; alertGate: boolean };
  queues: { request: string; response: string };
  telemetryConfigured: boolean;
}

/** The outside world, as the self-test probes it (adapters; each bounded by `remainingMs`). */
export interface SelfTestProbes {
  /**
   * The version of each Key Vault item the app uses (names and versions only; an item read within the
   * secret cache's TTL is not read again); empty when it uses none.
   */
  vault(remainingMs: number): Promise<{ name: string; what: string; version: string }[]>;
  /** A token for the Defender API (from the app's credential cache, never reported). */
  token(remainingMs: number): Promise<string>;
  /** Reads the state table; absent when none is configured. */
  stateTable?: (remainingMs: number) => Promise<void>;
}

/** How long each probe may take. */
export const SELF_TEST_PROBE_MS = 10_000;

/** The application permission every release needs. */
const ISOLATE = 'Machine.Isolate';

/**
 * The `roles` claim of an access token (application permissions granted to the app), without verifying it:
 * the token was just issued to this app by Entra ID; this is for the report only. Null when unreadable.
 */
export function rolesOf(token: string): string[] | null {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
      roles?: unknown;
    };
    if (payload.roles === undefined) return [];
    return Array.isArray(payload.roles)
      ? payload.roles.filter((r): r is string => typeof r === 'string')
      : null;
  } catch {
    return null;
  }
}

/** The permissions the setup needs, each with why. */
export function requiredRoles(needs: SelfTestSetup['needs']): { role: string; why: string }[] {
  const roles = [{ role: ISOLATE, why: 'every release' }];
  const reads = [
    needs.isolationCheck && 'the isolation-state check (CHECK_ISOLATION_STATE)',
    needs.tracking && 'release tracking (STATE_TABLE_URL)',
    needs.riskGate && 'the health gate risk rule (RELEASE_POLICY)',
  ].filter((why): why is string => typeof why === 'string');
  if (reads.length > 0) roles.push({ role: 'Machine.Read.All', why: reads.join(', ') });
  if (needs.alertGate)
    roles.push({ role: 'Alert.Read.All', why: 'the health gate alert rule (RELEASE_POLICY)' });
  return roles;
}

const pass = (name: string, detail: string): SelfTestCheck => ({ name, ok: true, detail, fix: null });
const fail = (name: string, detail: string, fix: string): SelfTestCheck => ({ name, ok: false, detail, fix });

/** Fix for a failure, by error code (the message already says what happened). */
function fixFor(error: UnisolateError, fallback: string): string {
  switch (error.code) {
    case 'SecretUnavailable':
      return "Check that the function app's managed identity has Key Vault Secrets User on the vault and that the vault is reachable; then run the self-test again.";
    case 'CredentialsRejected':
      return 'Fix the MDE app credential as the detail says (docs/deploy.md, step 3), then run the self-test again.';
    case 'ConfigurationError':
      return 'Fix what the detail names (app settings or Key Vault content), then run the self-test again.';
    case 'TokenUnavailable':
      return 'Entra ID or the managed identity endpoint did not answer: retry; if it persists, check outbound access to the login host.';
    default:
      return fallback;
  }
}

/**
 * Runs every check; never throws. `calls` is the Defender call context (its deadline is set here); absent:
 * the Defender read is not made (cold start: the first release's calls prove the same, for free).
 */
export async function runSelfTest(
  setup: SelfTestSetup,
  probes: SelfTestProbes | undefined,
  calls: Omit<CallContext, 'deadline'> | undefined,
): Promise<SelfTestReport> {
  const checks: SelfTestCheck[] = [];
  const settingsOk = setup.invalidSettings.length === 0;
  checks.push(
    settingsOk
      ? pass('settings', `valid: MDE_CREDENTIAL=${setup.credential}, MDE_CLOUD=${setup.cloud}`)
      : fail(
          'settings',
          `invalid: ${setup.invalidSettings.join(', ')} (the function log lists each problem with the value found)`,
          'Fix the app settings listed (README, Settings), then restart the app.',
        ),
  );
  if (!settingsOk || !probes) {
    for (const name of ['keyVault', 'token', 'defenderApi', 'stateTable', 'queues', 'telemetry']) {
      checks.push(fail(name, 'not run: the settings are invalid', 'Fix the settings first.'));
    }
    return { ok: false, cloud: setup.cloud, credential: setup.credential, checks };
  }

  try {
    const items = await probes.vault(SELF_TEST_PROBE_MS);
    checks.push(
      pass(
        'keyVault',
        items.length === 0
          ? 'not used: nothing is read from Key Vault in this configuration'
          : `read ${items.map((i) => `${i.name} (${i.what}, version ${i.version})`).join(', ')}`,
      ),
    );
  } catch (error) {
    const failure = toUnisolateError(error);
    checks.push(fail('keyVault', failure.message, fixFor(failure, 'Check the vault and its items.')));
  }

  let roles: string[] | null = null;
  try {
    roles = rolesOf(await probes.token(SELF_TEST_PROBE_MS));
    const required = requiredRoles(setup.needs);
    const missing = roles === null ? required : required.filter((r) => !roles!.includes(r.role));
    const held =
      roles === null ? 'unreadable roles' : `roles ${roles.length > 0 ? roles.join(', ') : '(none)'}`;
    const lookUp = roles?.includes('Machine.Read.All')
      ? ''
      : '; without Machine.Read.All a release by deviceName is refused';
    checks.push(
      missing.length === 0
        ? pass('token', `token for ${setup.tokenScope} with ${held}${lookUp}`)
        : fail(
            'token',
            `token for ${setup.tokenScope} with ${held}; missing ${missing.map((m) => `${m.role} (for ${m.why})`).join(', ')}`,
            `Grant the MDE app registration the WindowsDefenderATP application permission${missing.length > 1 ? 's' : ''} ${missing.map((m) => m.role).join(', ')} and grant admin consent (docs/deploy.md, step 2).`,
          ),
    );
  } catch (error) {
    const failure = toUnisolateError(error);
    checks.push(fail('token', failure.message, fixFor(failure, 'Check the MDE app credential.')));
  }

  checks.push(
    calls
      ? await defenderCheck(calls)
      : pass(
          'defenderApi',
          'not read at cold start: the first release proves it (GET /api/selftest reads it)',
        ),
  );

  if (probes.stateTable) {
    try {
      await probes.stateTable(SELF_TEST_PROBE_MS);
      checks.push(pass('stateTable', 'reachable'));
    } catch (error) {
      checks.push(
        fail(
          'stateTable',
          `not reachable (${error instanceof Error ? error.message.slice(0, 200) : 'unknown error'})`,
          "Check STATE_TABLE_URL and that the app's identity has Storage Table Data Contributor on the table.",
        ),
      );
    }
  } else {
    checks.push(pass('stateTable', 'not configured: no idempotency, tracking or status endpoint'));
  }

  const { request, response } = setup.queues;
  checks.push(
    request && response
      ? pass('queues', `requests from ${request}, outcomes to ${response}`)
      : fail('queues', 'a queue name is empty', 'Set REQUEST_QUEUE_NAME and RESPONSE_QUEUE_NAME.'),
  );
  checks.push(
    setup.telemetryConfigured
      ? pass('telemetry', 'Application Insights configured')
      : fail(
          'telemetry',
          'APPLICATIONINSIGHTS_CONNECTION_STRING is not set: outcomes reach no dashboard or alert',
          'Set APPLICATIONINSIGHTS_CONNECTION_STRING (and APPLICATIONINSIGHTS_AUTHENTICATION_STRING for Entra ID ingestion).',
        ),
  );
  return { ok: checks.every((c) => c.ok), cloud: setup.cloud, credential: setup.credential, checks };
}

/**
 * A cheap Defender read for this tenant: the newest Unisolate action (`$top=1`). 200 or 403 (read permission
 * missing, which the token check reports) prove the API accepts the app's token for this tenant.
 */
async function defenderCheck(calls: Omit<CallContext, 'deadline'>): Promise<SelfTestCheck> {
  const name = 'defenderApi';
  try {
    const ctx: CallContext = { ...calls, deadline: calls.clock.now() + SELF_TEST_PROBE_MS };
    const { response } = await callMde(ctx, 'listMachineActions', 'the self-test read', (o) =>
      ctx.defender.listMachineActions("type eq 'Unisolate'", o, 1),
    );
    if (response.status === 200) return pass(name, 'answered 200 to GET /api/machineactions?$top=1');
    if (response.status === 403) {
      return pass(
        name,
        'answered 403 to GET /api/machineactions: reachable and the token is accepted, but the app may not read',
      );
    }
    if (response.status === 401) {
      return fail(
        name,
        'rejected the token (HTTP 401)',
        'Check that the MDE app belongs to the Defender tenant and that MDE_CLOUD (or MDE_API_BASE_URL / MDE_TOKEN_SCOPE) matches its cloud.',
      );
    }
    return fail(name, `answered HTTP ${response.status}`, 'Check MDE_API_BASE_URL and MDE_CLOUD.');
  } catch (error) {
    const failure = toUnisolateError(error);
    return fail(
      name,
      failure.message,
      fixFor(failure, 'Check outbound access to the Defender API host; retry later.'),
    );
  }
}
