/**
 * Reading MachineActions (https://learn.microsoft.com/en-us/defender-endpoint/api/machineaction): the shape
 * check and the look-up of a device's Unisolate actions, shared by the release (ActiveRequestAlreadyExists)
 * and the tracker (AlreadyInProgress recorded without its action).
 */
import { callMde, type CallContext } from './callMde';
import type { MachineAction } from './outcome';

/** Whether an API value looks like a MachineAction (id, type and status strings). */
export function isMachineAction(value: unknown): value is MachineAction {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { id?: unknown }).id === 'string' &&
    typeof (value as { type?: unknown }).type === 'string' &&
    typeof (value as { status?: unknown }).status === 'string'
  );
}

/** The actions, newest first (by `creationDateTimeUtc`). */
export function newestFirst(actions: readonly MachineAction[]): MachineAction[] {
  return [...actions].sort((a, b) =>
    (b.creationDateTimeUtc ?? '').localeCompare(a.creationDateTimeUtc ?? ''),
  );
}

/**
 * `GET {api}/api/machineactions?$filter=machineId eq '{id}' and type eq 'Unisolate'`, newest first; null when
 * MDE did not answer 200 with a list. Throws what `callMde` throws.
 * @param machineId - validated 40-hex id (safe inside the OData string literal)
 */
export async function unisolateActionsOf(
  ctx: CallContext,
  machineId: string,
  what: string,
): Promise<MachineAction[] | null> {
  const filter = `machineId eq '${machineId}' and type eq 'Unisolate'`;
  const { response } = await callMde(ctx, 'listMachineActions', what, (o) =>
    ctx.defender.listMachineActions(filter, o),
  );
  const value = (response.body as { value?: unknown } | null)?.value;
  if (response.status !== 200 || !Array.isArray(value)) return null;
  return newestFirst(value.filter(isMachineAction));
}
