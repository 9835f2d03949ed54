/**
 * parseReleaseRequest: the request body's fields, their rules, and problem texts that say what to fix.
 */
import { parseReleaseRequest } from '../../src/core/request';
import { MACHINE_ID } from '../support/fakes';

describe('parseReleaseRequest', () => {
  it('accepts the documented request and normalises the machine id', () => {
    const result = parseReleaseRequest({
      machineId: MACHINE_ID.toUpperCase(),
      comment: '  Clean and validated  ',
      correlationId: 'INC0012345',
      requestedBy: 'analyst@contoso.com',
    });
    expect(result).toEqual({
      ok: true,
      request: {
        machineId: MACHINE_ID,
        comment: 'Clean and validated',
        correlationId: 'INC0012345',
        requestedBy: 'analyst@contoso.com',
      },
    });
  });

  it("matches keys case-insensitively (MDE's Comment / MachineId)", () => {
    const result = parseReleaseRequest({ MachineId: MACHINE_ID, Comment: 'ok' });
    expect(result.ok && result.request.comment).toBe('ok');
  });

  it('takes the machine id from the route and rejects a contradicting body', () => {
    expect(parseReleaseRequest({ Comment: 'ok' }, { routeMachineId: MACHINE_ID }).ok).toBe(true);
    const other = 'a'.repeat(40);
    const result = parseReleaseRequest({ machineId: other, comment: 'ok' }, { routeMachineId: MACHINE_ID });
    expect(result.ok).toBe(false);
    expect(!result.ok && result.problems.join()).toMatch(/does not match the machine id in the URL/);
  });

  it('lists every problem at once', () => {
    const result = parseReleaseRequest({ machineId: '../../etc', comment: '', correlationId: 'x\u0001y' });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.problems).toHaveLength(3);
    expect(result.problems.join(' | ')).toMatch(
      /machineId must be 40 hexadecimal.*correlationId|correlationId.*machineId/,
    );
  });

  it('rejects a path-injecting route value before any URL is built', () => {
    const result = parseReleaseRequest({ comment: 'x' }, { routeMachineId: `${MACHINE_ID}/../isolate` });
    expect(result.ok).toBe(false);
  });

  it('requires machineId and comment', () => {
    const result = parseReleaseRequest({});
    expect(!result.ok && result.problems).toEqual([
      'machineId is required (the MDE device id, 40 hexadecimal characters)',
      'comment is required (1-1000 characters): say why the device is released',
    ]);
  });

  it('enforces comment length and control characters but accepts CRLF, LF and tabs', () => {
    expect(parseReleaseRequest({ machineId: MACHINE_ID, comment: 'x'.repeat(1001) }).ok).toBe(false);
    expect(parseReleaseRequest({ machineId: MACHINE_ID, comment: 'x'.repeat(1000) }).ok).toBe(true);
    expect(parseReleaseRequest({ machineId: MACHINE_ID, comment: 'a\u0007b' }).ok).toBe(false);
    const ok = parseReleaseRequest({ machineId: MACHINE_ID, comment: 'line1\r\nline2\tend' });
    expect(ok.ok && ok.request.comment).toBe('line1\nline2\tend');
  });

  it('uses the fallback correlation id, else a UUID', () => {
    const a = parseReleaseRequest(
      { machineId: MACHINE_ID, comment: 'x' },
      { fallbackCorrelationId: 'msg-1' },
    );
    expect(a.ok && a.request.correlationId).toBe('msg-1');
    const b = parseReleaseRequest({ machineId: MACHINE_ID, comment: 'x' });
    expect(b.ok && b.request.correlationId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('keeps the correlation id of an invalid request for its outcome', () => {
    const result = parseReleaseRequest({ correlationId: 'INC1' });
    expect(!result.ok && result.correlationId).toBe('INC1');
  });

  it('rejects non-object bodies and wrong types', () => {
    expect(parseReleaseRequest([1]).ok).toBe(false);
    expect(parseReleaseRequest(null).ok).toBe(false);
    const result = parseReleaseRequest({ machineId: 5, comment: true });
    expect(!result.ok && result.problems.join()).toMatch(
      /machineId must be a string.*comment must be a string/,
    );
  });

  it('ignores prototype keys and unknown fields, and flags a field given twice', () => {
    const body = JSON.parse(
      `{"__proto__": {"polluted": 1}, "constructor": 1, "machineId": "${MACHINE_ID}", "comment": "x", "extra": 1}`,
    );
    expect(parseReleaseRequest(body).ok).toBe(true);
    expect(({} as { polluted?: number }).polluted).toBeUndefined();
    const twice = parseReleaseRequest({ comment: 'a', Comment: 'b', machineId: MACHINE_ID });
    expect(!twice.ok && twice.problems.join()).toMatch(/comment is given more than once/);
  });
});
