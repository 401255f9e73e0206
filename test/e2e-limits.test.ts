// The node's limits, end to end (real server, real sockets, real files): timestamps bounded by
// the stream's age (MAX_TIMESTAMP_LEAD_S), gap silence that costs neither queue nor memory,
// sockets that never start (START_TIMEOUT_S), MAX_STREAMS, idle plain TCP connections, and one
// alarm for every way audio can be dropped.
import t from 'tap';
import net from 'node:net';
import { stat } from 'node:fs/promises';
import { TwilioStreamClient, UpgradeRefusedError } from '../loadtest/twilio-stream-client.js';
import { frameFor, trackAudio } from '../loadtest/audio-fixtures.js';
import { MULAW_TO_PCM16 } from '../codecs/g711.js';
import { startTestGateway, waitForRecordings, fetchAudio, decodeWav, audioPathOnDisk, type TestGateway } from './fixtures/harness.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

async function metric(g: TestGateway, re: RegExp): Promise<number> {
  const m = (await (await fetch(`${g.http}/metrics`)).text()).match(re);
  return m ? Number(m[1]) : 0;
}

async function alarms(g: TestGateway, kind: string): Promise<{ streamSid?: string; details?: { reason?: string } }[]> {
  const r = await fetch(`${g.http}/v1/alarms?kind=${kind}&limit=1000`);
  return ((await r.json()) as { items: { streamSid?: string; details?: { reason?: string } }[] }).items;
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 15000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `p`, or `fallback` when it has not settled within `ms` (a missing close fails, not hangs). */
function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((r) => { timer = setTimeout(() => r(fallback), ms); })]).finally(() => clearTimeout(timer));
}

async function openStream(g: TestGateway) {
  const c = await TwilioStreamClient.connect(g.wsUrl);
  c.sendConnected();
  return c;
}

function send(c: TwilioStreamClient, seed: number, from: number, to: number, atMs: number, tracks: ('inbound' | 'outbound')[]) {
  for (let i = from; i < to; i++) for (const tr of tracks) c.sendMedia(tr, frameFor(seed, tr, i), atMs + (i - from) * 20);
}

t.test('timestamps far ahead of the stream age are refused, counted and alarmed once (no repeating jumps)', async (t) => {
  const g = await startTestGateway(t); // MAX_TIMESTAMP_LEAD_S default: 60
  const c = await openStream(g);
  c.sendStart({ tracks: ['inbound'] });
  send(c, 4, 0, 50, 0, ['inbound']);
  // Each frame 9 minutes past the previous one: under the old "10 minutes past the newest audio"
  // guard every one was accepted and the file grew by 9 minutes of silence each time.
  for (let k = 1; k <= 5; k++) c.sendMedia('inbound', frameFor(4, 'inbound', 50), 1000 + k * 9 * 60_000);
  send(c, 4, 50, 100, 1000, ['inbound']);
  c.sendStop();
  t.equal((await c.closed).code, 1000, 'five refused frames do not end the stream');
  const [rec] = await waitForRecordings(g.http, c.callSid, 1);
  t.equal(rec.durationMs, 2000, 'the file is the 2 s that were sent, no silence from the jumps');
  t.equal(rec.framesReceived, 100);
  t.ok(Buffer.from(decodeWav(await fetchAudio(g.http, rec.recordingId)).channel[0]!).equals(trackAudio(4, 'inbound', 100)), 'audio intact');
  t.ok((await stat(audioPathOnDisk(g.dir, rec))).size < 20_000, 'nothing large on disk');
  t.equal(await metric(g, /^gateway_frames_dropped_total\{reason="timestamp_lead"\} (\d+)/m), 5, 'each refused frame counted as dropped');
  t.equal(await metric(g, /^gateway_protocol_errors_total\{kind="timestamp_jump"\} (\d+)/m), 5, 'and as a protocol error');
  const a = (await alarms(g, 'audio_dropped')).filter((x) => x.streamSid === c.streamSid);
  t.equal(a.length, 1, 'one alarm for the stream');
  t.equal(a[0]?.details?.reason, 'timestamp_lead');
});

t.test('the bound moves with the stream age: a frame refused now is accepted once the stream is old enough', async (t) => {
  const g = await startTestGateway(t, { MAX_TIMESTAMP_LEAD_S: '1' });
  const c = await openStream(g);
  c.sendStart({ tracks: ['inbound'] });
  send(c, 5, 0, 25, 0, ['inbound']);
  c.sendMedia('inbound', frameFor(5, 'inbound', 99), 30_000); // 30 s ahead of a new stream: refused
  await until('the refusal', async () => (await metric(g, /^gateway_frames_dropped_total\{reason="timestamp_lead"\} (\d+)/m)) === 1);
  await new Promise((r) => setTimeout(r, 1500)); // the stream is now older than 0.5 s + 1 s lead
  send(c, 5, 25, 100, 500, ['inbound']); // frames up to 2 s: within age + lead
  c.sendStop();
  await c.closed;
  const [rec] = await waitForRecordings(g.http, c.callSid, 1);
  t.equal(rec.framesReceived, 100);
  t.equal(rec.durationMs, 2000, 'the refused frame left no trace');
});

t.test('gap silence is not queued audio: 2 s, a 150 s gap, 2 s more, pcm16 stereo, nothing dropped', async (t) => {
  const g = await startTestGateway(t, { RECORDING_FORMAT: 'pcm16', MAX_TIMESTAMP_LEAD_S: '300' });
  const c = await openStream(g);
  c.sendStart({ tracks: ['inbound', 'outbound'] });
  send(c, 6, 0, 100, 0, ['inbound', 'outbound']);
  send(c, 6, 100, 200, 152_000, ['inbound', 'outbound']); // sent right after: the gap is 150 s
  c.sendStop();
  t.equal((await c.closed).code, 1000);
  const [rec] = await waitForRecordings(g.http, c.callSid, 1) as RecordingSidecar[];
  t.equal(rec!.framesReceived, 400);
  t.equal(rec!.framesDroppedDiskBackpressure, undefined, 'nothing dropped for backpressure');
  t.equal(await metric(g, /^gateway_frames_dropped_total\{reason="disk_backpressure"\} (\d+)/m), 0);
  t.equal(rec!.durationMs, 154_000);
  const wav = decodeWav(await fetchAudio(g.http, rec!.recordingId));
  for (const [ch, tr] of [[0, 'inbound'], [1, 'outbound']] as const) {
    const audio = trackAudio(6, tr, 200);
    const pcm = (from: number, to: number) => Array.from(audio.subarray(from * 160, to * 160), (b) => MULAW_TO_PCM16[b]);
    const got = wav.channel[ch]!;
    t.same(got.slice(0, 16000), pcm(0, 100), `${tr}: the first 2 s bit-exact`);
    t.ok(got.slice(16000, 152 * 8000).every((x) => x === 0), `${tr}: 150 s of silence`);
    t.same(got.slice(152 * 8000), pcm(100, 200), `${tr}: the 2 s after the gap bit-exact`);
  }
  t.same(await alarms(g, 'audio_dropped'), [], 'no alarm: nothing was dropped');
});

t.test('a frame arriving after its audio was written raises one audio_dropped alarm (too_late)', async (t) => {
  const g = await startTestGateway(t);
  const c = await openStream(g);
  c.sendStart({ tracks: ['inbound'] });
  send(c, 7, 0, 200, 0, ['inbound']);
  c.sendMedia('inbound', Buffer.alloc(160, 0x11), 0);
  c.sendMedia('inbound', Buffer.alloc(160, 0x11), 20);
  c.sendStop();
  await c.closed;
  const [rec] = await waitForRecordings(g.http, c.callSid, 1);
  t.equal(rec.framesTooLate, 2);
  const a = (await alarms(g, 'audio_dropped')).filter((x) => x.streamSid === c.streamSid);
  t.equal(a.length, 1, 'one alarm for the stream, not one per frame');
  t.equal(a[0]?.details?.reason, 'too_late');
});

t.test('a socket that never sends start is closed (1008) after START_TIMEOUT_S; a started one is not', async (t) => {
  const g = await startTestGateway(t, { START_TIMEOUT_S: '1' });
  // the started socket connects first: when the idle one's timer fires, the started one's would
  // already have fired too (no sleep needed to know it ran past its timeout)
  const live = await openStream(g);
  live.sendStart({ tracks: ['inbound'] });
  const idle = await TwilioStreamClient.connect(g.wsUrl);
  idle.sendConnected(); // "connected" alone is not a start
  send(live, 8, 0, 10, 0, ['inbound']);
  const closed = await within(idle.closed, 15_000, { code: -1, reason: 'still open after 15 s' });
  t.equal(closed.code, 1008);
  t.match(closed.reason, /start/);
  t.equal(await metric(g, /^gateway_protocol_errors_total\{kind="start_timeout"\} (\d+)/m), 1);
  send(live, 8, 10, 20, 200, ['inbound']);
  live.sendStop();
  t.equal((await live.closed).code, 1000, 'the started stream ran past the start timeout');
  const [rec] = await waitForRecordings(g.http, live.callSid, 1);
  t.equal(rec.framesReceived, 20);
});

t.test('MAX_STREAMS counts sockets that have not started: the upgrade beyond answers 503', async (t) => {
  const g = await startTestGateway(t, { MAX_STREAMS: '3' });
  const live = await openStream(g);
  live.sendStart({ tracks: ['inbound'] });
  send(live, 9, 0, 10, 0, ['inbound']);
  const idle = [await TwilioStreamClient.connect(g.wsUrl), await TwilioStreamClient.connect(g.wsUrl)];
  const err = await TwilioStreamClient.connect(g.wsUrl).then(() => null, (e: unknown) => e);
  t.ok(err instanceof UpgradeRefusedError, 'refused before opening');
  t.equal((err as UpgradeRefusedError).status, 503);
  t.equal(await metric(g, /^gateway_upgrades_refused_total\{reason="max_streams"\} (\d+)/m), 1);
  for (const c of idle) await c.close();
  await until('a free slot', () => g.gw.handlers.size <= 1);
  const again = await openStream(g); // a slot is free again
  again.sendStart({ tracks: ['inbound'] });
  send(again, 10, 0, 10, 0, ['inbound']);
  again.sendStop();
  t.equal((await again.closed).code, 1000);
  send(live, 9, 10, 20, 200, ['inbound']);
  live.sendStop();
  await live.closed;
  const [rec] = await waitForRecordings(g.http, live.callSid, 1);
  t.equal(rec.framesReceived, 20, 'the live call was untouched');
});

t.test('a plain TCP connection that never sends a request is closed', async (t) => {
  const g = await startTestGateway(t, { START_TIMEOUT_S: '1' });
  const started = Date.now();
  const s = net.connect(g.port, '127.0.0.1');
  s.on('error', () => undefined);
  const closedAfter = await within(new Promise<number>((resolve) => s.on('close', () => resolve(Date.now() - started))), 15_000, -1);
  s.destroy();
  t.ok(closedAfter >= 900, `closed by the server, not before the timeout (${closedAfter} ms; -1: still open after 15 s)`);
  // an HTTP client that sends its request in time is served, keep-alive included
  const r = await fetch(`${g.http}/healthz`);
  t.equal(r.status, 200);
});
