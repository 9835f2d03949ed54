/**
 * The release request: its schema (one description that drives validation, the OpenAPI document and the
 * playbook checks) and its parser.
 */
import { randomUUID } from 'node:crypto';

/** One device of a request: exactly one of `machineId` and `deviceName` is set. */
export type DeviceTarget =
  { machineId: string; deviceName?: undefined } | { machineId?: undefined; deviceName: string };

/**
 * A validated release request. Exactly one of: `machineId`, `deviceName`, or `devices` (bulk; then
 * `machineId` is null). `deviceName`, `force` and `devices` are present only when the caller sent them.
 */
export interface ReleaseRequest {
  /** MDE device id: 40 lower-case hex characters (a SHA-1); null when a `deviceName` or `devices` is given. */
  machineId: string | null;
  /** Comment recorded on the MachineAction (trimmed, 1-1000 characters). */
  comment: string;
  correlationId: string;
  requestedBy: string | null;
  /** Host name to resolve to a machine id (full DNS name or its first label). */
  deviceName?: string;
  /** Bypass the health gate (`RELEASE_POLICY`); recorded as `forced: true` in the outcome. */
  force?: boolean;
  /** Bulk request: 1-100 entries sharing comment, correlationId, requestedBy and force; each valid or not. */
  devices?: BulkEntry[];
}

/** One entry of a bulk request: a device, or why the entry cannot be used (it gets its own Invalid outcome). */
export type BulkEntry =
  | { ok: true; target: DeviceTarget }
  | { ok: false; problems: string[]; machineId?: string; deviceName?: string };

/** Names of the request fields (the keys of {@link REQUEST_FIELDS}). */
export type RequestField =
  | 'machineId'
  | 'deviceName'
  | 'comment'
  | 'correlationId'
  | 'requestedBy'
  | 'force'
  | 'devices'
  | 'idempotencyKey';

/** Description of one request field, for validation and for the OpenAPI schema. */
export interface FieldSpec {
  /** Canonical (camelCase) name; keys are matched case-insensitively. */
  name: RequestField;
  /** JSON type; absent means `string`. */
  type?: 'string' | 'boolean' | 'array';
  description: string;
  /** What a valid value is, in words (`<field> must be <rule>`): the problem text and the OpenAPI description. */
  rule: string;
  /** Strings: characters; arrays: items. Booleans: 0. */
  minLength: number;
  /** Strings: characters; arrays: items. Booleans: 0. */
  maxLength: number;
  /** Regular expression the (trimmed) value must match, as an OpenAPI `pattern`. */
  pattern?: string;
  /** Arrays: each item is an object with exactly one of these fields (their specs are in this table). */
  items?: readonly RequestField[];
  example: string | boolean | readonly Record<string, string>[];
}

/** MDE device ids are SHA-1 hashes: https://learn.microsoft.com/en-us/defender-endpoint/api/machine */
export const MACHINE_ID_PATTERN = '^[0-9a-fA-F]{40}$';
/** Printable ASCII only: correlation ids end up in URLs, log lines and ticket fields. */
export const CORRELATION_ID_PATTERN = '^[\\x20-\\x7E]{1,128}$';
/**
 * Host names: printable ASCII without spaces (NetBIOS names may contain `'`, `!`, `&`...). The value only
 * ever goes into an OData string literal, escaped (`'` → `''`), never into a URL path.
 */
export const DEVICE_NAME_PATTERN = '^[\\x21-\\x7E]{1,255}$';
/** Idempotency keys: printable ASCII, as Stripe's and the IETF draft's examples. */
export const IDEMPOTENCY_KEY_PATTERN = '^[\\x20-\\x7E]{1,255}$';
/** Most devices in one bulk request (each costs one or more Defender API calls of 100/minute). */
export const MAX_DEVICES = 100;

/** A validated, lower-case MDE device id: the only form that ever reaches a Defender URL. */
export function isMachineId(value: string): boolean {
  return MACHINE_ID.test(value) && value === value.toLowerCase();
}

/**
 * The request fields. `comment` is required, plus exactly one of `machineId` (may come from the route),
 * `deviceName` or `devices` ({@link ONE_OF_FIELDS}). The parser reads each field's bounds, pattern and rule
 * from here, and the OpenAPI document is generated from it: one description of the request.
 */
export const REQUEST_FIELDS: Readonly<Record<RequestField, FieldSpec>> = {
  machineId: {
    name: 'machineId',
    description:
      'MDE device id (40 hexadecimal characters). Required in the body for POST /api/unisolate; optional for ' +
      'POST /api/machines/{machineId}/unisolate, where it must equal the route value.',
    rule: '40 hexadecimal characters (MDE device id)',
    minLength: 40,
    maxLength: 40,
    pattern: MACHINE_ID_PATTERN,
    example: '1e5bc9d7e413ddd7902c2932e418702b84d0cc07',
  },
  deviceName: {
    name: 'deviceName',
    description:
      'Host name instead of machineId: the full DNS name (`ws-fin-042.contoso.local`) or its first label ' +
      '(`ws-fin-042`), matched case-insensitively via GET /api/machines (needs Machine.Read.All). No match: ' +
      'NotFound; more than one device: Ambiguous with the candidates (nothing is released).',
    rule: 'a host name of 1-255 printable characters without spaces',
    minLength: 1,
    maxLength: 255,
    pattern: DEVICE_NAME_PATTERN,
    example: 'ws-fin-042.contoso.local',
  },
  comment: {
    name: 'comment',
    description:
      'Why the device is released; recorded on the MDE machine action. No control characters other than ' +
      'newline and tab.',
    rule: '1-1000 characters after trimming',
    minLength: 1,
    maxLength: 1000,
    example: 'Unisolate machine since it was clean and validated',
  },
  correlationId: {
    name: 'correlationId',
    description:
      'Your reference (ticket or incident id), echoed in every outcome. Default: the Service Bus message ' +
      'correlation id or message id, else a new UUID.',
    rule: '1-128 printable ASCII characters',
    minLength: 1,
    maxLength: 128,
    pattern: CORRELATION_ID_PATTERN,
    example: 'INC0012345',
  },
  requestedBy: {
    name: 'requestedBy',
    description: 'Who asked for the release (audit text).',
    rule: '1-256 characters',
    minLength: 1,
    maxLength: 256,
    example: 'analyst@contoso.com',
  },
  idempotencyKey: {
    name: 'idempotencyKey',
    description:
      'Idempotency key (same as the Idempotency-Key header): a repeat with the same key within ' +
      'IDEMPOTENCY_WINDOW_HOURS returns the stored outcome and never calls MDE again; the same key with ' +
      'another body is rejected (422). Needs STATE_TABLE_URL.',
    rule: '1-255 printable ASCII characters (a UUID is a good key)',
    minLength: 1,
    maxLength: 255,
    pattern: IDEMPOTENCY_KEY_PATTERN,
    example: '5f0c6a8e-3b1d-4c57-9a43-1f2e7d9b6c10',
  },
  force: {
    name: 'force',
    type: 'boolean',
    description:
      'true: bypass the health gate (RELEASE_POLICY: risk score / open alerts); the outcome records ' +
      '`forced: true`. Does not bypass the isolation-state check.',
    rule: 'true or false (a JSON boolean, not a string)',
    minLength: 0,
    maxLength: 0,
    example: false,
  },
  devices: {
    name: 'devices',
    type: 'array',
    description:
      'Bulk release: each item {"machineId": ...} or {"deviceName": ...}, sharing comment, correlationId, ' +
      'requestedBy and force. One outcome per item (with its `index`), HTTP 207; an invalid item is Invalid ' +
      'at its index.',
    rule: `a list of 1-${MAX_DEVICES} items such as {"machineId": "..."} or {"deviceName": "..."}`,
    minLength: 1,
    maxLength: MAX_DEVICES,
    items: ['machineId', 'deviceName'],
    example: [{ machineId: '1e5bc9d7e413ddd7902c2932e418702b84d0cc07' }, { deviceName: 'ws-hr-017' }],
  },
};

/** A field's rule as a problem: `<prefix><name> must be <rule>`. */
function must(name: RequestField, prefix = ''): string {
  return `${prefix}${name} must be ${REQUEST_FIELDS[name].rule}`;
}

/** Fields that must be present (besides exactly one of {@link ONE_OF_FIELDS}). */
export const REQUIRED_FIELDS: readonly RequestField[] = ['comment'];

/** Exactly one of these identifies the device(s); machineId may instead come from the route. */
export const ONE_OF_FIELDS: readonly RequestField[] = ['machineId', 'deviceName', 'devices'];

/** Where the request came from, for defaults and route checks. */
export interface RequestContext {
  /** The `{machineId}` route value of `POST /api/machines/{machineId}/unisolate`. */
  routeMachineId?: string;
  /** Correlation id to use when the body has none (Service Bus correlation id or message id). */
  fallbackCorrelationId?: string;
}

/** Result of parsing: a request, or every problem found (plus what could be read, for the outcome). */
export type ParseResult =
  | { ok: true; request: ReleaseRequest }
  | {
      ok: false;
      problems: string[];
      correlationId: string;
      machineId: string | null;
      requestedBy: string | null;
      deviceName?: string;
      /** Present when the body is a bulk request: every entry then gets its own outcome, with these problems. */
      devices?: BulkEntry[];
    };

// Keys that must never be read from caller input, whatever their casing.
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
// Control characters (C0, DEL, C1) other than tab and newline; CRLF is normalised to LF first.
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u2028\u2029]/;
const MACHINE_ID = new RegExp(MACHINE_ID_PATTERN);
const CORRELATION_ID = new RegExp(CORRELATION_ID_PATTERN);
const DEVICE_NAME = new RegExp(DEVICE_NAME_PATTERN);
const IDEMPOTENCY_KEY = new RegExp(IDEMPOTENCY_KEY_PATTERN);

/** Whether a value passes a field's length bounds. */
function withinLength(name: RequestField, value: string): boolean {
  const spec = REQUEST_FIELDS[name];
  return value.length >= spec.minLength && value.length <= spec.maxLength;
}

/** Whether `key` is a usable idempotency key (header or body field). */
export function isIdempotencyKey(key: string): boolean {
  return IDEMPOTENCY_KEY.test(key);
}

/** Whether `id` is a valid correlation id (the status route takes the same). */
export function isCorrelationId(id: string): boolean {
  return CORRELATION_ID.test(id);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

/**
 * Collects the known fields of `body`, matching keys case-insensitively (`Comment`, `MachineId` in MDE's
 * casing work). Unknown keys are ignored; prototype keys are never read; a field given twice with different
 * casings is a problem, not a silent pick.
 */
function collectFields(
  body: Record<string, unknown>,
  problems: string[],
  allowed: readonly RequestField[] = Object.keys(REQUEST_FIELDS) as RequestField[],
  prefix = '',
): Map<RequestField, unknown> {
  const canonical = new Map<string, RequestField>(allowed.map((name) => [name.toLowerCase(), name]));
  const found = new Map<RequestField, unknown>();
  const seenAs = new Map<RequestField, string[]>();
  for (const key of Object.keys(body)) {
    const lower = key.toLowerCase();
    if (FORBIDDEN_KEYS.has(lower)) continue;
    const name = canonical.get(lower);
    if (!name) continue;
    seenAs.set(name, [...(seenAs.get(name) ?? []), key]);
    found.set(name, Object.getOwnPropertyDescriptor(body, key)?.value);
  }
  for (const [name, keys] of seenAs) {
    if (keys.length > 1) {
      problems.push(`${prefix}${name} is given more than once (${keys.join(', ')}): send it once`);
    }
  }
  return found;
}

function readText(
  fields: Map<RequestField, unknown>,
  name: RequestField,
  problems: string[],
  prefix = '',
): string | undefined {
  const value = fields.get(name);
  if (value === undefined || value === null) return undefined;
  const spec = REQUEST_FIELDS[name];
  if (typeof value !== 'string') {
    problems.push(`${prefix}${name} must be a string (${spec.minLength}-${spec.maxLength} characters)`);
    return undefined;
  }
  return value;
}

/** A short, log-safe rendering of caller text for error messages. */
function quote(value: string): string {
  return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
}

/**
 * Validates a release request body (HTTP body or Service Bus message body, already JSON-decoded).
 * Never throws; reports every problem at once, each saying what to fix.
 */
export function parseReleaseRequest(body: unknown, context: RequestContext = {}): ParseResult {
  const problems: string[] = [];
  const fields = isPlainObject(body) ? collectFields(body, problems) : new Map<RequestField, unknown>();
  if (!isPlainObject(body)) {
    problems.push(
      'the request body must be a JSON object such as {"machineId": "<40 hex characters>", "comment": "..."}',
    );
  }

  // correlationId first, so that even an invalid request's outcome carries the caller's reference.
  let correlationId: string | undefined;
  const rawCorrelation = readText(fields, 'correlationId', problems);
  if (rawCorrelation !== undefined) {
    const trimmed = rawCorrelation.trim();
    if (CORRELATION_ID.test(trimmed)) correlationId = trimmed;
    else problems.push(must('correlationId'));
  }
  const fallback = context.fallbackCorrelationId?.trim();
  correlationId ??= fallback && CORRELATION_ID.test(fallback) ? fallback : randomUUID();

  // machineId: from the route and/or the body; validated before any URL is built from it.
  const problemsBeforeMachineId = problems.length;
  let machineId: string | null = null;
  let routeId: string | undefined;
  if (context.routeMachineId !== undefined) {
    if (MACHINE_ID.test(context.routeMachineId)) routeId = context.routeMachineId.toLowerCase();
    else {
      problems.push(
        `the machine id in the URL must be ${REQUEST_FIELDS.machineId.rule}, got ${quote(context.routeMachineId)}`,
      );
    }
  }
  const rawMachineId = readText(fields, 'machineId', problems);
  let bodyId: string | undefined;
  if (rawMachineId !== undefined) {
    const trimmed = rawMachineId.trim();
    if (MACHINE_ID.test(trimmed)) bodyId = trimmed.toLowerCase();
    else problems.push(`${must('machineId')}, got ${quote(rawMachineId)}`);
  }
  if (routeId && bodyId && routeId !== bodyId) {
    problems.push(`machineId in the body (${bodyId}) does not match the machine id in the URL (${routeId})`);
  } else {
    machineId = routeId ?? bodyId ?? null;
  }
  const deviceName = readDeviceName(fields, problems);
  const devices = readDevices(fields, problems);
  const given = [
    machineId !== null || rawMachineId !== undefined || routeId !== undefined ? 'machineId' : undefined,
    deviceName !== undefined || fields.get('deviceName') != null ? 'deviceName' : undefined,
    devices !== undefined || fields.get('devices') != null ? 'devices' : undefined,
  ].filter((name): name is string => name !== undefined);
  if (given.length > 1) {
    problems.push(
      `give exactly one of machineId, deviceName or devices (got ${given.join(' and ')}${
        routeId !== undefined ? ', machineId from the URL' : ''
      })`,
    );
  } else if (given.length === 0 && problems.length === problemsBeforeMachineId) {
    // Wording kept from the single-device contract; deviceName and devices are documented in the schema.
    problems.push('machineId is required (the MDE device id, 40 hexadecimal characters)');
  }
  let force: boolean | undefined;
  const rawForce = fields.get('force');
  if (rawForce !== undefined && rawForce !== null) {
    if (typeof rawForce === 'boolean') force = rawForce;
    else problems.push(must('force'));
  }

  let comment: string | undefined;
  const rawComment = readText(fields, 'comment', problems);
  if (rawComment === undefined) {
    if (fields.get('comment') === undefined || fields.get('comment') === null) {
      const { minLength, maxLength } = REQUEST_FIELDS.comment;
      problems.push(
        `comment is required (${minLength}-${maxLength} characters): say why the device is released`,
      );
    }
  } else {
    const normalised = rawComment.replace(/\r\n/g, '\n').trim();
    if (!withinLength('comment', normalised)) {
      problems.push(`${must('comment')} (got ${normalised.length})`);
    } else if (CONTROL_CHARS.test(normalised)) {
      problems.push('comment must not contain control characters other than newline and tab');
    } else comment = normalised;
  }

  let requestedBy: string | null = null;
  const rawRequestedBy = readText(fields, 'requestedBy', problems);
  if (rawRequestedBy !== undefined) {
    const trimmed = rawRequestedBy.trim();
    if (!withinLength('requestedBy', trimmed)) problems.push(must('requestedBy'));
    else if (CONTROL_CHARS.test(trimmed) || /[\r\n\t]/.test(trimmed)) {
      problems.push('requestedBy must not contain control characters');
    } else requestedBy = trimmed;
  }

  // Used by core/idempotency.ts (the key itself); checked here so an unusable key is one more problem.
  const rawIdempotencyKey = readText(fields, 'idempotencyKey', problems);
  if (rawIdempotencyKey !== undefined && !isIdempotencyKey(rawIdempotencyKey)) {
    problems.push(must('idempotencyKey'));
  }

  if (problems.length > 0 || comment === undefined) {
    return {
      ok: false,
      problems,
      correlationId,
      machineId,
      requestedBy,
      ...(deviceName !== undefined ? { deviceName } : {}),
      ...(devices !== undefined ? { devices } : {}),
    };
  }
  const request: ReleaseRequest = { machineId, comment, correlationId, requestedBy };
  if (deviceName !== undefined) request.deviceName = deviceName;
  if (devices !== undefined) request.devices = devices;
  if (force !== undefined) request.force = force;
  return { ok: true, request };
}

function readDeviceName(
  fields: Map<RequestField, unknown>,
  problems: string[],
  prefix = '',
): string | undefined {
  const raw = readText(fields, 'deviceName', problems, prefix);
  if (raw === undefined) return undefined;
  const trimmed = raw.trim();
  if (!DEVICE_NAME.test(trimmed)) {
    problems.push(`${must('deviceName', prefix)}, got ${quote(raw)}`);
    return undefined;
  }
  return trimmed;
}

/**
 * Reads `devices`: a list of 1-{@link MAX_DEVICES} entries, each validated on its own (an entry's problems are
 * that entry's, so one bad entry never blocks the others). A device listed twice is a problem of the later
 * entry. Undefined (with a request-level problem) when `devices` is not such a list.
 */
function readDevices(fields: Map<RequestField, unknown>, problems: string[]): BulkEntry[] | undefined {
  const raw = fields.get('devices');
  if (raw === undefined || raw === null) return undefined;
  const { minLength, maxLength } = REQUEST_FIELDS.devices;
  if (!Array.isArray(raw) || raw.length < minLength || raw.length > maxLength) {
    problems.push(must('devices') + (Array.isArray(raw) ? ` (got ${raw.length})` : ''));
    return undefined;
  }
  const seen = new Map<string, number>();
  return raw.map((item: unknown, index): BulkEntry => {
    const prefix = `devices[${index}].`;
    const entryProblems: string[] = [];
    if (!isPlainObject(item)) {
      return {
        ok: false,
        problems: [`devices[${index}] must be an object {"machineId": "..."} or {"deviceName": "..."}`],
      };
    }
    const itemFields = collectFields(item, entryProblems, ['machineId', 'deviceName'], prefix);
    const rawId = readText(itemFields, 'machineId', entryProblems, prefix);
    const name = readDeviceName(itemFields, entryProblems, prefix);
    let target: DeviceTarget | undefined;
    if (rawId !== undefined && itemFields.get('deviceName') != null) {
      entryProblems.push(`devices[${index}] must have exactly one of machineId and deviceName`);
    } else if (rawId !== undefined) {
      const trimmed = rawId.trim();
      if (MACHINE_ID.test(trimmed)) target = { machineId: trimmed.toLowerCase() };
      else entryProblems.push(`${must('machineId', prefix)}, got ${quote(rawId)}`);
    } else if (name !== undefined) {
      target = { deviceName: name };
    } else if (itemFields.get('deviceName') == null) {
      entryProblems.push(`devices[${index}] needs a machineId or a deviceName`);
    }
    if (target) {
      // A device listed twice would be released twice (the second answers AlreadyInProgress): refuse it.
      const key = target.machineId ?? `name:${target.deviceName.toLowerCase()}`;
      const first = seen.get(key);
      if (first !== undefined) {
        entryProblems.push(`devices[${index}] repeats devices[${first}]: list each device once`);
      } else seen.set(key, index);
    }
    if (entryProblems.length > 0 || !target) {
      return {
        ok: false,
        problems: entryProblems,
        ...(name !== undefined ? { deviceName: name } : {}),
        ...(target?.machineId !== undefined ? { machineId: target.machineId } : {}),
      };
    }
    return { ok: true, target };
  });
}
