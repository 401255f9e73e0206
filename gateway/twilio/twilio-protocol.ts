// Text frame -> typed Twilio message, or the precise reason it is not one. Pure: no state,
// no I/O; the stream handler decides what an error means for the stream.
import { checkers, type TwilioEvent, type TwilioMessage } from './twilio-messages.js';

export type ProtocolErrorKind =
  | 'not_json' | 'binary_frame' | 'invalid_message' | 'bad_base64' | 'media_before_start'
  | 'duplicate_start' | 'wrong_stream_sid' | 'unknown_account' | 'message_too_large'
  | 'timestamp_jump' | 'unexpected_track' | 'start_timeout';

export const PROTOCOL_ERROR_KINDS: readonly ProtocolErrorKind[] = [
  'not_json', 'binary_frame', 'invalid_message', 'bad_base64', 'media_before_start', 'duplicate_start',
  'wrong_stream_sid', 'unknown_account', 'message_too_large', 'timestamp_jump', 'unexpected_track', 'start_timeout',
];

/** Why a text frame is not a message we act on. Allocated only on the error path. */
export class ParseFailure {
  constructor(readonly kind: ProtocolErrorKind | 'unknown_event', readonly detail: string) {}
}

/** The message itself when valid (no wrapper object per message: this runs 50 times a second per track). */
export type ParseResult = TwilioMessage | ParseFailure;

function isKnownEvent(e: unknown): e is TwilioEvent {
  return typeof e === 'string' && Object.prototype.hasOwnProperty.call(checkers, e);
}

export function parseTwilioMessage(text: string): ParseResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return new ParseFailure('not_json', 'message is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return new ParseFailure('invalid_message', 'message is not a JSON object');
  }
  const event = (value as { event?: unknown }).event;
  if (!isKnownEvent(event)) {
    if (typeof event === 'string') return new ParseFailure('unknown_event', event.slice(0, 64));
    return new ParseFailure('invalid_message', 'field "event" is missing or not a string');
  }
  const checker = checkers[event];
  if (!checker.Check(value)) {
    const first = checker.Errors(value)[Symbol.iterator]().next().value as { path: string; message: string } | undefined; // undefined when done
    const where = first ? `${first.path || '/'}: ${first.message}` : 'does not match the schema';
    return new ParseFailure('invalid_message', `${event} ${where}`);
  }
  return value as TwilioMessage;
}

/**
 * Decode a base64 payload into `dst` at `offset` and return its length, or -1 when it is not strict base64.
 * Node's decoder skips characters outside the alphabet, so a payload is valid exactly when its
 * length is a multiple of 4 and it decodes to the size its length and padding promise.
 */
export function decodeBase64Into(payload: string, dst: Buffer, offset = 0): number {
  if (payload.length % 4 !== 0) return -1;
  const expected = Buffer.byteLength(payload, 'base64');
  if (expected === 0 || expected > dst.length - offset) return -1;
  const n = dst.write(payload, offset, 'base64');
  return n === expected ? n : -1;
}
