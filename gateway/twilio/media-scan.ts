// Fast path for the one message that arrives 50 times a second per track: a byte scan of the
// media message's fixed shape straight from the socket's buffer, instead of utf8 decoding,
// JSON.parse (an object and eight strings per frame) and the compiled schema check.
//
// It accepts only what the full path would accept with the very same meaning: the keys of
// MediaMessage (any order, each once), string values without escapes or control characters,
// `event` "media", `track` inbound|outbound, counters of 1..15 digits, a payload of
// 1..MAX_PAYLOAD_BASE64 characters, no whitespace, nothing after the closing brace. Anything
// else (an extra key, an escape, whitespace, a non-ASCII byte, a duplicate key) returns false and
// the message takes the full path: parseTwilioMessage, so bad input gets the same error.
import { MAX_PAYLOAD_BYTES } from './twilio-messages.js';

const MAX_PAYLOAD_BASE64 = Math.ceil(MAX_PAYLOAD_BYTES / 3) * 4;

/** Where the fields of a scanned media message are (offsets into the buffer). Reused. */
export interface MediaScan {
  /** 0 inbound, 1 outbound */
  track: number;
  /** media.timestamp, ms */
  timestamp: number;
  payloadStart: number;
  payloadEnd: number;
  sidStart: number;
  sidEnd: number;
  /** bytes of the payload decoded into the destination given to scanMedia; -1: it did not fit */
  payloadBytes: number;
}

export function newMediaScan(): MediaScan {
  return { track: 0, timestamp: 0, payloadStart: 0, payloadEnd: 0, sidStart: 0, sidEnd: 0, payloadBytes: -1 };
}

const QUOTE = 0x22;
const COLON = 0x3a;
const COMMA = 0x2c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;

const key = (s: string) => Buffer.from(s, 'latin1');
const K_EVENT = key('event');
const K_SEQ = key('sequenceNumber');
const K_MEDIA = key('media');
const K_SID = key('streamSid');
const K_TRACK = key('track');
const K_CHUNK = key('chunk');
const K_TS = key('timestamp');
const K_PAYLOAD = key('payload');
const V_MEDIA = key('media');
const V_INBOUND = key('inbound');
const V_OUTBOUND = key('outbound');

function eq(b: Buffer, s: number, e: number, k: Buffer): boolean {
  if (e - s !== k.length) return false;
  for (let i = 0; i < k.length; i++) if (b[s + i] !== k[i]) return false;
  return true;
}

/** End (index of the closing quote) of a plain string starting after its opening quote at `i`, or -1. */
function strEnd(b: Buffer, i: number, len: number): number {
  for (; i < len; i++) {
    const c = b[i]!; // i < len <= b.length
    if (c === QUOTE) return i;
    // escapes, control characters and non-ASCII bytes: the full path decides
    if (c === 0x5c || c < 0x20 || c > 0x7e) return -1;
  }
  return -1;
}

/** Value of 1..15 decimal digits in [s, e), or -1. */
function digits(b: Buffer, s: number, e: number): number {
  const n = e - s;
  if (n < 1 || n > 15) return -1;
  let v = 0;
  for (let i = s; i < e; i++) {
    const d = b[i]! - 0x30; // s <= i < e, inside the buffer
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v;
}

// bits of the keys seen
const EVENT = 1, SEQ = 2, MEDIA = 4, SID = 8, TRACK = 16, CHUNK = 32, TS = 64, PAYLOAD = 128;

/** where the payload is decoded when the caller gives no destination (a check only) */
const NO_DST = Buffer.alloc(MAX_PAYLOAD_BYTES + 3);

/**
 * Scan `b` as a media message. True: `out` holds its fields and the message is exactly one the
 * full path accepts as a media message, with a strict base64 payload that is decoded into
 * `dst[at ..]` (`out.payloadBytes`; -1 when it does not fit there). False: take the full path
 * (nothing is decided here; `dst` past `at` may have been written).
 */
export function scanMedia(b: Buffer, out: MediaScan, dst: Buffer = NO_DST, at = 0): boolean {
  const len = b.length;
  if (len < 2 || b[0] !== LBRACE) return false;
  let i = 1;
  let seen = 0;
  let inMedia = false;
  for (;;) {
    // "key":
    if (b[i] !== QUOTE) return false;
    const ks = i + 1;
    const ke = strEnd(b, ks, len);
    if (ke < 0 || b[ke + 1] !== COLON) return false;
    i = ke + 2;
    let bit: number;
    if (!inMedia) {
      if (eq(b, ks, ke, K_EVENT)) bit = EVENT;
      else if (eq(b, ks, ke, K_SEQ)) bit = SEQ;
      else if (eq(b, ks, ke, K_MEDIA)) bit = MEDIA;
      else if (eq(b, ks, ke, K_SID)) bit = SID;
      else return false;
    } else if (eq(b, ks, ke, K_TRACK)) bit = TRACK;
    else if (eq(b, ks, ke, K_CHUNK)) bit = CHUNK;
    else if (eq(b, ks, ke, K_TS)) bit = TS;
    else if (eq(b, ks, ke, K_PAYLOAD)) bit = PAYLOAD;
    else return false;
    if ((seen & bit) !== 0) return false; // a duplicate key: JSON.parse keeps the last one
    seen |= bit;
    if (bit === MEDIA) {
      if (b[i] !== LBRACE) return false;
      inMedia = true;
      i++;
      continue;
    }
    // "value"
    if (b[i] !== QUOTE) return false;
    const vs = i + 1;
    const ve = bit === PAYLOAD ? payloadEnd(b, vs, len, dst, at, out) : strEnd(b, vs, len);
    if (ve < 0) return false;
    i = ve + 1;
    switch (bit) {
      case EVENT: if (!eq(b, vs, ve, V_MEDIA)) return false; break;
      case SEQ: case CHUNK: if (digits(b, vs, ve) < 0) return false; break;
      case TS: if ((out.timestamp = digits(b, vs, ve)) < 0) return false; break;
      case TRACK:
        if (eq(b, vs, ve, V_INBOUND)) out.track = 0;
        else if (eq(b, vs, ve, V_OUTBOUND)) out.track = 1;
        else return false;
        break;
      case PAYLOAD: // length and alphabet checked by payloadEnd
        out.payloadStart = vs;
        out.payloadEnd = ve;
        break;
      default: // SID: any string
        out.sidStart = vs;
        out.sidEnd = ve;
    }
    // , or } (closing media, then maybe the whole message)
    if (b[i] === COMMA) {
      i++;
      continue;
    }
    if (b[i] !== RBRACE) return false;
    i++;
    if (inMedia) {
      if ((seen & (TRACK | TS | PAYLOAD)) !== (TRACK | TS | PAYLOAD)) return false;
      inMedia = false;
      if (b[i] === COMMA) {
        i++;
        continue;
      }
      if (b[i] !== RBRACE) return false;
      i++;
    }
    return i === len && (seen & (EVENT | MEDIA | SID)) === (EVENT | MEDIA | SID);
  }
}

// base64 alphabet value of each byte; 64 = '=', 255 = not base64 (URL-safe '-' and '_', which
// Node's decoder takes, are left to the full path too)
const B64 = new Uint8Array(256).fill(255);
for (let i = 0; i < 64; i++) B64['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(i)] = i;
B64[0x3d] = 64;

/**
 * The payload string starting at `s` (after its opening quote): strict padded base64 of 1 ..
 * MAX_PAYLOAD_BASE64 characters, decoded into `dst` from `at` on as it is read. Returns the index
 * of its closing quote, or -1 (anything else: an escape, another alphabet, no padding, too long).
 * `out.payloadBytes` gets the decoded length, or -1 when it does not fit `dst`.
 */
function payloadEnd(src: Buffer, s: number, len: number, dst: Buffer, at: number, out: MediaScan): number {
  const last = Math.min(len, s + MAX_PAYLOAD_BASE64 + 1); // the closing quote comes before this
  const dstEnd = dst.length;
  let fits = true;
  let i = s;
  let o = at;
  for (; i + 4 <= last; i += 4) {
    const a = B64[src[i]!]!, b = B64[src[i + 1]!]!, c = B64[src[i + 2]!]!, d = B64[src[i + 3]!]!; // i + 3 < last <= len; B64 covers every byte
    if ((a | b | c | d) > 63) break;
    if (o + 3 > dstEnd) fits = false;
    else {
      const v = (a << 18) | (b << 12) | (c << 6) | d;
      dst[o] = v >> 16;
      dst[o + 1] = (v >> 8) & 0xff;
      dst[o + 2] = v & 0xff;
    }
    o += 3;
  }
  let e = i;
  if (src[i] !== QUOTE) {
    // the last quad, padded: "xx==" or "xxx=", then the closing quote
    if (i + 4 >= last || src[i + 4] !== QUOTE || src[i + 3] !== 0x3d) return -1;
    const a = B64[src[i]!]!, b = B64[src[i + 1]!]!; // i + 4 < last <= len
    const one = src[i + 2] === 0x3d;
    const c = one ? 0 : B64[src[i + 2]!]!;
    if ((a | b | c) > 63) return -1;
    const v = (a << 18) | (b << 12) | (c << 6);
    const n = one ? 1 : 2;
    if (o + n > dstEnd) fits = false;
    else {
      dst[o] = v >> 16;
      if (!one) dst[o + 1] = (v >> 8) & 0xff;
    }
    o += n;
    e = i + 4;
  }
  if (e === s || e - s > MAX_PAYLOAD_BASE64) return -1;
  out.payloadBytes = fits ? o - at : -1;
  return e;
}

/**
 * Decode strict base64 `src[s .. e)` into `dst` at `at` (no string, no allocation); returns the
 * bytes written, or -1 when it is not plain padded base64 or does not fit (the full path then
 * decides with Node's decoder, as before).
 */
export function decodeBase64Range(src: Buffer, s: number, e: number, dst: Buffer, at: number): number {
  const len = e - s;
  if (len === 0 || (len & 3) !== 0) return -1;
  const pad = src[e - 1] === 0x3d ? (src[e - 2] === 0x3d ? 2 : 1) : 0;
  const n = (len >> 2) * 3 - pad;
  if (n > dst.length - at) return -1;
  const full = e - (pad > 0 ? 4 : 0);
  let o = at;
  for (let i = s; i < full; i += 4) {
    const a = B64[src[i]!]!, b = B64[src[i + 1]!]!, c = B64[src[i + 2]!]!, d = B64[src[i + 3]!]!; // i + 3 < full <= e; B64 covers every byte
    if ((a | b | c | d) > 63) return -1;
    const v = (a << 18) | (b << 12) | (c << 6) | d;
    dst[o] = v >> 16;
    dst[o + 1] = (v >> 8) & 0xff;
    dst[o + 2] = v & 0xff;
    o += 3;
  }
  if (pad > 0) {
    const a = B64[src[full]!]!, b = B64[src[full + 1]!]!, c = B64[src[full + 2]!]!; // full + 3 < e; B64 covers every byte
    if ((a | b) > 63 || (pad === 1 && c > 63)) return -1;
    const v = (a << 18) | (b << 12) | (pad === 1 ? c << 6 : 0);
    dst[o++] = v >> 16;
    if (pad === 1) dst[o++] = (v >> 8) & 0xff;
  }
  return n;
}
