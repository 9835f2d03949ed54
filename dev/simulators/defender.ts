/**
 * Simulator of the Microsoft Defender for Endpoint (MDE) REST API subset the app uses, behaving like
 * https://api.securitycenter.microsoft.com:
 *
 * - `POST /api/machines/{id}/unisolate` `{"Comment": "..."}` → 201 MachineAction
 *   (https://learn.microsoft.com/defender-endpoint/api/unisolate-machine); a repeat while that machine's
 *   Unisolate is Pending/InProgress → `400 ActiveRequestAlreadyExists` "Action is already in progress".
 * - `POST /api/machines/{id}/isolate` `{"Comment", "IsolationType"}` → 201 (to set up state).
 * - `GET /api/machineactions[?$filter&$orderby&$top&$skip&$select]`, `GET /api/machineactions/{id}`
 *   (https://learn.microsoft.com/defender-endpoint/api/get-machineactions-collection).
 * - `GET /api/machines[?$filter…]`, `GET /api/machines/{id-or-computerDnsName}`,
 *   `GET /api/machines/{id}/alerts`.
 * - Errors as `{"error":{"code","message","target"}}` with the documented codes
 *   (https://learn.microsoft.com/defender-endpoint/api/common-errors): 401 Unauthorized, 403 Forbidden,
 *   404 ResourceNotFound, 400 InvalidRequestBody / ODataError, 429 TooManyRequests with `Retry-After`.
 * - Rate limits: per app (the token's client id) and per API (each API's page states its own limit), sliding
 *   windows of 100 calls/minute and 1500 calls/hour, on an injectable clock so a benchmark can run on scaled
 *   time. E.g. https://learn.microsoft.com/defender-endpoint/api/unisolate-machine#limitations and
 *   https://learn.microsoft.com/defender-endpoint/api/get-machineactions-collection#limitations.
 *
 * Built for speed (benchmarks make thousands of sequential calls): no logging, no sync I/O, actions indexed
 * by machine, action status progression computed lazily from the clock instead of timers.
 */
import { createHash, randomUUID } from 'node:crypto';
import { ODataError, applyQuery, requiredEquality, type FilterNode } from './odata';
import {
  SimServer,
  type CommonSimOptions,
  type SimRequest,
  type SimResponse,
  type SimulatorHandle,
} from './server';
import { TokenRegistry, bearerToken, defaultTokenRegistry } from './tokens';

/** Audiences the Defender API accepts tokens for (legacy and current API hosts). */
export const DEFENDER_AUDIENCES = [
  'https://api.securitycenter.microsoft.com',
  'https://api.security.microsoft.com',
];

/** Machine health status values. */
export type HealthStatus =
  | 'Active'
  | 'Inactive'
  | 'ImpairedCommunication'
  | 'NoSensorData'
  | 'NoSensorDataImpairedCommunication'
  | 'Unknown';

/** Device entity as the API returns it (https://learn.microsoft.com/defender-endpoint/api/machine). */
export interface Machine {
  id: string;
  computerDnsName: string;
  firstSeen: string;
  lastSeen: string;
  osPlatform: string;
  osVersion: string | null;
  osProcessor: string;
  version: string;
  lastIpAddress: string;
  lastExternalIpAddress: string;
  agentVersion: string;
  osBuild: number | null;
  healthStatus: HealthStatus;
  deviceValue: 'Normal' | 'Low' | 'High';
  rbacGroupId: number;
  rbacGroupName: string;
  riskScore: 'None' | 'Informational' | 'Low' | 'Medium' | 'High';
  exposureLevel: 'None' | 'Low' | 'Medium' | 'High';
  isAadJoined: boolean;
  aadDeviceId: string | null;
  machineTags: string[];
  onboardingStatus: string;
  osArchitecture: string;
  managedBy: string;
  managedByStatus: string;
  ipAddresses: Array<{ ipAddress: string; macAddress: string; type: string; operationalStatus: string }>;
  vmMetadata: null;
}

/** Alert entity (subset of https://learn.microsoft.com/defender-endpoint/api/alerts). */
export interface Alert {
  id: string;
  incidentId: number;
  investigationId: number | null;
  assignedTo: string | null;
  severity: 'Informational' | 'Low' | 'Medium' | 'High';
  status: 'New' | 'InProgress' | 'Resolved';
  classification: string | null;
  determination: string | null;
  investigationState: string;
  detectionSource: string;
  detectorId: string;
  category: string;
  threatFamilyName: string | null;
  title: string;
  description: string;
  alertCreationTime: string;
  firstEventTime: string;
  lastEventTime: string;
  lastUpdateTime: string;
  resolvedTime: string | null;
  machineId: string;
  computerDnsName: string;
  rbacGroupName: string;
  aadTenantId: string;
  threatName: string | null;
  mitreTechniques: string[];
  relatedUser: null;
  loggedOnUsers: Array<{ accountName: string; domainName: string }>;
  comments: unknown[];
  evidence: unknown[];
}

/** Machine action types. */
export type MachineActionType =
  | 'Isolate'
  | 'Unisolate'
  | 'RunAntiVirusScan'
  | 'Offboard'
  | 'LiveResponse'
  | 'CollectInvestigationPackage'
  | 'StopAndQuarantineFile'
  | 'RestrictCodeExecution'
  | 'UnrestrictCodeExecution';

/** Machine action statuses. */
export type MachineActionStatus = 'Pending' | 'InProgress' | 'Succeeded' | 'Failed' | 'TimeOut' | 'Cancelled';

/** MachineAction entity (https://learn.microsoft.com/defender-endpoint/api/machineaction). */
export interface MachineAction {
  id: string;
  type: MachineActionType;
  title: string;
  requestor: string;
  requestorComment: string;
  status: MachineActionStatus;
  machineId: string;
  computerDnsName: string;
  creationDateTimeUtc: string;
  lastUpdateDateTimeUtc: string;
  cancellationRequestor: string | null;
  cancellationComment: string | null;
  cancellationDateTimeUtc: string | null;
  errorHResult: number;
  scope: string | null;
  externalId: string | null;
  requestSource: string;
  relatedFileInfo: null;
  commands: unknown[];
  troubleshootInfo: null;
}

/** Seed for a machine: id and name required, everything else defaulted realistically. */
export interface MachineSeed extends Partial<Machine> {
  id: string;
  computerDnsName: string;
  /** Out of the app's device-group scope: per-machine endpoints answer 403 and lists omit it. */
  forbidden?: boolean;
  /** Seed a Succeeded Isolate action (2 h ago), so the device starts isolated. */
  isolated?: boolean;
  /** Alerts to seed on the machine. */
  alerts?: Array<Partial<Alert>>;
}

/** Route names used for `counts`, denial and route-specific behaviour. */
export type DefenderRoute =
  'unisolate' | 'isolate' | 'listActions' | 'getAction' | 'listMachines' | 'getMachine' | 'alerts';

/** Sliding-window rate limits, per app and API. */
export interface DefenderLimits {
  perMinute: number;
  perHour: number;
}

/** The documented MDE API limits: 100 calls per minute and 1500 calls per hour. */
export const DEFENDER_DEFAULT_LIMITS: Readonly<DefenderLimits> = Object.freeze({
  perMinute: 100,
  perHour: 1500,
});

/** Options for {@link startDefender}. */
export interface DefenderSimOptions extends CommonSimOptions {
  /** HTTPS with the test certificate (default true) or plain HTTP. */
  tls?: boolean;
  /** Initial machines. Default: none (use {@link defaultMachines} for a realistic fleet). */
  machines?: MachineSeed[];
  /**
   * Accepts or rejects a bearer token; may return `{ appId }` to say which app it belongs to. Default: the
   * token is in `registry`, unexpired (wall clock) and issued for the Defender API audience.
   */
  validateToken?: (token: string) => boolean | { appId: string };
  /** Registry for the default token validation and for finding a token's app id. */
  registry?: TokenRegistry;
  /** Rate limits; `false` disables throttling. Default `{ perMinute: 100, perHour: 1500 }` as documented. */
  limits?: DefenderLimits | false;
  /** Time source for timestamps, rate limits and auto-progress. Default wall clock. */
  clock?: { now(): number };
  /**
   * Move new actions Pending → InProgress after `toInProgressMs` and → Succeeded after `toSucceededMs`
   * (both measured from creation, on `clock`). Default: actions stay Pending until `setActionStatus`.
   */
  autoProgress?: { toInProgressMs: number; toSucceededMs: number };
  /** Routes answering 403 (missing API permission). */
  deny?: Partial<Record<DefenderRoute, boolean>>;
  /** Shorthand: deny every GET route (no Machine.Read.All / Alert.Read.All). */
  denyRead?: boolean;
  /** AAD tenant id reported on alerts. */
  tenantId?: string;
}

/** An action created directly in the simulator (see `addAction`). */
export interface ActionSeed {
  machineId: string;
  type: MachineActionType;
  status?: MachineActionStatus;
  comment?: string;
  requestor?: string;
  createdAt?: number;
}

/** Handle returned by {@link startDefender}. */
export interface DefenderSimulator extends SimulatorHandle {
  /** Requests per route that passed auth and throttling, since start/reset. */
  readonly counts: Record<DefenderRoute, number>;
  /** Requests answered 429 since start/reset. */
  readonly throttledCount: number;
  /** Requests answered 429 since start/reset, per route (each API has its own limit). */
  readonly throttledByRoute: Record<DefenderRoute, number>;
  /** Requests answered 401 since start/reset. */
  readonly unauthorizedCount: number;
  /** The clock in use. */
  readonly clock: { now(): number };
  /** Adds a machine (and its seeded alerts/isolation). */
  addMachine(seed: MachineSeed): Machine;
  /** Updates a machine's fields (or `forbidden`); throws if unknown. */
  setMachine(id: string, patch: Partial<MachineSeed>): Machine;
  /** A machine by id, or undefined. */
  machine(id: string): Machine | undefined;
  /** All machines (including forbidden ones). */
  machines(): Machine[];
  /** Adds an alert to a machine; returns it. */
  addAlert(machineId: string, alert?: Partial<Alert>): Alert;
  /** All actions, oldest first (statuses brought up to date). */
  actions(): MachineAction[];
  /** One action by id (status brought up to date). */
  action(id: string): MachineAction | undefined;
  /** Creates an action directly (no HTTP, no rate limit), e.g. a Pending Unisolate for a conflict test. */
  addAction(seed: ActionSeed): MachineAction;
  /** Sets an action's status (stops auto-progress for it); throws if unknown. */
  setActionStatus(actionId: string, status: MachineActionStatus): MachineAction;
  /** Whether the latest Succeeded Isolate/Unisolate of the machine is an Isolate. */
  isIsolated(machineId: string): boolean;
  /** Grants or denies routes (403 with a missing-permission message). */
  setDenied(routes: DefenderRoute | DefenderRoute[], denied: boolean): void;
  /** Current rate limits (`false` = off). */
  readonly limits: DefenderLimits | false;
  /** Changes rate limits (`false` = off); sliding windows are kept. */
  setLimits(limits: DefenderLimits | false): void;
}

const ROUTES: DefenderRoute[] = [
  'unisolate',
  'isolate',
  'listActions',
  'getAction',
  'listMachines',
  'getMachine',
  'alerts',
];
const READ_ROUTES: DefenderRoute[] = ['listActions', 'getAction', 'listMachines', 'getMachine', 'alerts'];

const PERMISSION_HINT: Record<DefenderRoute, string> = {
  unisolate: 'Machine.Isolate',
  isolate: 'Machine.Isolate',
  listActions: 'Machine.Read.All, Machine.ReadWrite.All',
  getAction: 'Machine.Read.All, Machine.ReadWrite.All',
  listMachines: 'Machine.Read.All, Machine.ReadWrite.All',
  getMachine: 'Machine.Read.All, Machine.ReadWrite.All',
  alerts: 'Alert.Read.All, Alert.ReadWrite.All',
};

const MINUTE = 60_000;
const HOUR = 3_600_000;

/** 40-hex lower-case machine id derived from a name (stable across runs, like a real SHA-1 device id). */
export function machineIdFor(name: string): string {
  return createHash('sha1').update(name.toLowerCase()).digest('hex');
}

/**
 * Five realistic devices: three start isolated (a Succeeded Isolate action 2 h before start), two do not;
 * one isolated device has a High/New alert.
 */
export function defaultMachines(): MachineSeed[] {
  const seed = (name: string, extra: Partial<MachineSeed>): MachineSeed => ({
    id: machineIdFor(name),
    computerDnsName: name,
    ...extra,
  });
  return [
    seed('ws-fin-042.contoso.local', {
      osPlatform: 'Windows11',
      version: '23H2',
      osBuild: 22631,
      riskScore: 'High',
      exposureLevel: 'Medium',
      rbacGroupName: 'Finance',
      machineTags: ['finance', 'tier-2'],
      isolated: true,
      alerts: [{ severity: 'High', status: 'New', title: 'Suspicious PowerShell command line' }],
    }),
    seed('ws-hr-017.contoso.local', {
      osPlatform: 'Windows10',
      version: '22H2',
      osBuild: 19045,
      riskScore: 'Medium',
      exposureLevel: 'Low',
      rbacGroupName: 'HR',
      machineTags: ['hr'],
      isolated: true,
      alerts: [{ severity: 'Medium', status: 'Resolved', title: 'Malicious file detected and quarantined' }],
    }),
    seed('srv-sql-03.contoso.local', {
      osPlatform: 'WindowsServer2022',
      version: '21H2',
      osBuild: 20348,
      riskScore: 'Low',
      exposureLevel: 'High',
      rbacGroupName: 'Servers',
      machineTags: ['server', 'sql'],
      deviceValue: 'High',
    }),
    seed('lt-dev-108.contoso.local', {
      osPlatform: 'Linux',
      version: '22.04',
      osBuild: null,
      osProcessor: 'x64',
      riskScore: 'Informational',
      exposureLevel: 'Low',
      rbacGroupName: 'Engineering',
      machineTags: ['dev'],
      isolated: true,
    }),
    seed('ws-mkt-221.contoso.local', {
      osPlatform: 'Windows11',
      version: '24H2',
      osBuild: 26100,
      healthStatus: 'Inactive',
      riskScore: 'None',
      exposureLevel: 'None',
      rbacGroupName: 'Marketing',
      machineTags: [],
    }),
  ];
}

/**
 * Starts the Defender for Endpoint API simulator on 127.0.0.1 (HTTPS by default).
 *
 * @example
 * const mde = await startDefender({ machines: defaultMachines() });
 * await axios.post(`${mde.url}/api/machines/${id}/unisolate`, { Comment: 'clean' }, { headers: { Authorization: `Bearer ${token}` } });
 */
export async function startDefender(options: DefenderSimOptions = {}): Promise<DefenderSimulator> {
  const registry = options.registry ?? defaultTokenRegistry;
  const clock = options.clock ?? { now: () => Date.now() };
  const tenantId = options.tenantId ?? '11111111-1111-1111-1111-111111111111';
  let limits: DefenderLimits | false = options.limits ?? { ...DEFENDER_DEFAULT_LIMITS };
  const autoProgress = options.autoProgress;
  const denied = new Set<DefenderRoute>();
  if (options.denyRead) for (const r of READ_ROUTES) denied.add(r);
  for (const [r, d] of Object.entries(options.deny ?? {})) if (d) denied.add(r as DefenderRoute);

  const validate =
    options.validateToken ??
    ((token: string): boolean =>
      DEFENDER_AUDIENCES.some((aud) => registry.validate(token, aud) !== undefined));

  const machinesById = new Map<string, Machine>();
  const forbidden = new Set<string>();
  const alertsByMachine = new Map<string, Alert[]>();
  const actionList: MachineAction[] = [];
  const actionsById = new Map<string, MachineAction>();
  const actionsByMachine = new Map<string, MachineAction[]>();
  /** Actions whose status was set explicitly: auto-progress leaves them alone. */
  const manual = new Set<string>();
  /** Creation instant (ms) per action id, for auto-progress. */
  const createdAt = new Map<string, number>();
  /** Per app and API (`<appId> <route>`): call timestamps in the last hour, ascending. */
  const windows = new Map<string, number[]>();
  let counts = emptyCounts();
  let throttledCount = 0;
  let throttledByRoute = emptyCounts();
  let unauthorizedCount = 0;
  let seq = 0;

  function emptyCounts(): Record<DefenderRoute, number> {
    return Object.fromEntries(ROUTES.map((r) => [r, 0])) as Record<DefenderRoute, number>;
  }

  /** ISO-8601 with 7 fractional digits like MDE; a sequence in the sub-ms digits keeps ordering strict. */
  const timestamp = (ms: number): string => {
    const iso = new Date(ms).toISOString(); // 2024-01-01T00:00:00.000Z
    return `${iso.slice(0, -1)}${String(seq++ % 10000).padStart(4, '0')}Z`;
  };

  const error = (
    status: number,
    code: string,
    message: string,
    headers?: Record<string, string>,
  ): SimResponse => ({
    status,
    headers,
    body: { error: { code, message, target: randomUUID() } },
  });

  const machineDefaults = (seed: MachineSeed): Machine => {
    const now = clock.now();
    const { forbidden: _f, isolated: _i, alerts: _a, ...fields } = seed;
    const idHex = seed.id.toLowerCase();
    const octet = (n: number): number => parseInt(idHex.slice(n, n + 2), 16) || 1;
    return {
      firstSeen: timestamp(now - 400 * 86_400_000),
      lastSeen: timestamp(now - 3_600_000),
      osPlatform: 'Windows11',
      osVersion: null,
      osProcessor: 'x64',
      version: '23H2',
      lastIpAddress: `10.${octet(0)}.${octet(2)}.${octet(4)}`,
      lastExternalIpAddress: `203.0.113.${octet(6) % 254 || 1}`,
      agentVersion: '10.8760.22621.1010',
      osBuild: 22631,
      healthStatus: 'Active',
      deviceValue: 'Normal',
      rbacGroupId: 140,
      rbacGroupName: 'Workstations',
      riskScore: 'Low',
      exposureLevel: 'Medium',
      isAadJoined: true,
      aadDeviceId: randomUUID(),
      machineTags: [],
      onboardingStatus: 'Onboarded',
      osArchitecture: '64-bit',
      managedBy: 'Intune',
      managedByStatus: 'Success',
      ipAddresses: [
        {
          ipAddress: `10.${octet(0)}.${octet(2)}.${octet(4)}`,
          macAddress: idHex.slice(0, 12).toUpperCase(),
          type: 'Ethernet',
          operationalStatus: 'Up',
        },
      ],
      vmMetadata: null,
      ...fields,
      id: idHex,
    };
  };

  const refresh = (a: MachineAction): MachineAction => {
    if (!autoProgress || manual.has(a.id)) return a;
    if (a.status !== 'Pending' && a.status !== 'InProgress') return a;
    const created = createdAt.get(a.id) ?? clock.now();
    const now = clock.now();
    if (now >= created + autoProgress.toSucceededMs) {
      a.status = 'Succeeded';
      a.lastUpdateDateTimeUtc = timestamp(created + autoProgress.toSucceededMs);
    } else if (a.status === 'Pending' && now >= created + autoProgress.toInProgressMs) {
      a.status = 'InProgress';
      a.lastUpdateDateTimeUtc = timestamp(created + autoProgress.toInProgressMs);
    }
    return a;
  };

  const createAction = (seed: {
    machine: Machine;
    type: MachineActionType;
    status?: MachineActionStatus;
    comment: string;
    requestor: string;
    scope?: string | null;
    externalId?: string | null;
    at?: number;
  }): MachineAction => {
    const at = seed.at ?? clock.now();
    const ts = timestamp(at);
    const title =
      seed.type === 'Unisolate'
        ? `Release from isolation - ${seed.machine.computerDnsName}`
        : seed.type === 'Isolate'
          ? `Isolate device - ${seed.machine.computerDnsName}`
          : `${seed.type} - ${seed.machine.computerDnsName}`;
    const action: MachineAction = {
      id: randomUUID(),
      type: seed.type,
      title,
      requestor: seed.requestor,
      requestorComment: seed.comment,
      status: seed.status ?? 'Pending',
      machineId: seed.machine.id,
      computerDnsName: seed.machine.computerDnsName,
      creationDateTimeUtc: ts,
      lastUpdateDateTimeUtc: ts,
      cancellationRequestor: null,
      cancellationComment: null,
      cancellationDateTimeUtc: null,
      errorHResult: 0,
      scope: seed.scope ?? null,
      externalId: seed.externalId ?? null,
      requestSource: 'PublicApi',
      relatedFileInfo: null,
      commands: [],
      troubleshootInfo: null,
    };
    actionList.push(action);
    actionsById.set(action.id, action);
    const perMachine = actionsByMachine.get(action.machineId) ?? [];
    perMachine.push(action);
    actionsByMachine.set(action.machineId, perMachine);
    createdAt.set(action.id, at);
    if (seed.status !== undefined && seed.status !== 'Pending') manual.add(action.id);
    return action;
  };

  const addAlert = (machineId: string, partial: Partial<Alert> = {}): Alert => {
    const machine = machinesById.get(machineId.toLowerCase());
    if (!machine) throw new Error(`unknown machine ${machineId}`);
    const now = clock.now();
    const created = timestamp(now - 3 * 3_600_000);
    const status = partial.status ?? 'New';
    const alert: Alert = {
      id: `da${String(now).padStart(18, '0')}_${Math.floor(Math.random() * 2 ** 31)}`,
      incidentId: 1000 + (alertsByMachine.get(machine.id)?.length ?? 0) + machinesById.size * 10,
      investigationId: null,
      assignedTo: null,
      severity: 'Medium',
      status,
      classification: null,
      determination: null,
      investigationState: 'Running',
      detectionSource: 'WindowsDefenderAtp',
      detectorId: randomUUID(),
      category: 'Execution',
      threatFamilyName: null,
      title: 'Suspicious process execution',
      description: 'A process executed a suspicious command line (simulated alert).',
      alertCreationTime: created,
      firstEventTime: created,
      lastEventTime: created,
      lastUpdateTime: created,
      resolvedTime: status === 'Resolved' ? timestamp(now - 3_600_000) : null,
      machineId: machine.id,
      computerDnsName: machine.computerDnsName,
      rbacGroupName: machine.rbacGroupName,
      aadTenantId: tenantId,
      threatName: null,
      mitreTechniques: ['T1059.001'],
      relatedUser: null,
      loggedOnUsers: [{ accountName: 'jdoe', domainName: 'CONTOSO' }],
      comments: [],
      evidence: [],
      ...partial,
    };
    const list = alertsByMachine.get(machine.id) ?? [];
    list.push(alert);
    alertsByMachine.set(machine.id, list);
    return alert;
  };

  const addMachine = (seed: MachineSeed): Machine => {
    if (!seed.id || !seed.computerDnsName) throw new Error('machine seed needs id and computerDnsName');
    const machine = machineDefaults(seed);
    machinesById.set(machine.id, machine);
    if (seed.forbidden) forbidden.add(machine.id);
    if (seed.isolated) {
      createAction({
        machine,
        type: 'Isolate',
        status: 'Succeeded',
        comment: 'Isolated by SOC after alert triage',
        requestor: 'secops@contoso.com',
        scope: 'Full',
        at: clock.now() - 2 * 3_600_000,
      });
    }
    for (const alert of seed.alerts ?? []) addAlert(machine.id, alert);
    return machine;
  };

  const setMachine = (id: string, patch: Partial<MachineSeed>): Machine => {
    const machine = machinesById.get(id.toLowerCase());
    if (!machine) throw new Error(`unknown machine ${id}`);
    const { forbidden: f, isolated: _i, alerts, id: _id, ...fields } = patch;
    Object.assign(machine, fields);
    if (f !== undefined) {
      if (f) forbidden.add(machine.id);
      else forbidden.delete(machine.id);
    }
    for (const alert of alerts ?? []) addAlert(machine.id, alert);
    return machine;
  };

  const isIsolated = (machineId: string): boolean => {
    const list = actionsByMachine.get(machineId.toLowerCase()) ?? [];
    for (let i = list.length - 1; i >= 0; i--) {
      const a = refresh(list[i]!);
      if (a.status === 'Succeeded' && (a.type === 'Isolate' || a.type === 'Unisolate'))
        return a.type === 'Isolate';
    }
    return false;
  };

  for (const seed of options.machines ?? []) addMachine(seed);

  /** Sliding-window throttle; returns seconds to wait, or 0 when the call is admitted (and counted). */
  const throttle = (appId: string, api: DefenderRoute): number => {
    if (limits === false) return 0;
    const now = clock.now();
    const key = `${appId} ${api}`;
    let window = windows.get(key);
    if (!window) {
      window = [];
      windows.set(key, window);
    }
    let drop = 0;
    while (drop < window.length && window[drop]! <= now - HOUR) drop++;
    if (drop > 0) window.splice(0, drop);
    // First index inside the last minute (binary search: window is ascending).
    let lo = 0;
    let hi = window.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (window[mid]! <= now - MINUTE) lo = mid + 1;
      else hi = mid;
    }
    const inMinute = window.length - lo;
    if (inMinute >= limits.perMinute) {
      const oldest = window[window.length - limits.perMinute]!;
      return Math.max(1, Math.ceil((oldest + MINUTE - now) / 1000));
    }
    if (window.length >= limits.perHour) {
      const oldest = window[window.length - limits.perHour]!;
      return Math.max(1, Math.ceil((oldest + HOUR - now) / 1000));
    }
    window.push(now);
    return 0;
  };

  const single = (entitySet: string, entity: object): Record<string, unknown> => ({
    '@odata.context': `${server.url}/api/$metadata#${entitySet}/$entity`,
    ...entity,
  });
  const collection = (entitySet: string, value: unknown[]): Record<string, unknown> => ({
    '@odata.context': `${server.url}/api/$metadata#${entitySet}`,
    value,
  });

  const parseBody = (req: SimRequest): Record<string, unknown> | undefined => {
    try {
      const parsed: unknown = JSON.parse(req.body);
      return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)
        ? (parsed as Record<string, unknown>)
        : undefined;
    } catch {
      return undefined;
    }
  };

  const machineAction = (
    req: SimRequest,
    id: string,
    type: 'Isolate' | 'Unisolate',
    appId: string,
  ): SimResponse => {
    const machine = machinesById.get(id.toLowerCase());
    if (!machine) return error(404, 'ResourceNotFound', `Machine ${id} was not found`);
    if (forbidden.has(machine.id)) {
      return error(403, 'Forbidden', `The application does not have permission to act on machine ${id}.`);
    }
    const body = parseBody(req);
    if (!body) return error(400, 'InvalidRequestBody', 'Request body is incorrect');
    const comment = body.Comment; // Body parameters are case-sensitive in MDE.
    if (typeof comment !== 'string' || comment.trim() === '') {
      return error(400, 'InvalidRequestBody', 'Request body is incorrect: Comment is required');
    }
    let scope: string | null = null;
    if (type === 'Isolate') {
      const isolationType = body.IsolationType ?? 'Full';
      if (isolationType !== 'Full' && isolationType !== 'Selective' && isolationType !== 'UnManagedDevice') {
        return error(
          400,
          'InvalidRequestBody',
          `IsolationType '${JSON.stringify(isolationType)}' is invalid`,
        );
      }
      scope = isolationType;
    }
    const active = (actionsByMachine.get(machine.id) ?? []).some((a) => {
      if (a.type !== type) return false;
      const s = refresh(a).status;
      return s === 'Pending' || s === 'InProgress';
    });
    if (active) return error(400, 'ActiveRequestAlreadyExists', 'Action is already in progress');
    const externalId = typeof body.ExternalID === 'string' ? body.ExternalID : null;
    const action = createAction({ machine, type, comment, requestor: appId, scope, externalId });
    return { status: 201, body: single('MachineActions', action) };
  };

  const listQuery = (
    req: SimRequest,
    items: readonly Record<string, unknown>[],
    candidates?: (f: FilterNode | undefined) => readonly Record<string, unknown>[] | undefined,
  ): Record<string, unknown>[] | SimResponse => {
    try {
      return applyQuery(items, req.query, { maxTop: 10000, candidates });
    } catch (e) {
      if (e instanceof ODataError) return error(400, 'ODataError', `Invalid ODataQuery: ${e.message}`);
      throw e;
    }
  };

  const route = (req: SimRequest): { name: DefenderRoute; id?: string } | SimResponse => {
    const p = req.pathname.replace(/\/+$/, '');
    let m: RegExpExecArray | null;
    if ((m = /^\/api\/machines\/([^/]+)\/(unisolate|isolate)$/i.exec(p))) {
      if (req.method !== 'POST') return error(405, 'MethodNotAllowed', `${req.method} is not allowed`);
      return { name: m[2]!.toLowerCase() as 'unisolate' | 'isolate', id: decodeURIComponent(m[1]!) };
    }
    if (req.method !== 'GET') {
      return /^\/api\//i.test(p)
        ? error(405, 'MethodNotAllowed', `${req.method} is not allowed`)
        : error(404, 'NotFound', 'Resource not found');
    }
    if (/^\/api\/machineactions$/i.test(p)) return { name: 'listActions' };
    if ((m = /^\/api\/machineactions\/([^/]+)$/i.exec(p)))
      return { name: 'getAction', id: decodeURIComponent(m[1]!) };
    if (/^\/api\/machines$/i.test(p)) return { name: 'listMachines' };
    if ((m = /^\/api\/machines\/([^/]+)\/alerts$/i.exec(p)))
      return { name: 'alerts', id: decodeURIComponent(m[1]!) };
    if ((m = /^\/api\/machines\/([^/]+)$/i.exec(p)))
      return { name: 'getMachine', id: decodeURIComponent(m[1]!) };
    return error(404, 'NotFound', `Resource ${req.pathname} not found`);
  };

  const findMachine = (idOrName: string): Machine | undefined => {
    const byId = machinesById.get(idOrName.toLowerCase());
    if (byId) return byId;
    const lower = idOrName.toLowerCase();
    for (const m of machinesById.values()) if (m.computerDnsName.toLowerCase() === lower) return m;
    return undefined;
  };
  /** A machine the app may see, or the 404/403 answer MDE gives for it. */
  const visibleMachine = (idOrName: string): Machine | SimResponse => {
    const machine = findMachine(idOrName);
    if (!machine) return error(404, 'ResourceNotFound', `Machine ${idOrName} was not found`);
    if (forbidden.has(machine.id)) {
      return error(
        403,
        'Forbidden',
        `The application does not have permission to access machine ${idOrName}.`,
      );
    }
    return machine;
  };

  const handler = (req: SimRequest): SimResponse => {
    const token = bearerToken(req.headers.authorization);
    const verdict = token === undefined ? false : validate(token);
    if (verdict === false) {
      unauthorizedCount++;
      return error(401, 'Unauthorized', 'Unauthorized (invalid or expired authorization header).');
    }
    const appId =
      typeof verdict === 'object'
        ? verdict.appId
        : (registry.lookup(token!)?.clientId ?? 'unknown-application');

    const r = route(req);
    if ('status' in r) return r;

    const retryAfter = throttle(appId, r.name);
    if (retryAfter > 0) {
      throttledCount++;
      throttledByRoute[r.name]++;
      return error(
        429,
        'TooManyRequests',
        `API calls quota exceeded! Maximum admitted ${limits === false ? 0 : limits.perMinute} per Minute and ${
          limits === false ? 0 : limits.perHour
        } per Hour. Try again in ${retryAfter} seconds.`,
        { 'Retry-After': String(retryAfter) },
      );
    }
    counts[r.name]++;
    if (denied.has(r.name)) {
      return error(
        403,
        'Forbidden',
        `The application does not have any of the required application permissions (${PERMISSION_HINT[r.name]}) to access the resource.`,
      );
    }

    switch (r.name) {
      case 'unisolate':
        return machineAction(req, r.id!, 'Unisolate', appId);
      case 'isolate':
        return machineAction(req, r.id!, 'Isolate', appId);
      case 'listActions': {
        // Forbidden (out-of-scope) machines' actions are invisible; skip the copy in the common case.
        const inScope = (list: MachineAction[]): MachineAction[] =>
          forbidden.size === 0 ? list : list.filter((a) => !forbidden.has(a.machineId));
        const result = listQuery(
          req,
          inScope(actionList) as unknown as Record<string, unknown>[],
          (filter) => {
            // Use the per-machine index when the filter pins machineId (the app's usual query).
            const mid = filter ? requiredEquality(filter, 'machineId') : undefined;
            if (mid === undefined) return undefined;
            return inScope(actionsByMachine.get(mid.toLowerCase()) ?? []) as unknown as Record<
              string,
              unknown
            >[];
          },
        );
        if (!Array.isArray(result)) return result;
        return { status: 200, body: collection('MachineActions', result) };
      }
      case 'getAction': {
        const action = actionsById.get(r.id!.toLowerCase());
        if (!action || forbidden.has(action.machineId)) {
          return error(404, 'ResourceNotFound', `MachineAction ${r.id!} was not found`);
        }
        return { status: 200, body: single('MachineActions', refresh(action)) };
      }
      case 'listMachines': {
        const visible = [...machinesById.values()].filter((m) => !forbidden.has(m.id));
        const result = listQuery(req, visible as unknown as Record<string, unknown>[]);
        if (!Array.isArray(result)) return result;
        return { status: 200, body: collection('Machines', result) };
      }
      case 'getMachine': {
        const machine = visibleMachine(r.id!);
        if ('status' in machine) return machine;
        return { status: 200, body: single('Machines', machine) };
      }
      case 'alerts': {
        const machine = visibleMachine(r.id!);
        if ('status' in machine) return machine;
        const result = listQuery(
          req,
          (alertsByMachine.get(machine.id) ?? []) as unknown as Record<string, unknown>[],
        );
        if (!Array.isArray(result)) return result;
        return { status: 200, body: collection('Alerts', result) };
      }
    }
  };

  // Touch every listed action's status before it is serialised, so lists reflect auto-progress too.
  const handlerWithRefresh = (req: SimRequest): SimResponse => {
    if (autoProgress && req.method === 'GET' && /^\/api\/machineactions\/?$/i.test(req.pathname)) {
      for (const a of actionList) refresh(a);
    }
    return handler(req);
  };

  const server = new SimServer({
    port: options.port,
    tls: options.tls ?? true,
    handler: handlerWithRefresh,
    defaultFaultBody: (status) =>
      status === 429
        ? { error: { code: 'TooManyRequests', message: 'Simulated throttling', target: randomUUID() } }
        : {
            error: {
              code: status >= 500 ? 'InternalServerError' : 'BadRequest',
              message: 'Simulated fault',
              target: randomUUID(),
            },
          },
    onReset: () => {
      counts = emptyCounts();
      throttledCount = 0;
      throttledByRoute = emptyCounts();
      unauthorizedCount = 0;
      windows.clear();
    },
  });
  await server.start();

  return Object.defineProperties(server.handle as DefenderSimulator, {
    counts: { enumerable: true, get: () => counts },
    throttledCount: { enumerable: true, get: () => throttledCount },
    throttledByRoute: { enumerable: true, get: () => throttledByRoute },
    unauthorizedCount: { enumerable: true, get: () => unauthorizedCount },
    clock: { enumerable: true, value: clock },
    addMachine: { value: addMachine },
    setMachine: { value: setMachine },
    machine: { value: (id: string) => machinesById.get(id.toLowerCase()) },
    machines: { value: () => [...machinesById.values()] },
    addAlert: { value: addAlert },
    actions: { value: () => actionList.map(refresh) },
    action: {
      value: (id: string) => {
        const a = actionsById.get(id.toLowerCase());
        return a ? refresh(a) : undefined;
      },
    },
    addAction: {
      value: (seed: ActionSeed) => {
        const machine = machinesById.get(seed.machineId.toLowerCase());
        if (!machine) throw new Error(`unknown machine ${seed.machineId}`);
        return createAction({
          machine,
          type: seed.type,
          status: seed.status,
          comment: seed.comment ?? 'Seeded by test',
          requestor: seed.requestor ?? 'secops@contoso.com',
          at: seed.createdAt,
        });
      },
    },
    setActionStatus: {
      value: (actionId: string, status: MachineActionStatus) => {
        const a = actionsById.get(actionId.toLowerCase());
        if (!a) throw new Error(`unknown action ${actionId}`);
        manual.add(a.id);
        a.status = status;
        a.lastUpdateDateTimeUtc = timestamp(clock.now());
        if (status === 'Cancelled') {
          a.cancellationDateTimeUtc = a.lastUpdateDateTimeUtc;
          a.cancellationRequestor = a.cancellationRequestor ?? 'secops@contoso.com';
        }
        return a;
      },
    },
    isIsolated: { value: isIsolated },
    setDenied: {
      value: (routes: DefenderRoute | DefenderRoute[], deny: boolean) => {
        for (const r of Array.isArray(routes) ? routes : [routes]) {
          if (deny) denied.add(r);
          else denied.delete(r);
        }
      },
    },
    limits: { enumerable: true, get: () => limits },
    setLimits: {
      value: (l: DefenderLimits | false) => {
        limits = l;
      },
    },
  });
}
