/**
 * Releasing one device: name look-up (when a `deviceName` is given) → isolation-state check → health gate
 * (unless forced) → `POST {api}/api/machines/{id}/unisolate`, and the meaning of MDE's answers. Every Defender
 * call goes through `callMde` (budget, retries); the request-level flow (idempotency, records, parking,
 * outcomes) is the pipeline's.
 */
import type { Budget, MdeApi, Slot } from './budget';
import { callMde, type CallContext } from './callMde';
import { AmbiguousDeviceError, resolveDeviceName, type MachineRecord } from './deviceLookup';
import { toUnisolateError, UnisolateError } from './errors';
import { applyHealthGate, gateEnabled, type ReleasePolicy } from './healthGate';
import { checkIsolation, isolationError } from './isolationState';
import { isMachineAction, unisolateActionsOf } from './machineActions';
import type { DeviceCandidate, MachineAction, OutcomeStatus, Trigger } from './outcome';
import { ERROR_TABLE } from './outcome';
import type { Clock, DefenderApi, Logger, Telemetry } from './ports';
import type { DeviceTarget } from './request';

/** Dependencies of a release, built once per cold start by the composition root. */
export interface ReleaseDeps {
  defender: DefenderApi;
  /** The Defender API call budget (per API; shared by every instance when durable state is configured). */
  budget: Budget;
  clock: Clock;
  random: () => number;
  telemetry: Telemetry;
  log: Logger;
  requestTimeoutMs: number;
  /** Retry budget per trigger (ms). */
  retryBudgetMs: Record<Trigger, number>;
  /** Host name of the Defender API, for dependency telemetry. */
  apiHost: string;
  /** Safety checks before a release; absent: none (the handlers pass them from the settings). */
  safety?: SafetyOptions;
}

/** The checks made before a release (settings `CHECK_ISOLATION_STATE`, `RELEASE_POLICY`). */
export interface SafetyOptions {
  /** Derive the isolation state from the action history; refuse NotIsolated / IsolationPending. */
  checkIsolationState: boolean;
  /** The health gate, or null when off. */
  releasePolicy: ReleasePolicy | null;
}

/** What happened to one device. */
export interface DeviceResult {
  /** The device id (resolved from the name when one was given; null when it could not be). */
  machineId: string | null;
  status: OutcomeStatus;
  machineAction: MachineAction | null;
  attempts: number;
  /** Null on success. */
  error: UnisolateError | null;
  candidates?: DeviceCandidate[];
  warnings: string[];
}

/** Builds the call context of one Defender call, named for dependency telemetry. */
export type CallsFor = (dependencyName: string) => CallContext;

/** Call contexts sharing one deadline (and the reserved slots), each recording its attempts as a dependency. */
export function callContexts(
  deps: Omit<ReleaseDeps, 'log'>,
  deadline: number,
  correlationId: string,
  reserved?: Map<MdeApi, Slot>,
): CallsFor {
  return (name) => ({
    defender: deps.defender,
    budget: deps.budget,
    spender: 'release',
    reserved,
    clock: deps.clock,
    random: deps.random,
    deadline,
    requestTimeoutMs: deps.requestTimeoutMs,
    onAttempt: (a) =>
      deps.telemetry.trackDependency({
        name,
        target: deps.apiHost,
        resultCode: a.status,
        success: a.success,
        durationMs: a.durationMs,
        correlationId,
      }),
  });
}

/**
 * The Defender APIs a release of `target` calls for sure, in order: what it reserves before it starts. (The
 * device read the isolation check makes for a never-isolated device, and the look-up of a pending action, are
 * rare and take their budget when they happen.)
 */
export function apisFor(
  target: { machineId: string | null; deviceName?: string | undefined },
  safety: SafetyOptions | undefined,
  force: boolean,
): MdeApi[] {
  const apis: MdeApi[] = [];
  if (target.machineId === null) apis.push('listMachines');
  if (safety?.checkIsolationState) apis.push('listMachineActions');
  const policy = safety?.releasePolicy;
  if (gateEnabled(policy) && !force) {
    if (policy.blockRiskScore && target.machineId !== null) apis.push('getMachine');
    if (policy.blockAlertSeverity) apis.push('getMachineAlerts');
  }
  apis.push('unisolate');
  return apis;
}

function mdeError(body: unknown): { code?: string; message?: string } {
  if (typeof body !== 'object' || body === null) return {};
  const error = (body as { error?: unknown }).error;
  if (typeof error !== 'object' || error === null) return {};
  const { code, message } = error as { code?: unknown; message?: unknown };
  return {
    code: typeof code === 'string' ? code.slice(0, 100) : undefined,
    message: typeof message === 'string' ? message.slice(0, 300) : undefined,
  };
}

/**
 * Finds the Unisolate action that is already running for a machine (newest Pending/InProgress one), for an
 * `ActiveRequestAlreadyExists` answer. Best effort: any failure gives null, never a failed release.
 */
async function findPendingUnisolate(
  ctx: CallContext,
  machineId: string,
  log: Logger,
): Promise<MachineAction | null> {
  try {
    const actions = await unisolateActionsOf(ctx, machineId, 'the look-up of the pending action');
    return actions?.find((a) => a.status === 'Pending' || a.status === 'InProgress') ?? null;
  } catch (error) {
    log.warn('Could not look up the pending unisolate action; answering AlreadyInProgress without it', {
      machineId,
      errorCode: toUnisolateError(error).code,
    });
    return null;
  }
}

/**
 * `POST {api}/api/machines/{id}/unisolate`, with retries, and what MDE's answer means.
 * See https://learn.microsoft.com/defender-endpoint/api/unisolate-machine
 */
async function unisolate(
  machineId: string,
  comment: string,
  ctx: CallContext,
  log: Logger,
): Promise<{
  status: 'Accepted' | 'AlreadyInProgress';
  machineAction: MachineAction | null;
  attempts: number;
}> {
  const { response, attempts } = await callMde(ctx, 'unisolate', 'the release', (o) =>
    ctx.defender.unisolate(machineId, comment, o),
  );
  const { status, body } = response;
  if (status === 201 || status === 200) {
    return { status: 'Accepted', machineAction: isMachineAction(body) ? body : null, attempts };
  }
  const { code, message } = mdeError(body);
  const detail = code ? ` (${code}${message ? `: ${message}` : ''})` : '';
  if (status === 400 && code === 'ActiveRequestAlreadyExists') {
    const machineAction = await findPendingUnisolate(ctx, machineId, log);
    return { status: 'AlreadyInProgress', machineAction, attempts };
  }
  if (status === 404) {
    throw new UnisolateError(
      'MachineNotFound',
      `Device ${machineId} was not found in Defender for Endpoint. Check the device id (the 40-character id in the device page URL) and the tenant.`,
      { attempts },
    );
  }
  if (status === 401) {
    throw new UnisolateError(
      'MdeUnauthorized',
      `Defender for Endpoint rejected the app's token (HTTP 401) even with freshly read credentials${detail}. Check that the credentials in Key Vault belong to the MDE app registration and that MDE_CLOUD matches the tenant's cloud.`,
      { attempts },
    );
  }
  if (status === 403) {
    throw new UnisolateError(
      'MdeForbidden',
      `Defender for Endpoint refused the release (HTTP 403)${detail}. Grant the MDE app the WindowsDefenderATP application permission Machine.Isolate with admin consent, and make sure the device's device group is in the app's scope.`,
      { attempts },
    );
  }
  throw new UnisolateError(
    'MdeUnexpectedResponse',
    `Defender for Endpoint answered HTTP ${status}${detail} to the release; the device was not released. Check the request and retry.`,
    { attempts },
  );
}

/** Options of {@link releaseTarget}. */
export interface ReleaseOptions {
  comment: string;
  force: boolean;
  /** Check the isolation state even when the setting is off (a redelivered bulk without durable state). */
  forceIsolationCheck?: boolean;
  /** The device id the name resolved to on an earlier run (saves the look-up). */
  resolvedMachineId?: string | null;
  /**
   * Called once the device id is known, before anything is sent: null to go on, or the error that ends this
   * device (another entry of the same bulk request already releases it).
   */
  claimDevice?: (machineId: string) => Promise<UnisolateError | null>;
  /** Called when a name resolved, so a later run need not look it up again. */
  onResolved?: (machineId: string) => void;
}

/**
 * Releases one device safely: name look-up → duplicate check → isolation-state check → health gate (unless
 * forced) → unisolate. Never throws: every failure is in the result.
 */
export async function releaseTarget(
  target: DeviceTarget,
  options: ReleaseOptions,
  calls: CallsFor,
  deps: Pick<ReleaseDeps, 'log' | 'safety'>,
): Promise<DeviceResult> {
  let machineId = target.machineId ?? options.resolvedMachineId ?? null;
  const warnings: string[] = [];
  let attempts = 0;
  try {
    let known: MachineRecord | undefined;
    if (machineId === null) {
      if (target.deviceName === undefined)
        throw new UnisolateError('InvalidRequest', 'Invalid request: no device given.');
      const found = await resolveDeviceName(calls('GET /api/machines'), target.deviceName);
      known = found.machine;
      machineId = known.id.toLowerCase();
      options.onResolved?.(machineId);
    }
    const duplicate = await options.claimDevice?.(machineId);
    if (duplicate) throw duplicate;
    if (deps.safety?.checkIsolationState || options.forceIsolationCheck) {
      const check = await checkIsolation(calls('GET /api/machineactions'), machineId, known !== undefined);
      attempts = check.attempts;
      if (check.warning) {
        warnings.push(check.warning);
        deps.log.warn('Isolation state not checked', { machineId, warning: check.warning });
      }
      const refusal = isolationError(check.state, machineId, check.attempts);
      if (refusal) throw refusal;
      if (check.state.kind === 'ReleasePending') {
        // Already being released: report it, and spend no call on a POST that MDE would refuse.
        return {
          machineId,
          status: 'AlreadyInProgress',
          machineAction: check.state.action,
          attempts: check.attempts,
          error: null,
          warnings,
        };
      }
    }
    const policy = deps.safety?.releasePolicy;
    if (gateEnabled(policy) && !options.force) {
      await applyHealthGate(calls('GET /api/machines/{id}[/alerts]'), machineId, policy, known);
    }
    const released = await unisolate(
      machineId,
      options.comment,
      calls('POST /api/machines/{id}/unisolate'),
      deps.log,
    );
    return { machineId, ...released, error: null, warnings };
  } catch (error) {
    const failure = toUnisolateError(error);
    if (failure.code === 'InternalError') {
      deps.log.error('Unexpected error during a release', {
        machineId,
        error: error instanceof Error ? error.name : 'unknown',
      });
    }
    return {
      machineId,
      status: ERROR_TABLE[failure.code].status,
      machineAction: null,
      attempts: failure.options.attempts ?? attempts,
      error: failure,
      ...(error instanceof AmbiguousDeviceError ? { candidates: error.candidates } : {}),
      warnings,
    };
  }
}
