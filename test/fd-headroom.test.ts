// Descriptor headroom, in a gateway process run under `ulimit -n 256`: a flood of WebSockets that
// never send start must be refused (503) before it takes the descriptors a live call needs to
// finish and publish its recording.
import t from 'tap';
import path from 'node:path';
import { startProcess, tempDir } from './fixtures/gateway-process.js';
import { TwilioStreamClient, UpgradeRefusedError } from '../loadtest/twilio-stream-client.js';
import { frameFor, trackAudio } from '../loadtest/audio-fixtures.js';
import { waitForRecordings, fetchAudio, decodeWav } from './fixtures/harness.js';

t.test('230 sockets that never start cannot make a live call lose its recording (ulimit -n 256)', async (t) => {
  const cwd = await tempDir(t, 'gw-fd-');
  const gw = await startProcess(t, cwd, {
    RECORDINGS_DIR: path.join(cwd, 'rec'), START_TIMEOUT_S: '300',
  }, { openFiles: 256 });
  t.match(gw.stdout(), /carries about \d+ streams, fewer than MAX_STREAMS=2000/, 'the limit is reported at start');

  const live = await TwilioStreamClient.connect(gw.ws);
  live.sendConnected();
  live.sendStart({ tracks: ['inbound', 'outbound'] });
  const send = (from: number, to: number) => {
    for (let i = from; i < to; i++) for (const tr of ['inbound', 'outbound'] as const) live.sendMedia(tr, frameFor(21, tr, i), i * 20);
  };
  send(0, 150);

  const idle: TwilioStreamClient[] = [];
  let refused = 0;
  for (let i = 0; i < 230; i++) {
    try {
      idle.push(await TwilioStreamClient.connect(gw.ws));
    } catch (err) {
      if (!(err instanceof UpgradeRefusedError) || err.status !== 503) throw err;
      refused++;
    }
  }
  t.teardown(() => Promise.all(idle.map((c) => c.terminate())));
  t.ok(refused > 0, `${refused} upgrades refused, ${idle.length} accepted`);
  const metrics = await (await fetch(`${gw.http}/metrics`)).text();
  t.match(metrics, new RegExp(`gateway_upgrades_refused_total\\{reason="fd_headroom"\\} ${refused}\\b`), 'counted by reason');

  send(150, 250);
  live.sendStop();
  t.equal((await live.closed).code, 1000);
  const [rec] = await waitForRecordings(gw.http, live.callSid, 1, 30_000);
  t.equal(rec.framesReceived, 500);
  t.equal(rec.writeError, undefined);
  const wav = decodeWav(await fetchAudio(gw.http, rec.recordingId));
  t.ok(Buffer.from(wav.channel[0]!).equals(trackAudio(21, 'inbound', 250)), 'inbound bit-exact');
  t.ok(Buffer.from(wav.channel[1]!).equals(trackAudio(21, 'outbound', 250)), 'outbound bit-exact');
  const alarms = await (await fetch(`${gw.http}/v1/alarms?kind=segment_publish_failed`)).json() as { items: unknown[] };
  t.same(alarms.items, [], 'no segment_publish_failed');
  gw.child.kill('SIGTERM');
  t.equal((await gw.exited).code, 0);
});
