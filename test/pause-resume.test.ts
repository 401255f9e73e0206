// PCI pause/resume (contract section 5) through WebSocket + HTTP: paused audio never reaches
// any file (the disk scan below), the pause instant is the stream's newest call time, frames in
// flight from before it are kept, `silence` keeps the file aligned and `skip` cuts the span out.
import t, { type Test } from 'tap';
import { readdir, readFile, open } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { frameFor, trackAudio, MULAW_SILENCE, type Track } from '../loadtest/audio-fixtures.js';
import { randomSid } from '../loadtest/sids.js';
import { startTestGateway, getJson, waitForRecordings, fetchAudio, decodeWav, type TestGateway } from './fixtures/harness.js';
import { openStream, post, until, type OpenStream } from './fixtures/calls.js';

const ENABLED = { TWILIO_ENABLE_PAUSE_RESUME: 'true' };

// The gateway runs in this process. A temp dir of the process's own means any temporary file it
// could write lands where the scan below reads every byte (the machine's /tmp is shared with other
// work and can hold gigabytes); RECORDINGS_DIR (a mkdtemp) is inside it too.
const PRIVATE_TMP = mkdtempSync(path.join(os.tmpdir(), 'gw-pause-tmp-'));
process.env.TMPDIR = PRIVATE_TMP;
t.teardown(() => rmSync(PRIVATE_TMP, { recursive: true, force: true }));
// What a caller reads out while paused (a card number): a byte pattern no other audio contains,
// made at run time so that not even this test's source (or a copy of it in /tmp) holds it.
const MARKER = Buffer.concat([Buffer.from('PCI-'), randomBytes(24)]);
const markerFrame = Buffer.alloc(160);
for (let i = 0; i < 160; i++) markerFrame[i] = MARKER[i % MARKER.length]!;

function sendMarker(s: OpenStream, tracks: Track[], first: number, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    for (let i = first; i < first + count; i++) {
      tracks.forEach((tr, k) => s.client.sendMedia(tr, markerFrame, i * 20,
        i === first + count - 1 && k === tracks.length - 1 ? (e) => (e ? reject(e) : resolve()) : undefined));
    }
  });
}

/** Wait until the gateway has taken in frames up to call time `ms` (a sync point, not a mock). */
function seen(g: TestGateway, s: OpenStream, ms: number) {
  return until(() => (g.gw.recorder.get(s.streamSid)?.frontier ?? -1) >= ms * 8, `frames up to ${ms} ms`);
}

/** Every file below `root` (unreadable ones skipped: the temp dir is shared), scanned for MARKER. */
async function filesContaining(root: string, needle: Buffer): Promise<{ scanned: number; hits: string[] }> {
  let scanned = 0;
  const hits: string[] = [];
  const buf = Buffer.alloc(1 << 20);
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try { entries = await readdir(dir, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        let fh;
        try { fh = await open(p, 'r'); } catch { continue; }
        try {
          scanned++;
          let carry = Buffer.alloc(0);
          let pos = 0;
          for (;;) {
            const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
            if (bytesRead === 0) break;
            const chunk = Buffer.concat([carry, buf.subarray(0, bytesRead)]);
            if (chunk.includes(needle)) { hits.push(p); break; }
            carry = chunk.subarray(Math.max(0, chunk.length - needle.length + 1));
            pos += bytesRead;
          }
        } catch { /* vanished or unreadable: another process's temp file */ } finally { await fh.close(); }
      }
    }
  };
  await walk(root);
  return { scanned, hits };
}

/** The stream's pause record as it is on disk now (read once, right after a 200: never polled). */
async function pauseRecordOf(g: TestGateway, s: OpenStream): Promise<unknown> {
  return JSON.parse(await readFile(path.join(g.dir, '.inprogress', `${s.streamSid}.pause`), 'utf8'));
}

async function pausedCall(t: Test, env: Record<string, string>, scanTmp: boolean) {
  const g = await startTestGateway(t, { ...ENABLED, ...env });
  const tracks: Track[] = ['inbound', 'outbound'];
  const s = await openStream(g.wsUrl, { tracks, seed: 21 });
  await s.frames(0, 40); // 0..800 ms
  await s.frames(45, 5); // 900..1000 ms; 800..900 still in flight
  await seen(g, s, 1000);
  const p1 = await post(`${g.http}/v1/calls/${s.callSid}/pause`);
  t.equal(p1.status, 200);
  t.same(p1.body, { callSid: s.callSid, paused: true, streams: [{ streamSid: s.streamSid, atMs: 1000 }] }, 'paused from the newest call time');
  const behavior = env.PAUSE_BEHAVIOR ?? 'silence';
  t.same(await pauseRecordOf(g, s), { v: 1, nodeId: g.gw.config.nodeId, behavior, intervals: [], openFrom: 1000, framesPaused: 0 },
    'the pause is durable in the stream\'s pause record before the 200');
  const p2 = await post(`${g.http}/v1/calls/${s.callSid}/pause`);
  t.same(p2.body, p1.body, 'pausing twice is fine and changes nothing');
  const calls = await getJson<{ items: { callSid: string; paused: boolean; nodeId: string; startedAt: string }[] }>(`${g.http}/v1/calls`);
  t.match(calls.body.items, [{ callSid: s.callSid, paused: true, nodeId: g.gw.config.nodeId, startedAt: /Z$/ }]);
  await s.frames(40, 5); // frames from before the pause instant, arriving late: kept
  await sendMarker(s, tracks, 50, 50); // 1000..2000 ms: paused
  await seen(g, s, 2000);
  const r = await post(`${g.http}/v1/calls/${s.callSid}/resume`);
  t.same(r.body, { callSid: s.callSid, paused: false, streams: [{ streamSid: s.streamSid, atMs: 2000 }] });
  t.match(await pauseRecordOf(g, s), { behavior, intervals: [{ from: 1000, to: 2000 }], openFrom: null, framesPaused: 100 },
    'and so is the resume: the interval as answered, the paused frames counted');
  t.equal((await post(`${g.http}/v1/calls/${s.callSid}/resume`)).status, 200, 'resuming twice is fine');
  await sendMarker(s, tracks, 60, 5); // a paused frame arriving after resume: still dropped
  await s.frames(100, 50); // 2000..3000 ms
  await s.end();
  const [rec] = await waitForRecordings(g.http, s.callSid, 1);
  t.same(rec.pausedIntervals, [{ from: 1000, to: 2000 }]);
  t.equal(rec.framesMissing, 0, 'a pause is not missing audio');
  // removed once every segment is published; the outcome (index) may list the recording a moment before
  await until(async () => (await readdir(path.join(g.dir, '.inprogress'))).length === 0, 'the pause record removed with the stream\'s partial marks');
  t.pass('nothing left in .inprogress: the pause record went once every segment was published');
  // the temp dir is scanned once; RECORDINGS_DIR every time
  const scan = [await filesContaining(g.dir, MARKER), scanTmp ? await filesContaining(os.tmpdir(), MARKER) : { scanned: 0, hits: [] }];
  t.ok(scan[0]!.scanned >= 2, `scanned RECORDINGS_DIR (${scan[0]!.scanned} files) and ${os.tmpdir()} (${scan[1]!.scanned} files)`);
  t.same(scan[0]!.hits.concat(scan[1]!.hits), [], 'the paused audio is in no file');
  return { g, s, rec, tracks };
}

t.test('pause with PAUSE_BEHAVIOR=silence: the span is silence, the file stays aligned', async (t) => {
  const { g, rec, tracks } = await pausedCall(t, {}, true);
  t.equal(rec.durationMs, 3000);
  const d = decodeWav(await fetchAudio(g.http, rec.recordingId));
  tracks.forEach((tr, c) => {
    const audio = trackAudio(21, tr, 150);
    audio.fill(MULAW_SILENCE, 50 * 160, 100 * 160);
    t.same(d.channel[c], Array.from(audio), `${tr}: before, silence, after - sample by sample`);
  });
});

t.test('pause with PAUSE_BEHAVIOR=skip: the span is cut out', async (t) => {
  const { g, rec, tracks } = await pausedCall(t, { PAUSE_BEHAVIOR: 'skip' }, false);
  t.equal(rec.durationMs, 2000);
  const d = decodeWav(await fetchAudio(g.http, rec.recordingId));
  tracks.forEach((tr, c) => {
    const audio = Buffer.concat([trackAudio(21, tr, 50), trackAudio(21, tr, 50, 160, 100)]);
    t.same(d.channel[c], Array.from(audio), `${tr}: the audio before and after, joined`);
  });
});

t.test('a known call paused before its stream starts is paused from the first frame', async (t) => {
  const g = await startTestGateway(t, ENABLED);
  const callSid = randomSid('CA');
  await post(`${g.http}/v1/cti/events`, { type: 'ringing', callSid });
  const p = await post(`${g.http}/v1/calls/${callSid}/pause`);
  t.same(p.body, { callSid, paused: true, streams: [] });
  const s = await openStream(g.wsUrl, { callSid, tracks: ['inbound'], seed: 5 });
  await sendMarker(s, ['inbound'], 0, 25);
  await seen(g, s, 500);
  t.same((await post(`${g.http}/v1/calls/${callSid}/resume`)).body.streams, [{ streamSid: s.streamSid, atMs: 500 }]);
  await s.frames(25, 25);
  await s.end();
  const [rec] = await waitForRecordings(g.http, callSid, 1);
  t.same(rec.pausedIntervals, [{ from: 0, to: 500 }]);
  const audio = trackAudio(5, 'inbound', 50);
  audio.fill(MULAW_SILENCE, 0, 25 * 160);
  t.same(decodeWav(await fetchAudio(g.http, rec.recordingId)).channel[0], Array.from(audio));
  t.equal(frameFor(5, 'inbound', 0).includes(MARKER), false);
  t.same((await filesContaining(g.dir, MARKER)).hits, []);
});

t.test('a stream ending while paused: the pause runs to its end', async (t) => {
  const g = await startTestGateway(t, ENABLED);
  const s = await openStream(g.wsUrl, { tracks: ['inbound'], seed: 6 });
  await s.frames(0, 10);
  await seen(g, s, 200);
  await post(`${g.http}/v1/calls/${s.callSid}/pause`);
  await sendMarker(s, ['inbound'], 10, 10);
  await s.end();
  const [rec] = await waitForRecordings(g.http, s.callSid, 1);
  t.same(rec.pausedIntervals, [{ from: 200, to: 400 }]);
  t.equal(rec.durationMs, 400, 'silence: aligned to the end of the call');
  t.same((await filesContaining(g.dir, MARKER)).hits, []);
});

t.test('pause/resume refused: disabled (409), unknown call (404), bad callSid (400)', async (t) => {
  const g = await startTestGateway(t);
  const s = await openStream(g.wsUrl, { tracks: ['inbound'] });
  await s.frames(0, 5);
  await until(() => g.gw.recorder.get(s.streamSid), 'the stream');
  const off = await post(`${g.http}/v1/calls/${s.callSid}/pause`);
  t.equal(off.status, 409);
  t.equal(off.body.error, 'pause_disabled');
  t.match(off.body.message, /TWILIO_ENABLE_PAUSE_RESUME=true/);
  const unknown = await post(`${g.http}/v1/calls/${randomSid('CA')}/resume`);
  t.equal(unknown.status, 404);
  t.equal(unknown.body.error, 'not_found');
  t.equal((await post(`${g.http}/v1/calls/not-a-call/pause`)).status, 400);
  await s.end();
});

/**
 * A real-time stream, paused from 500 to 1000 ms while a card number is read out; the agent
 * resumes at 1000 ms of the test's clock while the last 100 ms of it are still on the network.
 * `lateFirstReadMs`: the gateway's loop is held (as a busy node's would be) right after the first
 * frame is sent, so the gateway reads that frame late: the stream clock must not take its origin
 * from that one late reading (the resume would then end the pause early and keep the marker).
 */
function realTimeResume(lateFirstReadMs: number) {
  return async (t: Test) => {
    const g = await startTestGateway(t, ENABLED);
    const tracks: Track[] = ['inbound'];
    const s = await openStream(g.wsUrl, { tracks, seed: 33 });
    const origin = Date.now();
    /** frame i is sent at origin + 20 i (at once if that is past: the caller never waits) */
    const paced = async (first: number, count: number, send: (i: number) => Promise<void>) => {
      for (let i = first; i < first + count; i++) {
        const due = origin + i * 20 - Date.now();
        if (due > 0) await new Promise((r) => setTimeout(r, due));
        await send(i);
      }
    };
    await s.frames(0, 1);
    // the gateway runs in this process: a synchronous wait holds its loop with frame 0 unread
    // (and, as on a busy node, the frames due meanwhile are read late, all at once)
    const holdUntil = Date.now() + lateFirstReadMs;
    while (Date.now() < holdUntil) { /* a busy node's loop */ }
    await paced(1, 24, (i) => s.frames(i, 1)); // 0..500 ms of audio, at the caller's pace
    await seen(g, s, 500);
    t.equal((await post(`${g.http}/v1/calls/${s.callSid}/pause`)).status, 200);
    // the card number is spoken from 500 to 1000 ms; its last 100 ms are still on the network when
    // the agent resumes (sent only after the resume was answered), stamped with their real times
    await new Promise((r) => setTimeout(r, Math.max(0, origin + 500 - Date.now())));
    await paced(25, 20, (i) => sendMarker(s, tracks, i, 1));
    await new Promise((r) => setTimeout(r, Math.max(0, origin + 1000 - Date.now())));
    const r = await post(`${g.http}/v1/calls/${s.callSid}/resume`);
    t.equal(r.status, 200);
    // the gateway's clock starts when frames arrive, a network hop after `origin`: the pause must
    // end after the last frame still in flight starts (980 ms), not on the test's clock
    t.ok(r.body.streams[0].atMs > 980, `the pause ends at the call time spoken when resume was asked (${r.body.streams[0].atMs} ms)`);
    await sendMarker(s, tracks, 45, 5); // 900..1000 ms, arriving late
    await s.frames(50, 25); // after the resume
    await s.end();
    const [rec] = await waitForRecordings(g.http, s.callSid, 1);
    t.same(rec.pausedIntervals, [{ from: 500, to: r.body.streams[0].atMs }], 'the sidecar says what the resume answered');
    const audio = Buffer.from(decodeWav(await fetchAudio(g.http, rec.recordingId)).channel[0]!);
    t.notOk(audio.includes(MARKER.subarray(0, 16)), 'no paused audio in the recording');
    t.same((await filesContaining(g.dir, MARKER)).hits, [], 'nor in any file');
    t.ok(audio.subarray(0, 500 * 8).equals(trackAudio(33, 'inbound', 25)), 'the audio before the pause is kept bit-exact');
  };
}

t.test('a real-time stream: paused frames still in flight when resume is asked are not kept', realTimeResume(0));
t.test('the same with the first frame read 80 ms late (a loaded node): still not kept', realTimeResume(80));
