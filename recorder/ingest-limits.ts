// Limits applied where media and metadata enter the gateway (stream <Parameter>s, CTI API,
// TaskRouter, any other event source), so that what is stored is always what can be searched,
// what an event claims about time cannot be used to flood alarms, and a frame always fits the
// recorder's buffers.
import { createHash } from 'node:crypto';

/**
 * Largest decoded frame payload the recorder takes: 0.5 s of audio, far above Twilio's 20 ms
 * frames. The media journal keeps this much room free in its buffer; the Twilio message schema
 * refuses larger payloads before they reach it.
 */
export const MAX_PAYLOAD_BYTES = 4000;

/** Longest `ctiSessionId` / `employeeId` kept as is, in characters (Unicode code points). */
export const MAX_ID_CHARS = 256;
const HASH_HEX = 16;
/** `<head>...[sha256:<16 hex>]`: the marker says the value was clipped and keeps it distinct */
const MARKER_CHARS = '...[sha256:]'.length + HASH_HEX;
const HEAD_CHARS = MAX_ID_CHARS - MARKER_CHARS;

/**
 * An id longer than MAX_ID_CHARS is clipped (never refused: metadata must not cost a call's
 * audio or a CTI event's effect): its first characters, then a marker with a hash of the whole
 * value, so two long ids that share a prefix stay two contacts. Idempotent, and applied to
 * search parameters too, so a search with the full original value finds what it was stored as.
 */
export function clipId(value: string): string;
export function clipId(value: string | undefined): string | undefined;
export function clipId(value: string | undefined): string | undefined {
  if (value === undefined || value.length <= MAX_ID_CHARS) return value;
  // count code points without copying: a surrogate pair is one character and is never split
  let chars = 0;
  let headEnd = -1;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < value.length) {
      const n = value.charCodeAt(i + 1);
      if (n >= 0xdc00 && n <= 0xdfff) i++;
    }
    chars++;
    if (chars === HEAD_CHARS) headEnd = i + 1;
    if (chars > MAX_ID_CHARS) break;
  }
  if (chars <= MAX_ID_CHARS) return value;
  const hash = createHash('sha256').update(value, 'utf8').digest('hex').slice(0, HASH_HEX);
  return `${value.slice(0, headEnd)}...[sha256:${hash}]`;
}

/** A CTI event's `at` may lie at most this far in the past ... */
export const MAX_EVENT_AGE_MS = 24 * 60 * 60 * 1000;
/** ... or this far in the future (clock skew between the CTI system and the gateway). */
export const MAX_EVENT_LEAD_MS = 5 * 60 * 1000;

/**
 * The instant of an event (ms since the epoch): `at` (ISO 8601) or now. Throws RangeError (the
 * API answers 400) when `at` does not parse or lies outside [now - 24 h, now + 5 min]: a
 * back-dated hold would otherwise raise a long_hold alarm at once, and a stream of them floods
 * the alarm list.
 */
export function eventTime(at: string | undefined, now: number): number {
  if (at === undefined) return now;
  const t = Date.parse(at);
  if (!Number.isFinite(t)) throw new RangeError(`at ${JSON.stringify(at.slice(0, 60))} is not an ISO 8601 date-time`);
  if (t < now - MAX_EVENT_AGE_MS || t > now + MAX_EVENT_LEAD_MS) {
    throw new RangeError(`at ${JSON.stringify(at.slice(0, 60))} is too far from now (${new Date(now).toISOString()}): event times must lie within the last 24 h and at most 5 min ahead`);
  }
  return t;
}
