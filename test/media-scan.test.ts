// The media fast path (gateway/twilio/media-scan.ts) must accept exactly the media messages the full
// path (JSON.parse + TypeBox) accepts with the same meaning, and hand everything else to the full
// path (false), which then gives the same error as before. Each refused shape is named below.
import t from 'tap';
import { scanMedia, newMediaScan, decodeBase64Range } from '../gateway/twilio/media-scan.js';
import { randomBytes } from 'node:crypto';
import { parseTwilioMessage, ParseFailure } from '../gateway/twilio/twilio-protocol.js';
import type { MediaMessage } from '../gateway/twilio/twilio-messages.js';

const SID = `MZ${'ab'.repeat(16)}`;
const PAYLOAD = Buffer.alloc(160, 0x55).toString('base64');
const twilio = (over: Partial<Record<string, string>> = {}) => {
  const v = { seq: '4', track: 'inbound', chunk: '2', ts: '20', payload: PAYLOAD, sid: SID, ...over };
  return `{"event":"media","sequenceNumber":"${v.seq}","media":{"track":"${v.track}","chunk":"${v.chunk}","timestamp":"${v.ts}","payload":"${v.payload}"},"streamSid":"${v.sid}"}`;
};

function scan(text: string) {
  const out = newMediaScan();
  const buf = Buffer.from(text, 'utf8');
  return { ok: scanMedia(buf, out), out, buf };
}

t.test('accepted shapes give the same fields as JSON.parse + the schema', async (t) => {
  const shapes = {
    "Twilio's order": twilio(),
    'streamSid first': `{"event":"media","streamSid":"${SID}","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"20","payload":"${PAYLOAD}"}}`,
    'media keys reordered': `{"media":{"payload":"${PAYLOAD}","timestamp":"20","track":"outbound","chunk":"2"},"event":"media","streamSid":"${SID}","sequenceNumber":"4"}`,
    'no sequenceNumber, no chunk (optional in the schema)': `{"event":"media","media":{"track":"inbound","timestamp":"20","payload":"${PAYLOAD}"},"streamSid":"${SID}"}`,
    '15-digit timestamp': twilio({ ts: '999999999999999' }),
    'a streamSid that is no Twilio sid (any string in media)': twilio({ sid: 'other-stream' }),
  };
  for (const [name, text] of Object.entries(shapes)) {
    const r = scan(text);
    t.ok(r.ok, `${name}: fast path`);
    const full = parseTwilioMessage(text);
    t.notOk(full instanceof ParseFailure, `${name}: the full path accepts it too`);
    const m = full as MediaMessage;
    t.equal(r.out.track, m.media.track === 'inbound' ? 0 : 1, `${name}: track`);
    t.equal(r.out.timestamp, Number(m.media.timestamp), `${name}: timestamp`);
    t.equal(r.buf.toString('latin1', r.out.payloadStart, r.out.payloadEnd), m.media.payload, `${name}: payload`);
    t.equal(r.buf.toString('latin1', r.out.sidStart, r.out.sidEnd), m.streamSid, `${name}: streamSid`);
  }
});

t.test('everything else goes to the full path', async (t) => {
  const refused = {
    'not an object': '"media"',
    'empty object': '{}',
    'whitespace between tokens': twilio().replace('"event":', '"event": '),
    'trailing whitespace': twilio() + ' ',
    'trailing garbage': twilio() + '}',
    'truncated': twilio().slice(0, -2),
    'another event': twilio().replace('"event":"media"', '"event":"mark"'),
    'an extra top-level key': twilio().replace('{"event"', '{"extra":"x","event"'),
    'an extra media key': twilio().replace('"track"', '"foo":"x","track"'),
    'a duplicate key (JSON.parse keeps the last)': twilio().replace('"streamSid"', '"event":"media","streamSid"'),
    'unknown track': twilio({ track: 'both' }),
    'timestamp not digits': twilio({ ts: '2e3' }),
    'negative timestamp': twilio({ ts: '-20' }),
    'empty timestamp': twilio({ ts: '' }),
    'timestamp of 16 digits': twilio({ ts: '1234567890123456' }),
    'sequenceNumber not digits': twilio({ seq: 'x' }),
    'chunk not digits': twilio({ chunk: '1.5' }),
    'empty payload': twilio({ payload: '' }),
    'payload over 4000 bytes of base64': twilio({ payload: 'A'.repeat(5340) }),
    'an escape in the payload': twilio({ payload: 'AAA\\/' }),
    'an escape in the streamSid': twilio({ sid: 'MZ\\u0041' }),
    'a non-ASCII streamSid': twilio({ sid: 'MZé' }),
    'a number instead of a string': twilio().replace('"timestamp":"20"', '"timestamp":20'),
    'media missing': `{"event":"media","sequenceNumber":"4","streamSid":"${SID}"}`,
    'streamSid missing': `{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"20","payload":"${PAYLOAD}"}}`,
    'payload missing': twilio().replace(`,"payload":"${PAYLOAD}"`, ''),
    'media not an object': `{"event":"media","media":"x","streamSid":"${SID}"}`,
  };
  for (const [name, text] of Object.entries(refused)) t.notOk(scan(text).ok, name);
});

t.test('the in-place base64 decoder gives Node\'s bytes, or hands the payload to Node\'s decoder', async (t) => {
  const dst = Buffer.alloc(4100);
  let same = 0;
  for (let len = 1; len <= 200; len++) {
    const raw = randomBytes(len);
    const src = Buffer.from(`x${raw.toString('base64')}y`, 'latin1');
    const n = decodeBase64Range(src, 1, src.length - 1, dst, 7);
    if (n === len && dst.subarray(7, 7 + n).equals(raw)) same++;
  }
  t.equal(same, 200, 'every length 1..200 (no padding, one and two = signs) decodes to the same bytes');
  const refused = {
    'length not a multiple of 4': 'QUJD' + 'QQ',
    'a character outside the alphabet': 'QU*D',
    'URL-safe alphabet (Node takes it: the full path decides)': 'QU-_',
    'padding in the middle': 'QQ==QUJD',
    'three padding characters': 'Q===',
    'empty': '',
  };
  for (const [name, text] of Object.entries(refused)) {
    const src = Buffer.from(text, 'latin1');
    t.equal(decodeBase64Range(src, 0, src.length, dst, 0), -1, name);
  }
  const big = Buffer.from(randomBytes(3000).toString('base64'), 'latin1');
  t.equal(decodeBase64Range(big, 0, big.length, Buffer.alloc(2999), 0), -1, 'does not fit the destination');
});

t.test('the scan decodes the payload into the given buffer as Node does, or says it did not fit', async (t) => {
  const out = newMediaScan();
  let same = 0;
  for (let len = 1; len <= 200; len++) {
    const raw = randomBytes(len);
    const dst = Buffer.alloc(300, 0xee);
    const ok = scanMedia(Buffer.from(twilio({ payload: raw.toString('base64') }), 'utf8'), out, dst, 5);
    if (ok && out.payloadBytes === len && dst.subarray(5, 5 + len).equals(raw) && dst[5 + len] === 0xee && dst[4] === 0xee) same++;
  }
  t.equal(same, 200, 'every length 1..200 (no padding, one and two = signs): the same bytes, nothing written around them');
  const raw = randomBytes(160);
  t.ok(scanMedia(Buffer.from(twilio({ payload: raw.toString('base64') }), 'utf8'), out, Buffer.alloc(100), 0), 'a payload larger than the destination is still a media message');
  t.equal(out.payloadBytes, -1, 'but it did not fit: the full path decides');
  for (const [name, payload] of Object.entries({ 'no padding (Node takes it)': 'QUJDQQ', 'URL-safe alphabet': 'QU-_', 'padding in the middle': 'QQ==QUJD', 'three padding characters': 'Q===' })) {
    t.notOk(scanMedia(Buffer.from(twilio({ payload }), 'utf8'), out, Buffer.alloc(100), 0), `${name}: the full path decides`);
  }
});
