/**
 * The optional health gate (`RELEASE_POLICY`): refuse to release a device whose risk score is at or above a
 * level, or that has unresolved alerts of a severity or higher. Off by default; `"force": true` bypasses it.
 *
 * APIs: `GET {api}/api/machines/{id}` (`riskScore`; Machine.Read.All,
 * https://learn.microsoft.com/en-us/defender-endpoint/api/get-machine-by-id) and
 * `GET {api}/api/machines/{id}/alerts` (Alert.Read.All,
 * https://learn.microsoft.com/en-us/defender-endpoint/api/get-machine-related-alerts).
 */
import { callMde, type CallContext } from './callMde';
import type { MachineRecord } from './deviceLookup';
import { UnisolateError } from './errors';

/** Machine `riskScore` values, lowest first (https://learn.microsoft.com/en-us/defender-endpoint/api/machine). */
export const RISK_LEVELS = ['None', 'Informational', 'Low', 'Medium', 'High'] as const;
/** Alert `severity` values, lowest first (https://learn.microsoft.com/en-us/defender-endpoint/api/alerts). */
export const SEVERITIES = ['Informational', 'Low', 'Medium', 'High'] as const;

export type RiskLevel = (typeof RISK_LEVELS)[number];
export type Severity = (typeof SEVERITIES)[number];

/** The gate: each rule is optional; a policy with no rule is "off". */
export interface ReleasePolicy {
  /** Block when the device's riskScore is this level or higher. */
  blockRiskScore?: RiskLevel;
  /** Block when the device has an unresolved alert (status other than Resolved) of this severity or higher. */
  blockAlertSeverity?: Severity;
}

function pick<T extends string>(values: readonly T[], raw: string): T | undefined {
  return values.find((v) => v.toLowerCase() === raw.toLowerCase());
}

/**
 * Parses `RELEASE_POLICY`: `blockRiskScore=High;blockAlertSeverity=Medium` (keys and values
 * case-insensitive, either key optional). Empty, `off` or `none`: no gate.
 */
export function parseReleasePolicy(raw: string | undefined): {
  policy: ReleasePolicy | null;
  problems: string[];
} {
  const text = raw?.trim() ?? '';
  if (text === '' || /^(off|none)$/i.test(text)) return { policy: null, problems: [] };
  const problems: string[] = [];
  const policy: ReleasePolicy = {};
  for (const part of text
    .split(';')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const [key = '', value = '', ...rest] = part.split('=').map((p) => p.trim());
    if (rest.length > 0 || value === '') {
      problems.push(`RELEASE_POLICY: "${part}" must be key=value`);
    } else if (key.toLowerCase() === 'blockriskscore') {
      const level = pick(RISK_LEVELS.slice(1), value);
      if (level) policy.blockRiskScore = level;
      else
        problems.push(
          `RELEASE_POLICY: blockRiskScore must be one of Informational, Low, Medium, High (got "${value}")`,
        );
    } else if (key.toLowerCase() === 'blockalertseverity') {
      const severity = pick(SEVERITIES, value);
      if (severity) policy.blockAlertSeverity = severity;
      else
        problems.push(
          `RELEASE_POLICY: blockAlertSeverity must be one of Informational, Low, Medium, High (got "${value}")`,
        );
    } else {
      problems.push(`RELEASE_POLICY: unknown key "${key}" (use blockRiskScore and/or blockAlertSeverity)`);
    }
  }
  return { policy: problems.length === 0 ? policy : null, problems };
}

/** Whether the policy has any rule. */
export function gateEnabled(policy: ReleasePolicy | null | undefined): policy is ReleasePolicy {
  return !!policy && (policy.blockRiskScore !== undefined || policy.blockAlertSeverity !== undefined);
}

/** Pure: the reasons the policy blocks this device (empty: release). */
export function blockReasons(
  policy: ReleasePolicy,
  machine: { riskScore?: unknown } | null,
  alerts: readonly unknown[] | null,
): string[] {
  const reasons: string[] = [];
  if (policy.blockRiskScore && machine) {
    const score = typeof machine.riskScore === 'string' ? machine.riskScore : '';
    const rank = RISK_LEVELS.findIndex((l) => l.toLowerCase() === score.toLowerCase());
    if (rank >= RISK_LEVELS.indexOf(policy.blockRiskScore)) {
      reasons.push(`risk score ${score} is at or above ${policy.blockRiskScore}`);
    }
  }
  if (policy.blockAlertSeverity && alerts) {
    const threshold = SEVERITIES.indexOf(policy.blockAlertSeverity);
    const open = alerts.filter((a): a is { id?: unknown; severity: string; status?: unknown } => {
      if (typeof a !== 'object' || a === null) return false;
      const { severity, status } = a as { severity?: unknown; status?: unknown };
      if (typeof severity !== 'string' || status === 'Resolved') return false;
      return SEVERITIES.findIndex((s) => s.toLowerCase() === severity.toLowerCase()) >= threshold;
    });
    if (open.length > 0) {
      const ids = open
        .slice(0, 5)
        .map((a) => (typeof a.id === 'string' ? a.id : '?'))
        .join(', ');
      reasons.push(
        `${open.length} unresolved alert${open.length === 1 ? '' : 's'} of severity ${policy.blockAlertSeverity} or higher (${ids}${open.length > 5 ? ', ...' : ''})`,
      );
    }
  }
  return reasons;
}

function unavailable(what: string, permission: string, status: number, attempts: number): UnisolateError {
  return new UnisolateError(
    'HealthCheckUnavailable',
    `The release policy could not be checked: Defender for Endpoint refused to read the ${what} (HTTP ${status}). Grant the MDE app ${permission} (admin consent), or send "force": true to release without the check. Nothing was released.`,
    { attempts },
  );
}

/**
 * Applies the gate; returns the attempts spent, throws `ReleaseBlocked`, `HealthCheckUnavailable`
 * (fail closed: a safety check that cannot run must not pass silently; `force` is the documented way
 * round it) or `MachineNotFound`. `known` (from a name look-up) saves the machine read.
 */
export async function applyHealthGate(
  ctx: CallContext,
  machineId: string,
  policy: ReleasePolicy,
  known?: MachineRecord,
): Promise<number> {
  let attempts = 0;
  let machine: { riskScore?: unknown } | null = null;
  if (policy.blockRiskScore) {
    if (known && typeof known.riskScore === 'string') machine = known;
    else {
      const read = await callMde(ctx, 'getMachine', 'the health check', (o) =>
        ctx.defender.getMachine(machineId, o),
      );
      attempts = read.attempts;
      if (read.response.status === 404) {
        throw new UnisolateError(
          'MachineNotFound',
          `Device ${machineId} was not found in Defender for Endpoint. Check the device id and the tenant.`,
          { attempts },
        );
      }
      if (
        read.response.status !== 200 ||
        typeof read.response.body !== 'object' ||
        read.response.body === null
      ) {
        throw unavailable('device', 'Machine.Read.All', read.response.status, attempts);
      }
      machine = read.response.body;
    }
  }
  let alerts: unknown[] | null = null;
  if (policy.blockAlertSeverity) {
    const read = await callMde(ctx, 'getMachineAlerts', 'the alert check', (o) =>
      ctx.defender.getMachineAlerts(machineId, o),
    );
    attempts = read.attempts;
    const value = (read.response.body as { value?: unknown } | null)?.value;
    if (read.response.status === 404) {
      throw new UnisolateError(
        'MachineNotFound',
        `Device ${machineId} was not found in Defender for Endpoint. Check the device id and the tenant.`,
        { attempts },
      );
    }
    if (read.response.status !== 200 || !Array.isArray(value)) {
      throw unavailable("device's alerts", 'Alert.Read.All', read.response.status, attempts);
    }
    alerts = value;
  }
  const reasons = blockReasons(policy, machine, alerts);
  if (reasons.length > 0) {
    throw new UnisolateError(
      'ReleaseBlocked',
      `Release of ${machineId} blocked by the release policy: ${reasons.join('; ')}. Investigate and resolve first, or send "force": true to release anyway (recorded in the outcome).`,
      { attempts },
    );
  }
  return attempts;
}
