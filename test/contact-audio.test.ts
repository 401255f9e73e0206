// GET /v1/cti-sessions/:id/audio: the legs of one contact on the wall clock, in one PCM16
// stereo WAV, compared sample by sample.
import t from 'tap';
import { runStream } from '../loadtest/stream-runner.js';
import { trackAudio } from '../loadtest/audio-fixtures.js';
import { MULAW_TO_PCM16 } from '../codecs/g711.js';
import { startTestGateway, waitForRecordings, decodeWav } from './fixtures/harness.js';

const pcm = (b: Buffer) => Array.from(b, (x) => MULAW_TO_PCM16[x]);

t.test('legs placed by startedAt, gaps as silence, mono legs on the channel of their track', async (t) => {
  let wall = Date.parse('2024-06-01T12:00:00.000Z');
  const g = await startTestGateway(t, {}, { wallNow: () => new Date(wall) });
  const cp = { ctiSessionId: 'CONTACT-1' };
  const a = await runStream({ url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 1, frames: 50, realtime: false, customParameters: cp });
  await waitForRecordings(g.http, a.callSid, 1);
  wall += 2000; // the transfer target's leg starts 2 s after the first
  const b = await runStream({ url: g.wsUrl, tracks: ['outbound'], seed: 2, frames: 50, realtime: false, customParameters: cp });
  await waitForRecordings(g.http, b.callSid, 1);

  const res = await fetch(`${g.http}/v1/cti-sessions/CONTACT-1/audio`);
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'audio/wav');
  const wav = Buffer.from(await res.arrayBuffer());
  t.equal(Number(res.headers.get('content-length')), wav.length);
  const d = decodeWav(wav);
  t.match(d, { audioFormat: 1, channels: 2, sampleRate: 8000 });
  const silence = (n: number) => new Array<number>(n).fill(0);
  t.same(d.channel[0], [...pcm(trackAudio(1, 'inbound', 50)), ...silence(16000)], 'left: caller of leg 1, then silence');
  t.same(d.channel[1], [...pcm(trackAudio(1, 'outbound', 50)), ...silence(8000), ...pcm(trackAudio(2, 'outbound', 50))],
    'right: agent of leg 1, the 1 s gap, the mono outbound leg 2');
  const none = await fetch(`${g.http}/v1/cti-sessions/NOPE/audio`);
  t.equal(none.status, 404);
});

t.test('overlapping legs (a conference) are summed sample by sample, clipped to 16 bit', async (t) => {
  let wall = Date.parse('2024-06-01T13:00:00.000Z');
  const g = await startTestGateway(t, {}, { wallNow: () => new Date(wall) });
  const cp = { ctiSessionId: 'CONF-1' };
  const a = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 11, frames: 100, realtime: false, customParameters: cp });
  await waitForRecordings(g.http, a.callSid, 1);
  wall += 1000; // the second leg joins 1 s into the first (2 s long): 1 s of overlap
  const b = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 12, frames: 100, realtime: false, customParameters: cp });
  await waitForRecordings(g.http, b.callSid, 1);

  const res = await fetch(`${g.http}/v1/cti-sessions/CONF-1/audio`);
  t.equal(res.status, 200);
  const d = decodeWav(Buffer.from(await res.arrayBuffer()));
  const legA = pcm(trackAudio(11, 'inbound', 100));
  const legB = pcm(trackAudio(12, 'inbound', 100));
  const clip = (v: number) => Math.max(-32768, Math.min(32767, v));
  const expected = new Array<number>(24000).fill(0);
  legA.forEach((v, i) => { expected[i]! += v!; });
  legB.forEach((v, i) => { expected[8000 + i] = clip(expected[8000 + i]! + v!); });
  t.equal(d.channel[0]!.length, 24000, 'the contact runs from the first leg start to the last leg end');
  const firstDiff = d.channel[0]!.findIndex((v, i) => v !== expected[i]);
  t.equal(firstDiff, -1, `left: both callers, summed where they overlap (first difference at ${firstDiff}: ${d.channel[0]![firstDiff]} vs ${expected[firstDiff]})`);
  t.ok(d.channel[1]!.every((v) => v === 0), 'right: no agent audio in either leg');
  t.ok(expected.slice(8000, 16000).some((v, i) => v !== legA[8000 + i]), 'the overlap really mixes two legs');
});
