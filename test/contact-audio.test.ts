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
