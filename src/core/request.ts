/**
 * The release request: its schema (one description that drives validation, the OpenAPI document and the
 * playbook checks) and its parser.
 */
import { randomUUID } from 'node:crypto';

/** A validated release request. */
export interface ReleaseRequest {
  /** MDE device id: 40 lower-case hex characters (a SHA-1). */
  machineId: string;
  /** Comment recorded on the MachineAction (trimmed, 1-1000 characters). */
  comment: string;
  correlationId: string;
  requestedBy: string | null;
}

/** Description of one request field, for validation and for the OpenAPI schema. */
export interface FieldSpec {
  /** Canonical (camelCase) name; keys are matched case-insensitively. */
  name: keyof ReleaseRequest;
  description: string;
  minLength: number;
  maxLength: number;
  /** Regular expression the (trimmed) value must match, as an OpenAPI `pattern`. */
  pattern?: string;
  example: string;
}

/** MDE device ids are SHA-1 hashes: https://learn.microsoft.com/en-us/defender-endpoint/api/machine */
export const MACHINE_ID_PATTERN = '^[0-9a-fA-F]{40}$';
/** Printable ASCII only: correlation ids end up in URLs, log lines and ticket fields. */
export const CORRELATION_ID_PATTERN = '^[\\x20-\\x7E]{1,128}$';

/** The request fields. `machineId` and `comment` are required (machineId may come from the route). */
export const REQUEST_FIELDS: Readonly<Record<keyof ReleaseRequest, FieldSpec>> = {
  machineId: {
    name: 'machineId',
    description:
      'MDE device id (40 hexadecimal characters). Required in the body for POST /api/unisolate; optional for ' +
      'POST /api/machines/{machineId}/unisolate, where it must equal the route value.',
    minLength: 40,
    maxLength: 40,
    pattern: MACHINE_ID_PATTERN,
    example: '1e5bc9d7e413ddd7902c2932e418702b84d0cc07',
  },
  comment: {
    name: 'comment',
    description:
      'Why the device is released; recorded on the MDE machine action. 1-1000 characters after trimming; ' +
      'no control characters other than newline and tab.',
    minLength: 1,
    maxLength: 1000,
    example: 'Unisolate machine since it was clean and validated',
  },
  correlationId: {
    name: 'correlationId',
    description:
      'Your reference (ticket or incident id), echoed in every outcome. Up to 128 printable ASCII characters. ' +
      'Default: the Service Bus message correlation id or message id, else a new UUID.',
    minLength: 1,
    maxLength: 128,
    pattern: CORRELATION_ID_PATTERN,
    example: 'INC0012345',
  },
  requestedBy: {
    name: 'requestedBy',
    description: 'Who asked for the release (audit text, up to 256 characters).',
    minLength: 1,
    maxLength: 256,
    example: 'analyst@contoso.com',
  },
};

/** Fields that must be present (machineId may instead come from the route). */
export const REQUIRED_FIELDS: readonly (keyof ReleaseRequest)[] = ['machineId', 'comment'];

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
    };

// Keys that must never be read from caller input, whatever their casing.
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
// Control characters (C0, DEL, C1) other than tab and newline; CRLF is normalised to LF first.
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u2028\u2029]/;
const machineIdRe = new RegExp(MACHINE_ID_PATTERN);
const correlationIdRe = new RegExp(CORRELATION_ID_PATTERN);

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
): Map<keyof ReleaseRequest, unknown> {
  const canonical = new Map<string, keyof ReleaseRequest>(
    Object.keys(REQUEST_FIELDS).map((name) => [name.toLowerCase(), name as keyof ReleaseRequest]),
  );
  const found = new Map<keyof ReleaseRequest, unknown>();
  const seenAs = new Map<keyof ReleaseRequest, string[]>();
  for (const key of Object.keys(body)) {
    const lower = key.toLowerCase();
    if (FORBIDDEN_KEYS.has(lower)) continue;
    const name = canonical.get(lower);
    if (!name) continue;
    seenAs.set(name, [...(seenAs.get(name) ?? []), key]);
    found.set(name, Object.getOwnPropertyDescriptor(body, key)?.value);
  }
  for (const [name, keys] of seenAs) {
    if (keys.length > 1) problems.push(`${name} is given more than once (${keys.join(', ')}): send it once`);
  }
  return found;
}

function readText(
  fields: Map<keyof ReleaseRequest, unknown>,
  name: keyof ReleaseRequest,
  problems: string[],
): string | undefined {
  const value = fields.get(name);
  if (value === undefined || value === null) return undefined;
  const spec = REQUEST_FIELDS[name];
  if (typeof value !== 'string') {
    problems.push(`${name} must be a string (${spec.minLength}-${spec.maxLength} characters)`);
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
  const fields = isPlainObject(body)
    ? collectFields(body, problems)
    : new Map<keyof ReleaseRequest, unknown>();
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
    if (correlationIdRe.test(trimmed)) correlationId = trimmed;
    else problems.push('correlationId must be 1-128 printable ASCII characters');
  }
  const fallback = context.fallbackCorrelationId?.trim();
  correlationId ??= fallback && correlationIdRe.test(fallback) ? fallback : randomUUID();

  // machineId: from the route and/or the body; validated before any URL is built from it.
  const problemsBeforeMachineId = problems.length;
  let machineId: string | null = null;
  let routeId: string | undefined;
  if (context.routeMachineId !== undefined) {
    if (machineIdRe.test(context.routeMachineId)) routeId = context.routeMachineId.toLowerCase();
    else {
      problems.push(
        `the machine id in the URL must be 40 hexadecimal characters (MDE device id), got ${quote(context.routeMachineId)}`,
      );
    }
  }
  const rawMachineId = readText(fields, 'machineId', problems);
  let bodyId: string | undefined;
  if (rawMachineId !== undefined) {
    const trimmed = rawMachineId.trim();
    if (machineIdRe.test(trimmed)) bodyId = trimmed.toLowerCase();
    else
      problems.push(
        `machineId must be 40 hexadecimal characters (MDE device id), got ${quote(rawMachineId)}`,
      );
  }
  if (routeId && bodyId && routeId !== bodyId) {
    problems.push(`machineId in the body (${bodyId}) does not match the machine id in the URL (${routeId})`);
  } else {
    machineId = routeId ?? bodyId ?? null;
  }
  if (machineId === null && problems.length === problemsBeforeMachineId) {
    problems.push('machineId is required (the MDE device id, 40 hexadecimal characters)');
  }

  let comment: string | undefined;
  const rawComment = readText(fields, 'comment', problems);
  if (rawComment === undefined) {
    if (fields.get('comment') === undefined || fields.get('comment') === null) {
      problems.push('comment is required (1-1000 characters): say why the device is released');
    }
  } else {
    const normalised = rawComment.replace(/\r\n/g, '\n').trim();
    if (normalised.length < 1 || normalised.length > 1000) {
      problems.push(`comment must be 1-1000 characters after trimming (got ${normalised.length})`);
    } else if (CONTROL_CHARS.test(normalised)) {
      problems.push('comment must not contain control characters other than newline and tab');
    } else comment = normalised;
  }

  let requestedBy: string | null = null;
  const rawRequestedBy = readText(fields, 'requestedBy', problems);
  if (rawRequestedBy !== undefined) {
    const trimmed = rawRequestedBy.trim();
    if (trimmed.length < 1 || trimmed.length > 256) problems.push('requestedBy must be 1-256 characters');
    else if (CONTROL_CHARS.test(trimmed) || /[\r\n\t]/.test(trimmed)) {
      problems.push('requestedBy must not contain control characters');
    } else requestedBy = trimmed;
  }

  if (problems.length > 0 || machineId === null || comment === undefined) {
    return { ok: false, problems, correlationId, machineId, requestedBy };
  }
  return { ok: true, request: { machineId, comment, correlationId, requestedBy } };
}
