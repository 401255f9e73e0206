// StreamSession as a unit, on a clock the test moves: activity for idle detection, and PCI
// pause/resume whose instants depend on the call time being spoken now (arrival clock − the
// stream clock's origin: the least-delayed frame's, within MAX_ORIGIN_CORRECTION_MS of the first). Real files: the published WAV is decoded and compared sample by sample.
import t, { type Test } from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { StreamSession, MAX_ORIGIN_CORRECTION_MS, type MediaResult, type StreamSessionOptions } from '../recorder/stream-session.js';
import type { PlaceResult } from '../recorder/timeline.js';
import { frameFor, trackAudio, MULAW_SILENCE } from '../loadtest/audio-fixtures.js';
import { audioPathOnDisk, decodeWav } from './fixtures/harness.js';

const FRAME = 160;

async function session(t: Test, opts: Partial<StreamSessionOptions> = {}) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-session-'));
  const clock = { now: 0 };
  const outcomes: PlaceResult[] = [];
  const s = new StreamSession(
    { accountSid: `AC${'a'.repeat(32)}`, callSid: `CA${'c'.repeat(32)}`, streamSid: `MZ${'7'.repeat(32)}`, tracks: ['inbound'], customParameters: {} },
    { ctiSessionId: null, employeeId: null },
    {
      recordingsDir: dir, nodeId: 'unit', encoding: 'mulaw', segmentMaxS: 3600, windowMs: 1000, chunkMs: 100,
      now: () => clock.now, wallNow: () => new Date('2026-01-02T03:04:05.000Z'),
      onFrame: (r) => { outcomes.push(r); }, onWritten: () => {},
      onSegmentError: (id, err) => { throw new Error(`segment ${id}: ${err.message}`); },
      ...opts,
    },
  );
  t.teardown(async () => {
    await s.close('shutdown');
    await rm(dir, { recursive: true, force: true });
  });
  return { s, dir, clock, outcomes };
}

const frame = (i: number) => frameFor(5, 'inbound', i);
const put = (s: StreamSession, i: number) => s.media(0, i * FRAME, frame(i), FRAME);
/** Frames [from, to) arriving on time (frame i at 1000 + 20 i ms: the stream clock's origin is 1000); their results. */
const onTime = (s: StreamSession, clock: { now: number }, from: number, to: number) => {
  const results: MediaResult[] = [];
  for (let i = from; i < to; i++) {
    clock.now = 1000 + i * 20;
    results.push(put(s, i));
  }
  return results;
};

t.test('activity follows the injected clock: media and touch both count', async (t) => {
  const { s, clock } = await session(t);
  t.equal(s.lastActivity, 0, 'created at 0');
  clock.now = 120;
  put(s, 0);
  t.equal(s.lastActivity, 120, 'a frame');
  clock.now = 900;
  s.touch();
  t.equal(s.lastActivity, 900, 'a mark or dtmf (touch)');
  clock.now = 5000;
  t.equal(s.lastActivity, 900, 'time alone is not activity');
});

t.test('pause then resume: paused frames never reach the file, the pause ends at the call time spoken now', async (t) => {
  const { s, dir, clock, outcomes } = await session(t);
  // frames 0..9 (0..200 ms of call time) arrive on time: the stream clock's origin is 1000
  t.same(onTime(s, clock, 0, 10), Array(10).fill('placed'));
  t.equal(s.pause(), 200, 'the pause starts after the newest frame seen');
  t.equal(s.pause(), 200, 'idempotent');
  t.same(onTime(s, clock, 10, 15), Array(5).fill('paused'), 'frames 10..14 spoken while paused: dropped');
  // the agent resumes at 1500: call time 500 ms is being spoken now, although the newest frame
  // read ends at 300 ms (frames 15..24 are still in flight)
  clock.now = 1500;
  t.equal(s.resume(), 500, 'ends at the call time spoken now, not at the newest frame read');
  s.resume();
  t.same(s.pausedIntervals, [{ from: 200, to: 500 }], 'a second resume changes nothing');
  for (let i = 15; i < 25; i++) t.equal(put(s, i), 'paused', `frame ${i}, spoken before the resume and read after it: dropped`);
  t.same(onTime(s, clock, 25, 50), Array(25).fill('placed'));
  t.same(s.pausedIntervals, [{ from: 200, to: 500 }]);
  t.equal(s.framesPaused, 15);
  t.notOk(outcomes.includes('paused' as PlaceResult), 'paused frames are not counted as placed');
  t.equal(outcomes.length, 35, 'only kept frames reach the timeline');

  const [rec] = await s.close('stop');
  t.match(rec, { closeReason: 'stop', framesReceived: 35, framesPaused: 15, framesMissing: 0, durationMs: 1000, pausedIntervals: [{ from: 200, to: 500 }] });
  const got = Buffer.from(decodeWav(await readFile(audioPathOnDisk(dir, rec!))).channel[0]!);
  const expected = Buffer.from(trackAudio(5, 'inbound', 50));
  expected.fill(MULAW_SILENCE, 200 * 8, 500 * 8);
  t.ok(got.equals(expected), 'silence exactly over [200, 500) ms, every other sample bit-exact');
});

t.test('skip mode: the paused span is cut out of the file', async (t) => {
  const { s, dir, clock } = await session(t, { pauseBehavior: 'skip' });
  onTime(s, clock, 0, 10);
  s.pause();
  clock.now = 1400; // resumes at call time 400 ms (nothing arrived meanwhile)
  t.equal(s.resume(), 400);
  t.same(onTime(s, clock, 20, 30), Array(10).fill('placed'));
  const [rec] = await s.close('stop');
  t.match(rec, { framesReceived: 20, durationMs: 400 });
  const got = Buffer.from(decodeWav(await readFile(audioPathOnDisk(dir, rec!))).channel[0]!);
  const expected = Buffer.concat([trackAudio(5, 'inbound', 10), Buffer.from(trackAudio(5, 'inbound', 30)).subarray(20 * FRAME)]);
  t.ok(got.equals(expected), 'frames 0..9 then 20..29, nothing of the pause');
});

t.test('a call paused before the stream started drops from frame 0 until resumed', async (t) => {
  const { s, dir, clock } = await session(t, { startPaused: true });
  t.equal(s.paused, true);
  clock.now = 1000;
  t.equal(put(s, 0), 'paused');
  clock.now = 1020;
  t.equal(put(s, 1), 'paused');
  t.equal(s.resume(), 40, 'resumed after the newest frame (nothing spoken beyond it yet)');
  clock.now = 1040;
  t.equal(put(s, 2), 'placed');
  const [rec] = await s.close('stop');
  t.match(rec, { framesReceived: 1, framesPaused: 2, pausedIntervals: [{ from: 0, to: 40 }] });
  const got = Buffer.from(decodeWav(await readFile(audioPathOnDisk(dir, rec!))).channel[0]!);
  t.ok(got.equals(Buffer.concat([Buffer.alloc(2 * FRAME, MULAW_SILENCE), frame(2)])), 'silence, then the kept frame bit-exact');
});

t.test('a first frame read late does not end a pause early: the least-delayed frame sets the clock', async (t) => {
  const { s, clock } = await session(t);
  // frame 0 is spoken at 1000 but read at 1150 (a busy loop); frames 1..7 were due meanwhile and
  // are read with it; frames 8..9 on time. The origin must come out 1000, not 1150.
  clock.now = 1150;
  for (let i = 0; i < 8; i++) put(s, i);
  onTime(s, clock, 8, 10);
  t.equal(s.pause(), 200);
  for (let i = 10; i < 19; i++) {
    clock.now = 1000 + i * 20 + 120; // paused frames, 120 ms on the network
    t.equal(put(s, i), 'paused');
  }
  // resume asked while call time 500 is spoken: frames 19..24 are still on the network
  clock.now = 1500;
  t.equal(s.resume(), 500, 'ends at the call time spoken now on the corrected clock (the first frame alone says 350)');
  for (let i = 19; i < 25; i++) {
    clock.now = 1000 + i * 20 + 120;
    t.equal(put(s, i), 'paused', `frame ${i}, spoken before the resume, read after it: dropped`);
  }
  for (let i = 25; i < 28; i++) {
    clock.now = 1000 + i * 20 + 120;
    t.equal(put(s, i), 'placed', `frame ${i}, spoken after the resume: kept`);
  }
  t.same(s.pausedIntervals, [{ from: 200, to: 500 }]);
});

t.test('a client sending ahead of real time moves a resume by MAX_ORIGIN_CORRECTION_MS at most', async (t) => {
  const { s, clock } = await session(t);
  clock.now = 1000;
  for (let i = 0; i < 100; i++) put(s, i); // 2 s of audio at one instant
  s.pause(); // at 2000 ms
  clock.now = 3000; // 2 s later: the first frame's clock says call time 2000 is spoken now
  const bound = Math.ceil(MAX_ORIGIN_CORRECTION_MS / 20) * 20; // on the frame grid
  t.equal(s.resume(), 2000 + bound, 'the origin was pulled back by the bound, not by 1980 ms');
  t.equal(put(s, 100 + bound / 20 - 1), 'paused', 'the frame before the bound is paused');
  t.equal(put(s, 100 + bound / 20), 'placed', 'the first frame after the bound is kept');
});

t.test('a stream closed while paused: the pause ends at the end of the file, and a later resume says so', async (t) => {
  const { s, clock } = await session(t);
  onTime(s, clock, 0, 10);
  t.equal(s.pause(), 200);
  t.same(onTime(s, clock, 10, 15), Array(5).fill('paused'));
  clock.now = 1600; // the stop comes 300 ms after the last frame: call time 600 is "spoken now"
  const [rec] = await s.close('stop');
  t.match(rec, { durationMs: 300, pausedIntervals: [{ from: 200, to: 300 }] }, 'not to 600: nothing after 300 ms exists');
  t.equal(s.resume(), 300, 'a resume answered after the close declares the same end as the sidecar');
});

for (const behavior of ['silence', 'skip'] as const) {
  t.test(`${behavior}: a resume inside a frame ends the pause at that frame's end: the frame is paused whole`, async (t) => {
    const { s, dir, clock } = await session(t, { pauseBehavior: behavior });
    onTime(s, clock, 0, 10);
    t.equal(s.pause(), 200);
    t.same(onTime(s, clock, 10, 25), Array(15).fill('paused'));
    clock.now = 1503; // call time 503 is spoken now: 3 ms into frame 25 (500..520 ms)
    t.equal(s.resume(), 520, 'rounded up to the frame grid: frame 25 was being spoken');
    clock.now = 1530;
    t.equal(put(s, 25), 'paused', 'frame 25: dropped whole');
    for (let i = 26; i < 30; i++) {
      clock.now = 1000 + i * 20 + 30;
      t.equal(put(s, i), 'placed', `frame ${i}`);
    }
    const [rec] = await s.close('stop');
    t.match(rec, { framesMissing: 0, framesPaused: 16, framesReceived: 14, pausedIntervals: [{ from: 200, to: 520 }] });
    const got = Buffer.from(decodeWav(await readFile(audioPathOnDisk(dir, rec!))).channel[0]!);
    const all = trackAudio(5, 'inbound', 30);
    const expected = behavior === 'silence'
      ? Buffer.concat([all.subarray(0, 200 * 8), Buffer.alloc(320 * 8, MULAW_SILENCE), all.subarray(520 * 8)])
      : Buffer.concat([all.subarray(0, 200 * 8), all.subarray(520 * 8)]);
    t.ok(got.equals(expected), `paused exactly [200, 520) ms, the rest bit-exact (${rec!.durationMs} ms)`);
  });

  t.test(`${behavior}: a frame off the grid straddling the resume keeps only what follows it`, async (t) => {
    const { s, dir, clock } = await session(t, { pauseBehavior: behavior });
    onTime(s, clock, 0, 10);
    t.equal(s.pause(), 200);
    clock.now = 1300;
    t.equal(s.resume(), 300);
    // a frame stamped 290..310 ms (a jittery timestamp): 290..300 was paused, 300..310 is kept
    clock.now = 1310;
    t.equal(s.media(0, 290 * 8, frame(10), FRAME), 'placed');
    const [rec] = await s.close('stop');
    t.match(rec, { framesMissing: 0, framesReceived: 11, pausedIntervals: [{ from: 200, to: 300 }] });
    t.notOk(rec!.framesPaused, 'no frame paused');
    const got = Buffer.from(decodeWav(await readFile(audioPathOnDisk(dir, rec!))).channel[0]!);
    const head = trackAudio(5, 'inbound', 10);
    const kept = frame(10).subarray(10 * 8);
    const expected = behavior === 'silence'
      ? Buffer.concat([head, Buffer.alloc(100 * 8, MULAW_SILENCE), kept])
      : Buffer.concat([head, kept]);
    t.ok(got.equals(expected), `paused exactly [200, 300) ms; the frame's last 10 ms kept bit-exact (${rec!.durationMs} ms)`);
  });
}
