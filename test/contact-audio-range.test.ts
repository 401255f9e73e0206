// GET /v1/cti-sessions/:id/audio: seeking (Range → 206 with exactly those bytes, mixed on
// demand) and the bound on a contact's span (422 instead of gigabytes or a 500).
import t from 'tap';
import { runStream } from '../loadtest/stream-runner.js';
import { trackAudio } from '../loadtest/audio-fixtures.js';
import { MULAW_TO_PCM16 } from '../codecs/g711.js';
import { startTestGateway, waitForRecordings, decodeWav } from './fixtures/harness.js';

const pcm = (b: Buffer) => Array.from(b, (x) => MULAW_TO_PCM16[x]!);
const clip = (v: number) => Math.max(-32768, Math.min(32767, v));

async function get(url: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await fetch(url, { headers, method });
  return { res, body: Buffer.from(await res.arrayBuffer()) };
}

/** a small deterministic PRNG (mulberry32): the same ranges on every run */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('Range on the contact WAV: 206 with exactly those bytes; pieces decode to the full answer sample by sample', async (t) => {
  let wall = Date.parse('2024-06-01T12:00:00.000Z');
  const g = await startTestGateway(t, {}, { wallNow: () => new Date(wall) });
  const cp = { ctiSessionId: 'SEEK-1' };
  const a = await runStream({ url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 21, frames: 100, realtime: false, customParameters: cp });
  await waitForRecordings(g.http, a.callSid, 1);
  wall += 1250; // a consult leg (agent side only) joins 1.25 s into the first: 0.75 s of overlap
  const b = await runStream({ url: g.wsUrl, tracks: ['outbound'], seed: 22, frames: 100, realtime: false, customParameters: cp });
  await waitForRecordings(g.http, b.callSid, 1);
  const url = `${g.http}/v1/cti-sessions/SEEK-1/audio`;

  const full = await get(url);
  t.equal(full.res.status, 200);
  t.equal(full.res.headers.get('accept-ranges'), 'bytes', 'seekable: Accept-Ranges advertised');
  const size = full.body.length;
  t.equal(Number(full.res.headers.get('content-length')), size);
  const etag = full.res.headers.get('etag');
  t.ok(etag, 'an ETag, for If-Range');

  // the full answer is what the legs make
  const d = decodeWav(full.body);
  const frames = 10000 + 16000;
  const left = new Array<number>(frames).fill(0);
  const right = new Array<number>(frames).fill(0);
  pcm(trackAudio(21, 'inbound', 100)).forEach((v, i) => { left[i] = v; });
  pcm(trackAudio(21, 'outbound', 100)).forEach((v, i) => { right[i] = v; });
  pcm(trackAudio(22, 'outbound', 100)).forEach((v, i) => { right[10000 + i] = clip(right[10000 + i]! + v); });
  t.same(d.channel[0], left, 'left channel of the full answer');
  t.same(d.channel[1], right, 'right channel of the full answer (legs summed where they overlap)');

  // single ranges: header only, across the header, mid-sample starts and ends, suffix, open end
  const random = rng(7);
  const ranges: [string, number, number][] = [
    ['bytes=0-0', 0, 0], ['bytes=0-43', 0, 43], ['bytes=40-50', 40, 50], ['bytes=44-47', 44, 47],
    ['bytes=45-8001', 45, 8001], ['bytes=-1', size - 1, size - 1], ['bytes=-333', size - 333, size - 1],
    [`bytes=${size - 5}-`, size - 5, size - 1], [`bytes=100-${size + 1000}`, 100, size - 1],
  ];
  for (let i = 0; i < 12; i++) {
    const s = Math.floor(random() * size);
    const e = Math.min(size - 1, s + Math.floor(random() * 40000));
    ranges.push([`bytes=${s}-${e}`, s, e]);
  }
  for (const [header, s, e] of ranges) {
    const r = await get(url, { range: header });
    t.equal(r.res.status, 206, `${header}: 206`);
    t.equal(r.res.headers.get('content-range'), `bytes ${s}-${e}/${size}`, `${header}: Content-Range`);
    t.equal(Number(r.res.headers.get('content-length')), e - s + 1, `${header}: Content-Length`);
    t.ok(r.body.equals(full.body.subarray(s, e + 1)), `${header}: exactly those bytes of the full answer`);
  }

  // a player fetching the file piece by piece (odd piece size, so pieces split samples)
  const pieces: Buffer[] = [];
  for (let s = 0; s < size; s += 7919) {
    const r = await get(url, { range: `bytes=${s}-${Math.min(size, s + 7919) - 1}` });
    t.equal(r.res.status, 206);
    pieces.push(r.body);
  }
  const joined = decodeWav(Buffer.concat(pieces));
  const firstDiff = (x: number[], y: number[]) => x.findIndex((v, i) => v !== y[i]);
  t.equal(joined.channel[0]!.length, frames);
  t.equal(firstDiff(joined.channel[0]!, d.channel[0]!), -1, 'left decoded from the pieces = left of the full answer, sample by sample');
  t.equal(firstDiff(joined.channel[1]!, d.channel[1]!), -1, 'right decoded from the pieces = right of the full answer, sample by sample');

  // If-Range: a stale validator gets the whole (current) file, the current one gets the range
  const stale = await get(url, { range: 'bytes=0-9', 'if-range': '"contact-old"' });
  t.equal(stale.res.status, 200);
  t.equal(stale.body.length, size);
  const fresh = await get(url, { range: 'bytes=0-9', 'if-range': etag! });
  t.equal(fresh.res.status, 206);

  // nothing selected: 416 with the JSON error and the size
  for (const header of [`bytes=${size}-`, `bytes=${size + 10}-${size + 20}`]) {
    const r = await get(url, { range: header });
    t.equal(r.res.status, 416, `${header}: 416`);
    t.equal(r.res.headers.get('content-range'), `bytes */${size}`);
    t.match(JSON.parse(r.body.toString()), { error: 'range_not_satisfiable', message: /selects nothing/ });
  }
  const head = await get(url, { range: 'bytes=10-19' }, 'HEAD');
  t.equal(head.res.status, 206);
  t.equal(head.res.headers.get('content-length'), '10');
});

t.test('a range deep into a long contact mixes only what it covers', async (t) => {
  let wall = Date.parse('2024-06-02T00:00:00.000Z');
  const g = await startTestGateway(t, {}, { wallNow: () => new Date(wall) });
  const cp = { ctiSessionId: 'LONG-11H' };
  const a = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 31, frames: 50, realtime: false, customParameters: cp });
  await waitForRecordings(g.http, a.callSid, 1);
  wall += 11 * 3600 * 1000; // 11 h later: under the bound, about 1.27 GB as one WAV
  const b = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 32, frames: 50, realtime: false, customParameters: cp });
  await waitForRecordings(g.http, b.callSid, 1);
  const url = `${g.http}/v1/cti-sessions/LONG-11H/audio`;

  const head = await get(url, {}, 'HEAD');
  t.equal(head.res.status, 200);
  const size = Number(head.res.headers.get('content-length'));
  t.equal(size, 44 + (11 * 3600 * 8000 + 8000) * 4, 'length known up front: first leg start to last leg end');
  // the last second (leg b) and a slice of silence before it, fetched without mixing 11 hours
  const r = await get(url, { range: `bytes=${size - 8000 * 4 - 16}-` });
  t.equal(r.res.status, 206);
  t.equal(r.body.length, 8000 * 4 + 16);
  const samples: number[] = [];
  for (let i = 0; i < r.body.length; i += 2) samples.push(r.body.readInt16LE(i));
  const leftOf = (from: number) => samples.filter((_, i) => i % 2 === 0).slice(from);
  t.same(leftOf(0).slice(0, 4), [0, 0, 0, 0], 'silence between the legs');
  t.same(leftOf(4), pcm(trackAudio(32, 'inbound', 50)), 'the last leg, sample by sample');
  t.ok(samples.filter((_, i) => i % 2 === 1).every((v) => v === 0), 'no agent side');
});

t.test('a contact spanning more than 12 h answers 422 (not gigabytes, not a 500); its legs stay playable', async (t) => {
  let wall = Date.parse('2024-06-03T00:00:00.000Z');
  const g = await startTestGateway(t, {}, { wallNow: () => new Date(wall) });
  for (const [id, gapH] of [['SPAN-13H', 13], ['SPAN-48H', 48]] as const) {
    const cp = { ctiSessionId: id };
    const a = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 41, frames: 25, realtime: false, customParameters: cp });
    const [ra] = await waitForRecordings(g.http, a.callSid, 1);
    wall += gapH * 3600 * 1000;
    const b = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 42, frames: 25, realtime: false, customParameters: cp });
    await waitForRecordings(g.http, b.callSid, 1);
    const res = await fetch(`${g.http}/v1/cti-sessions/${id}/audio`, { headers: { range: 'bytes=0-99' } });
    t.equal(res.status, 422, `${id}: 422`);
    t.match(res.headers.get('content-type'), /application\/json/);
    const body = await res.json() as { error: string; message: string };
    t.equal(body.error, 'contact_too_long');
    t.match(body.message, new RegExp(`spans ${gapH}\\.0 h.*at most 12 h`), `${id}: the message says the span and the bound`);
    // a compressed form is bounded alike (refused before any encoding starts)
    t.equal((await fetch(`${g.http}/v1/cti-sessions/${id}/audio?format=opus`)).status, 422, `${id}: 422 as opus too`);
    const legRes = await get(`${g.http}/v1/recordings/${ra.recordingId}/audio`);
    t.equal(legRes.res.status, 200);
    const leg = decodeWav(legRes.body);
    t.same(leg.channel[0], Array.from(trackAudio(41, 'inbound', 25)), `${id}: its first leg is still served as recorded`);
    wall += 3600 * 1000;
  }
});
