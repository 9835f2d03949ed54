/**
 * Is the device isolated? MDE has no such field: it is derived from the device's machine actions
 * (`GET {api}/api/machineactions?$filter=machineId eq '{id}'`, newest first; Machine.Read.All),
 * https://learn.microsoft.com/en-us/defender-endpoint/api/get-machineactions-collection.
 */
import { callMde, type CallContext } from './callMde';
import { UnisolateError } from './errors';
import { isMachineAction } from './machineActions';
import type { MachineAction } from './outcome';

/** What the action history says. */
export type IsolationState =
  /** The newest effective Isolate/Unisolate is a Succeeded Isolate: release it. */
  | { kind: 'Isolated'; action: MachineAction }
  /** Never isolated (no action: `action` null), or the newest effective one is a Succeeded Unisolate. */
  | { kind: 'NotIsolated'; action: MachineAction | null }
  /** An Isolate is Pending/InProgress: a release now could complete first and be undone by it. */
  | { kind: 'IsolationPending'; action: MachineAction }
  /** An Unisolate is already Pending/InProgress: the device is being released. */
  | { kind: 'ReleasePending'; action: MachineAction }
  /** The history could not tell (page full of other actions): release without the check. */
  | { kind: 'Unknown'; reason: string };

/** Actions read per device: enough to reach the last Isolate/Unisolate behind scans and investigations. */
export const HISTORY_PAGE = 100;

const RUNNING = new Set(['Pending', 'InProgress']);

/**
 * Pure: the isolation state from a page of actions (any order). Only Isolate/Unisolate count; a Failed,
 * TimeOut or Cancelled one changed nothing, so the one before it decides.
 * @param pageFull - the page may not hold the whole history (`$top` reached)
 */
export function deriveIsolationState(actions: readonly unknown[], pageFull: boolean): IsolationState {
  const relevant = actions
    .filter(isMachineAction)
    .filter((a) => a.type === 'Isolate' || a.type === 'Unisolate')
    .sort((a, b) => (b.creationDateTimeUtc ?? '').localeCompare(a.creationDateTimeUtc ?? ''));
  for (const action of relevant) {
    if (RUNNING.has(action.status)) {
      return action.type === 'Isolate'
        ? { kind: 'IsolationPending', action }
        : { kind: 'ReleasePending', action };
    }
    if (action.status === 'Succeeded') {
      return action.type === 'Isolate' ? { kind: 'Isolated', action } : { kind: 'NotIsolated', action };
    }
  }
  return pageFull
    ? { kind: 'Unknown', reason: `no Isolate/Unisolate among the device's ${actions.length} newest actions` }
    : { kind: 'NotIsolated', action: null };
}

/** Result of the check: the state, the MDE attempts spent, and a warning when it could not be made. */
export interface IsolationCheck {
  state: IsolationState;
  attempts: number;
  warning?: string;
}

/**
 * Reads the device's action history and derives its state. When the app may not read it (HTTP 401/403:
 * no Machine.Read.All) the check is skipped with a warning: the release itself only needs Machine.Isolate,
 * and refusing every release of a deployment without the read permission would be worse than releasing
 * unchecked (MDE itself then decides). When no Isolate was ever seen and the device is not known to exist,
 * `GET /api/machines/{id}` tells a never-isolated device (NotIsolated) from an unknown id (the release call
 * then answers NotFound).
 */
export async function checkIsolation(
  ctx: CallContext,
  machineId: string,
  deviceKnown: boolean,
): Promise<IsolationCheck> {
  // machineId is validated 40-hex: safe inside the OData literal.
  const { response, attempts } = await callMde(ctx, 'listMachineActions', 'the isolation-state check', (o) =>
    ctx.defender.listMachineActions(`machineId eq '${machineId}'`, o, HISTORY_PAGE),
  );
  const value = (response.body as { value?: unknown } | null)?.value;
  if (response.status !== 200 || !Array.isArray(value)) {
    const why =
      response.status === 401 || response.status === 403
        ? `the app may not read machine actions (HTTP ${response.status}): grant it Machine.Read.All`
        : `Defender for Endpoint answered HTTP ${response.status} to the action history`;
    return {
      state: { kind: 'Unknown', reason: why },
      attempts,
      warning: `Isolation state not checked: ${why}. The release was sent without the check.`,
    };
  }
  const state = deriveIsolationState(value, value.length >= HISTORY_PAGE);
  if (state.kind !== 'NotIsolated' || state.action !== null || deviceKnown) {
    return state.kind === 'Unknown'
      ? { state, attempts, warning: `Isolation state not known: ${state.reason}. The release was sent.` }
      : { state, attempts };
  }
  // No Isolate/Unisolate visible: an unknown id, a device outside the app's scope, or never isolated.
  const machine = await callMde(ctx, 'getMachine', 'the device check', (o) =>
    ctx.defender.getMachine(machineId, o),
  );
  if (machine.response.status === 404) {
    // Unknown here: the release call itself then answers 404 (NotFound) for a device MDE does not know,
    // which keeps NotFound decided by the action that matters rather than by a read.
    return {
      state: { kind: 'Unknown', reason: 'the device could not be read (HTTP 404)' },
      attempts: machine.attempts,
    };
  }
  if (machine.response.status !== 200) {
    // 403: out of the app's device-group scope (or no read permission): let the release answer for itself.
    return {
      state: { kind: 'Unknown', reason: `the device could not be read (HTTP ${machine.response.status})` },
      attempts: machine.attempts,
      warning: `Isolation state not known: the device could not be read (HTTP ${machine.response.status}). The release was sent.`,
    };
  }
  return { state, attempts: machine.attempts };
}

/** The error for a state that forbids the release (NotIsolated, IsolationPending), or null. */
export function isolationError(
  state: IsolationState,
  machineId: string,
  attempts: number,
): UnisolateError | null {
  if (state.kind === 'NotIsolated') {
    const last = state.action
      ? `its newest Unisolate (action ${state.action.id}${state.action.lastUpdateDateTimeUtc ? `, ${state.action.lastUpdateDateTimeUtc}` : ''}) succeeded`
      : "it has no Isolate action (never isolated, or outside the app's device-group scope)";
    return new UnisolateError(
      'DeviceNotIsolated',
      `Device ${machineId} is not isolated: ${last}. Nothing was sent. Check the device; set CHECK_ISOLATION_STATE=false to skip this check.`,
      { attempts },
    );
  }
  if (state.kind === 'IsolationPending') {
    return new UnisolateError(
      'IsolationPending',
      `Device ${machineId} has an Isolate action still ${state.action.status} (action ${state.action.id}): releasing now could complete before it and leave the device isolated. Wait until it completes (or cancel it in the Defender portal), then release again.`,
      { attempts },
    );
  }
  return null;
}
