// End to end: real gateway, real WebSocket clients speaking Twilio's protocol, recordings
// fetched through the API and from disk, decoded with wavefile and sox, compared sample by sample.
import t from 'tap';
import { readFile, readdir } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { TwilioStreamClient } from '../loadtest/twilio-stream-client.js';
import { runStream } from '../loadtest/stream-runner.js';
import { frameFor, trackAudio } from '../loadtest/audio-fixtures.js';
import { randomSid } from '../loadtest/sids.js';
import { MULAW_TO_PCM16 } from '../codecs/g711.js';
import {
  startTestGateway, waitForRecordings, fetchAudio, decodeWav, soxRaw, soxInfo, readSidecarFromDisk, audioPathOnDisk,
} from './fixtures/harness.js';
import { until } from './fixtures/calls.js';

const SIDECAR_FIELDS = [
  'recordingId', 'accountSid', 'callSid', 'streamSid', 'ctiSessionId', 'employeeId', 'segmentIndex', 'tracks',
  'channels', 'encoding', 'sampleRate', 'startedAt', 'endedAt', 'durationMs', 'framesReceived', 'framesMissing',
  'pausedIntervals', 'closeReason', 'customParameters', 'sha256',
];

t.test('a both_tracks stream becomes one stereo mu-law WAV, bit-exact, with its sidecar', async (t) => {
  const g = await startTestGateway(t);
  const frames = 250; // 5 s
  const res = await runStream({
    url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 7, frames, realtime: false,
    customParameters: { ctiSessionId: 'S-1042', employeeId: 'E77', queue: 'billing' },
  });
  t.equal(res.closeCode, 1000, 'the gateway closes normally after stop');
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);
  for (const f of SIDECAR_FIELDS) t.ok(f in rec, `sidecar has ${f}`);
  t.match(rec, {
    accountSid: res.accountSid, callSid: res.callSid, streamSid: res.streamSid, ctiSessionId: 'S-1042',
    employeeId: 'E77', segmentIndex: 0, tracks: ['inbound', 'outbound'], channels: 2, encoding: 'mulaw',
    sampleRate: 8000, durationMs: 5000, framesReceived: 500, framesMissing: 0, framesDuplicate: 0,
    closeReason: 'stop', pausedIntervals: [], customParameters: { queue: 'billing' },
  });
  t.equal(Date.parse(rec.endedAt) - Date.parse(rec.startedAt), 5000, 'endedAt - startedAt = duration');
  t.match(rec.startedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'ISO 8601 UTC');

  const wav = await fetchAudio(g.http, rec.recordingId);
  t.equal(createHash('sha256').update(wav).digest('hex'), rec.sha256, 'sha256 in the sidecar is the served file');
  const d = decodeWav(wav);
  t.equal(d.audioFormat, 7, 'WAV format 7 (mu-law)');
  t.equal(d.channels, 2);
  t.equal(d.sampleRate, 8000);
  t.same(d.channel[0], Array.from(trackAudio(7, 'inbound', frames)), 'left = inbound, sample by sample');
  t.same(d.channel[1], Array.from(trackAudio(7, 'outbound', frames)), 'right = outbound, sample by sample');

  const file = audioPathOnDisk(g.dir, rec);
  t.same(await readFile(file), wav, 'the file on disk is what the API serves');
  t.match(await soxInfo(file), /Channels\s+: 2[\s\S]*Sample Rate\s+: 8000[\s\S]*u-law/, 'sox opens it');
  const raw = await soxRaw(file, 'mu-law');
  t.equal(raw.length, frames * 160 * 2);
  t.equal(raw[0], trackAudio(7, 'inbound', 1)[0], 'sox reads the same first sample');
  t.same(await readSidecarFromDisk(g.dir, rec), rec, 'the API serves the sidecar on disk');
  t.same(await readdir(path.join(g.dir, '.inprogress')), [], 'nothing left in progress');
});

t.test('a stream at real pace (mono inbound) is recorded bit-exact', async (t) => {
  const g = await startTestGateway(t);
  const frames = 100; // 2 s of real time
  const t0 = Date.now();
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 11, frames, realtime: true });
  t.ok(Date.now() - t0 >= 1900, 'the client really paced at 20 ms');
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);
  t.match(rec, { channels: 1, tracks: ['inbound'], framesReceived: frames, framesMissing: 0, durationMs: 2000 });
  const d = decodeWav(await fetchAudio(g.http, rec.recordingId));
  t.equal(d.channels, 1);
  t.same(d.channel[0], Array.from(trackAudio(11, 'inbound', frames)));
});

t.test('an outbound-only stream is mono with the outbound audio', async (t) => {
  const g = await startTestGateway(t);
  const res = await runStream({ url: g.wsUrl, tracks: ['outbound'], seed: 12, frames: 50, realtime: false });
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);
  t.match(rec, { channels: 1, tracks: ['outbound'], frames: { outbound: { received: 50 } } });
  t.same(decodeWav(await fetchAudio(g.http, rec.recordingId)).channel[0], Array.from(trackAudio(12, 'outbound', 50)));
});

/** Drive a stream frame by frame: `plan` lists [track, frameIndex] in send order. */
async function sendPlan(url: string, seed: number, tracks: ('inbound' | 'outbound')[], plan: [('inbound' | 'outbound'), number][]) {
  const c = await TwilioStreamClient.connect(url);
  c.sendConnected();
  c.sendStart({ tracks });
  for (const [track, i] of plan) c.sendMedia(track, frameFor(seed, track, i), i * 20);
  c.sendStop();
  await c.closed;
  return c;
}

t.test('gaps become silence of the right length, counted as missing; tracks stay aligned', async (t) => {
  const g = await startTestGateway(t);
  const plan: [('inbound' | 'outbound'), number][] = [];
  for (let i = 0; i < 100; i++) {
    if (i < 40 || i >= 50) plan.push(['inbound', i]); // inbound loses frames 40..49 (200 ms)
    if (i !== 70) plan.push(['outbound', i]); // outbound loses frame 70
  }
  const c = await sendPlan(g.wsUrl, 21, ['inbound', 'outbound'], plan);
  const [rec] = await waitForRecordings(g.http, c.callSid, 1);
  t.match(rec, { framesReceived: 189, framesMissing: 11, frames: { inbound: { received: 90, missing: 10 }, outbound: { received: 99, missing: 1 } } });
  const d = decodeWav(await fetchAudio(g.http, rec.recordingId));
  const inbound = Array.from(trackAudio(21, 'inbound', 100));
  inbound.fill(0xff, 40 * 160, 50 * 160);
  const outbound = Array.from(trackAudio(21, 'outbound', 100));
  outbound.fill(0xff, 70 * 160, 71 * 160);
  t.same(d.channel[0], inbound, 'inbound gap is silence, everything after it in place');
  t.same(d.channel[1], outbound, 'outbound gap is silence, aligned with inbound');
});

t.test('duplicates are dropped and late frames put in place', async (t) => {
  const g = await startTestGateway(t);
  const plan: [('inbound' | 'outbound'), number][] = [];
  for (let i = 0; i < 60; i++) {
    if (i === 20) continue;
    plan.push(['inbound', i]);
    if (i === 25) plan.push(['inbound', 20]); // 5 frames late (100 ms): inside the window
    if (i % 10 === 3) plan.push(['inbound', i]); // a duplicate
  }
  const c = await sendPlan(g.wsUrl, 31, ['inbound'], plan);
  const [rec] = await waitForRecordings(g.http, c.callSid, 1);
  t.match(rec, { framesReceived: 60, framesDuplicate: 6, framesLate: 1, framesMissing: 0, framesTooLate: 0 });
  t.same(decodeWav(await fetchAudio(g.http, rec.recordingId)).channel[0], Array.from(trackAudio(31, 'inbound', 60)));
});

t.test('RECORDING_FORMAT=pcm16 writes WAV format 1 with the G.711 decode of the audio', async (t) => {
  const g = await startTestGateway(t, { RECORDING_FORMAT: 'pcm16' });
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 41, frames: 100, realtime: false });
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);
  t.equal(rec.encoding, 'pcm16');
  const d = decodeWav(await fetchAudio(g.http, rec.recordingId));
  t.equal(d.audioFormat, 1);
  t.same(d.channel[0], Array.from(trackAudio(41, 'inbound', 100)).map((b) => MULAW_TO_PCM16[b]));
  t.same(d.channel[1], Array.from(trackAudio(41, 'outbound', 100)).map((b) => MULAW_TO_PCM16[b]));
  const viaSox = await soxRaw(audioPathOnDisk(g.dir, rec), 'signed');
  t.equal(viaSox.readInt16LE(0), MULAW_TO_PCM16[trackAudio(41, 'inbound', 1)[0]!], 'sox reads the same PCM');
});

t.test('segments rotate at SEGMENT_MAX_S and join back to the whole call', async (t) => {
  const g = await startTestGateway(t, { SEGMENT_MAX_S: '10' });
  const frames = 1250; // 25 s: segments of 10 + 10 + 5 s
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 51, frames, realtime: false });
  const recs = await waitForRecordings(g.http, res.callSid, 3);
  t.same(recs.map((r) => [r.segmentIndex, r.closeReason, r.durationMs, r.offsetMs]), [
    [0, 'rotate', 10000, 0], [1, 'rotate', 10000, 10000], [2, 'stop', 5000, 20000],
  ]);
  t.equal(recs.reduce((a, r) => a + r.framesReceived, 0), 2 * frames, 'every frame counted once');
  t.equal(Date.parse(recs[1]!.startedAt) - Date.parse(recs[0].startedAt), 10000);
  const left: number[] = [];
  const right: number[] = [];
  for (const r of recs) {
    const d = decodeWav(await fetchAudio(g.http, r.recordingId));
    left.push(...d.channel[0]!);
    right.push(...d.channel[1]!);
  }
  t.same(left, Array.from(trackAudio(51, 'inbound', frames)), 'segments concatenate to the inbound track');
  t.same(right, Array.from(trackAudio(51, 'outbound', frames)), 'and to the outbound track');
});

t.test('a stream closed without stop (network loss) is finalised as hangup', async (t) => {
  const g = await startTestGateway(t);
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 61, frames: 80, realtime: false, sendStop: false, end: 'terminate' });
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);
  t.match(rec, { closeReason: 'hangup', framesReceived: 80 });
  t.same(decodeWav(await fetchAudio(g.http, rec.recordingId)).channel[0], Array.from(trackAudio(61, 'inbound', 80)));
});

t.test('a silent stream is finalised as idle after STREAM_IDLE_TIMEOUT_S and the socket closed', async (t) => {
  // the gateway's monotonic clock is the test's: silence is measured on it, not on the wall
  let clock = 0;
  const g = await startTestGateway(t, { STREAM_IDLE_TIMEOUT_S: '1' }, { now: () => clock });
  const c = await TwilioStreamClient.connect(g.wsUrl);
  c.sendConnected();
  c.sendStart({ tracks: ['inbound'] });
  for (let i = 0; i < 25; i++) c.sendMedia('inbound', frameFor(71, 'inbound', i), i * 20);
  await until(() => g.gw.recorder.counters.framesReceived === 25, 'the 25 frames at the gateway');
  clock = 999;
  t.equal(g.gw.recorder.sweepIdle(), 0, '999 ms of silence: still open');
  t.ok(c.isOpen);
  clock = 1000;
  const closed = await c.closed; // the periodic sweep ends it now
  t.equal(closed.code, 1000, 'closed after a second of silence');
  const [rec] = await waitForRecordings(g.http, c.callSid, 1);
  t.match(rec, { closeReason: 'idle', framesReceived: 25 });
});

t.test('several streams of one call are recorded separately and listed under the call', async (t) => {
  const g = await startTestGateway(t);
  const callSid = randomSid('CA');
  const runs = await Promise.all([1, 2, 3].map((seed) => runStream({
    url: g.wsUrl, tracks: ['inbound'], seed: 80 + seed, frames: 50, realtime: false, callSid,
  })));
  const recs = await waitForRecordings(g.http, callSid, 3);
  t.same(new Set(recs.map((r) => r.streamSid)), new Set(runs.map((r) => r.streamSid)));
  for (const r of runs) {
    const rec = recs.find((x) => x.streamSid === r.streamSid)!;
    const seed = 80 + runs.indexOf(r) + 1;
    t.same(decodeWav(await fetchAudio(g.http, rec.recordingId)).channel[0], Array.from(trackAudio(seed, 'inbound', 50)), `stream ${seed} has its own audio`);
  }
});

t.test('many concurrent streams stay independent and bit-exact', async (t) => {
  const g = await startTestGateway(t);
  const n = 40;
  const runs = await Promise.all(Array.from({ length: n }, (_, i) => runStream({
    url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 1000 + i, frames: 150, realtime: false,
  })));
  for (let i = 0; i < n; i++) {
    const [rec] = await waitForRecordings(g.http, runs[i]!.callSid, 1);
    const d = decodeWav(await fetchAudio(g.http, rec.recordingId));
    t.ok(
      Buffer.from(d.channel[0]!).equals(trackAudio(1000 + i, 'inbound', 150)) &&
      Buffer.from(d.channel[1]!).equals(trackAudio(1000 + i, 'outbound', 150)),
      `stream ${i} bit-exact`,
    );
  }
});
