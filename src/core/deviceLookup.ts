/**
 * Host name → MDE machine id, for requests that carry `deviceName` (tickets and Sentinel entities usually
 * hold a host name, not the 40-character id). Never guesses: one device or nothing.
 *
 * API: `GET {api}/api/machines?$filter=...` (Machine.Read.All),
 * https://learn.microsoft.com/en-us/defender-endpoint/api/get-machines; `computerDnsName` supports `eq` and
 * `startswith` (https://learn.microsoft.com/en-us/defender-endpoint/api/exposed-apis-odata-samples). Those
 * pages document neither `or` nor `$orderby` for machines, so a short name is one `startswith` query (one call
 * against the rate budget), and a full page of answers is never trusted to hold every match.
 */
import { callMde, type CallContext } from './callMde';
import { UnisolateError } from './errors';
import type { DeviceCandidate } from './outcome';
import { MACHINE_ID_PATTERN } from './request';

const MACHINE_ID = new RegExp(MACHINE_ID_PATTERN);

/** The machine fields the look-up and the health gate use (others pass through). */
export interface MachineRecord {
  id: string;
  computerDnsName: string;
  lastSeen?: string | null;
  healthStatus?: string | null;
  riskScore?: string | null;
  [field: string]: unknown;
}

/** `Ambiguous`: the name matches several devices; the caller must choose one by id. */
export class AmbiguousDeviceError extends UnisolateError {
  constructor(
    message: string,
    readonly candidates: DeviceCandidate[],
    attempts: number,
  ) {
    super('AmbiguousDeviceName', message, { attempts });
  }
}

/**
 * Escapes a value for an OData string literal: a quote is doubled (`o'brien` → `'o''brien'`), so caller
 * text can never close the literal and add clauses (OData v4 ABNF, `SQUOTE-in-string`).
 */
export function odataString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** Largest page read for a short-name look-up (`startswith`): enough for any real fleet's name collisions. */
export const SHORT_NAME_PAGE = 1000;
/** Page read for a full-name look-up: duplicates of one DNS name are few (stale and re-onboarded records). */
export const FULL_NAME_PAGE = 100;

/**
 * The query for a name: a full DNS name (contains a dot) is matched with `eq`; a short name (no dot) with
 * `startswith`, and {@link matchDevices} keeps only devices whose whole name or first label equals it.
 */
export function machineQueryFor(name: string): { filter: string; top: number } {
  return name.includes('.')
    ? { filter: `computerDnsName eq ${odataString(name)}`, top: FULL_NAME_PAGE }
    : { filter: `startswith(computerDnsName,${odataString(name)})`, top: SHORT_NAME_PAGE };
}

function isMachineRecord(value: unknown): value is MachineRecord {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { id?: unknown }).id === 'string' &&
    MACHINE_ID.test((value as { id: string }).id) &&
    typeof (value as { computerDnsName?: unknown }).computerDnsName === 'string'
  );
}

/**
 * The devices `name` refers to, case-insensitively: the full DNS name equals it, or (for a short name
 * without a dot) the first label of the DNS name equals it. `ws-01` matches `WS-01` and
 * `ws-01.contoso.local`, never `ws-010` or `ws-01x.contoso.local`.
 */
export function matchDevices(name: string, machines: readonly unknown[]): MachineRecord[] {
  const wanted = name.toLowerCase();
  const short = !wanted.includes('.');
  return machines.filter(isMachineRecord).filter((m) => {
    const dns = m.computerDnsName.toLowerCase();
    return dns === wanted || (short && dns.split('.')[0] === wanted);
  });
}

function candidateOf(m: MachineRecord): DeviceCandidate {
  return {
    id: m.id.toLowerCase(),
    computerDnsName: m.computerDnsName,
    lastSeen: typeof m.lastSeen === 'string' ? m.lastSeen : null,
    healthStatus: typeof m.healthStatus === 'string' ? m.healthStatus : null,
  };
}

/**
 * Resolves a host name to exactly one machine. Throws `MachineNotFound` (no match), `AmbiguousDeviceName`
 * ({@link AmbiguousDeviceError}, with candidates) or `MdeForbidden` (no Machine.Read.All); transient
 * failures as `callMde` throws them.
 */
export async function resolveDeviceName(
  ctx: CallContext,
  name: string,
): Promise<{ machine: MachineRecord; attempts: number }> {
  const { filter, top } = machineQueryFor(name);
  const { response, attempts } = await callMde(ctx, 'listMachines', 'the device look-up', (o) =>
    ctx.defender.listMachines(filter, o, top),
  );
  if (response.status === 401 || response.status === 403) {
    throw new UnisolateError(
      'MdeForbidden',
      `Defender for Endpoint refused the device look-up by name (HTTP ${response.status}). Grant the MDE app the WindowsDefenderATP application permission Machine.Read.All (admin consent), or send machineId instead of deviceName.`,
      { attempts },
    );
  }
  const value = (response.body as { value?: unknown } | null)?.value;
  if (response.status !== 200 || !Array.isArray(value)) {
    throw new UnisolateError(
      'MdeUnexpectedResponse',
      `Defender for Endpoint answered HTTP ${response.status} to the device look-up of ${JSON.stringify(name)}; nothing was released. Send machineId instead, or retry.`,
      { attempts },
    );
  }
  const matches = matchDevices(name, value);
  // A full page may have left matches out (`pc12` with 1,000 `pc12NNN` neighbours before `pc12.fabrikam`):
  // then neither "one device" nor "no device" is known, and nothing is released.
  if (value.length >= top) {
    const short = !name.includes('.');
    throw new AmbiguousDeviceError(
      short
        ? `At least ${top} devices have names starting with ${JSON.stringify(name)}, more than one look-up reads, so it cannot tell which devices the name means; nothing was released. Send the full DNS name (e.g. ${JSON.stringify(`${name}.contoso.local`)}) or the machineId.`
        : `At least ${top} devices are named ${JSON.stringify(name)}; nothing was released. Choose one and send its machineId.`,
      matches.map(candidateOf),
      attempts,
    );
  }
  if (matches.length === 1) return { machine: matches[0]!, attempts };
  if (matches.length === 0) {
    throw new UnisolateError(
      'MachineNotFound',
      `No device named ${JSON.stringify(name)} was found in Defender for Endpoint (matched on the full DNS name, or its first label for a short name, ignoring case). Check the name, or the app's device-group scope, or send machineId.`,
      { attempts },
    );
  }
  throw new AmbiguousDeviceError(
    `${matches.length} devices match the name ${JSON.stringify(name)}; nothing was released. Choose one from candidates and send its machineId.`,
    matches.map(candidateOf),
    attempts,
  );
}
