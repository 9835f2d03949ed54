/**
 * Decoding a request's body at the edge, once: the size caps, the content type, JSON with a precise error
 * position, and the nesting limit. Both triggers' bodies come through here; what comes out is either a JSON
 * value for the parser, or the error that answers the request.
 */
import { UnisolateError } from './errors';
import { depthProblem, parseJson } from './json';

/** Largest accepted HTTP body: a release request is a few hundred bytes (a 100-device bulk a few KiB). */
export const MAX_BODY_BYTES = 64 * 1024;

/** Largest accepted message body: Service Bus Standard's message size limit. */
export const MAX_MESSAGE_BYTES = 256 * 1024;

/** A decoded body, or why it cannot be used. */
export type Decoded = { body: unknown } | { error: UnisolateError };

const JSON_TYPE = /^(application\/(?:[\w.+-]+\+)?json|text\/json)\s*(;|$)/i;
/**
 * What a fetch `Request` (which the Functions library's `HttpRequest` wraps) reports for a string body sent
 * without a Content-Type. It says nothing about the caller, so like a missing header it means "undeclared":
 * the body must then parse as JSON. Any other declared non-JSON type is refused with 415.
 */
const UNDECLARED_TYPE = 'text/plain;charset=UTF-8';

/** The error of a body over `limit` bytes. */
export function tooLarge(limit: number, what: 'body' | 'message body'): UnisolateError {
  return new UnisolateError(
    'RequestTooLarge',
    what === 'body'
      ? `The body is larger than ${limit} bytes; a release request is a small JSON object.`
      : `The message body is larger than ${limit / 1024} KiB; a release request is a small JSON object.`,
  );
}

function fromText(text: string): Decoded {
  const parsed = parseJson(text);
  return parsed.ok
    ? { body: parsed.value }
    : { error: new UnisolateError('InvalidRequest', `Invalid request: ${parsed.message}.`) };
}

/** An HTTP body: its declared content type must be JSON (or none), and it must not be empty. */
export function decodeHttpBody(contentType: string | null, bytes: Buffer): Decoded {
  const type = contentType ?? '';
  if (type !== UNDECLARED_TYPE && type !== '' && !JSON_TYPE.test(type.trim())) {
    return {
      error: new UnisolateError(
        'UnsupportedMediaType',
        `The body must be JSON: send the header Content-Type: application/json${type ? ` (got ${JSON.stringify(type.slice(0, 80))})` : ''}.`,
      ),
    };
  }
  const text = bytes.toString('utf8');
  if (text.trim() === '') {
    return {
      error: new UnisolateError(
        'InvalidRequest',
        'Invalid request: the body is empty; send {"comment": "..."} (and "machineId" for /api/unisolate).',
      ),
    };
  }
  return fromText(text);
}

/**
 * A Service Bus message body: an object (JSON the library already parsed) or bytes (Buffer, Uint8Array,
 * ArrayBuffer) holding JSON. A string is never a request (see `encodedTwice`). Anything else (number, boolean,
 * null, array) is passed on and reported Invalid: never thrown, so never redelivered.
 * The size cap and the nesting limit apply to every form: the Functions library JSON-parses a JSON message
 * before the handler sees it, so an object is checked for depth and measured by its serialized size.
 */
export function decodeMessage(message: unknown): Decoded {
  let text: string | undefined;
  if (Buffer.isBuffer(message) || message instanceof Uint8Array) text = Buffer.from(message).toString('utf8');
  else if (message instanceof ArrayBuffer) text = Buffer.from(message).toString('utf8');
  else if (typeof message === 'string') text = message;
  if (text === undefined) {
    // Checked first: serializing (and every later step) must never walk an unbounded nesting.
    const tooDeep = depthProblem(message);
    if (tooDeep !== undefined) {
      return { error: new UnisolateError('InvalidRequest', `Invalid request: ${tooDeep}.`) };
    }
    const serialized = JSON.stringify(message) as string | undefined;
    return serialized !== undefined && Buffer.byteLength(serialized) > MAX_MESSAGE_BYTES
      ? { error: tooLarge(MAX_MESSAGE_BYTES, 'message body') }
      : { body: message };
  }
  if (Buffer.byteLength(text) > MAX_MESSAGE_BYTES)
    return { error: tooLarge(MAX_MESSAGE_BYTES, 'message body') };
  const decoded = fromText(text);
  if (typeof message === 'string' && 'body' in decoded) return { error: encodedTwice() };
  return decoded;
}

/**
 * The Functions library JSON-parses a message's text before the handler runs, so a string reaches the handler
 * only when the text was not JSON (refused with the parse error) or was a JSON string literal. If that string
 * is itself JSON, the sender encoded its request twice: refused, so a release never rests on a body the
 * sender did not mean as one object.
 */
function encodedTwice(): UnisolateError {
  return new UnisolateError(
    'InvalidRequest',
    'Invalid request: the message body is a JSON string that holds JSON (encoded twice); send the JSON object itself, e.g. {"machineId": "...", "comment": "..."}.',
  );
}
