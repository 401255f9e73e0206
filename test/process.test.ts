// The gateway as a process, started the way containers start it (`node` directly): the
// embedded default records out of the box, a bad setting stops start-up with one line and
// exit 78, SIGTERM drains (readyz 503, new streams refused, live ones finalised as shutdown).
import t from 'tap';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { TwilioStreamClient, UpgradeRefusedError } from '../loadtest/twilio-stream-client.js';
import { runStream } from '../loadtest/stream-runner.js';
import { frameFor, trackAudio } from '../loadtest/audio-fixtures.js';
import { waitForRecordings, fetchAudio, decodeWav } from './fixtures/harness.js';
import { globSidecars } from './fixtures/disk.js';
import { spawnGateway, exitOf, startProcess, tempDir } from './fixtures/gateway-process.js';
import { until } from './fixtures/calls.js';

t.test('a bad setting stops start-up with one line naming it, exit 78', async (t) => {
  const cwd = await tempDir(t);
  const cases: [Record<string, string>, RegExp][] = [
    [{ RECORDING_FORMAT: 'wav' }, /^config error: RECORDING_FORMAT="wav" is not allowed: expected one of mulaw, pcm16\n$/],
    [{ MIN_SESSION_LENGTH_S: '4000' }, /^config error: MIN_SESSION_LENGTH_S="4000" is out of range: [^\n]*0\.\.3600[^\n]*\n$/],
    [{ TWILIO_ACCOUNT_SID: 'AC123' }, /^config error: TWILIO_ACCOUNT_SID="AC123" [^\n]+\n$/],
    [{ TWILIO_ACCOUNT_SID: `AC${'a'.repeat(32)}`, TWILIO_AUTH_TOKEN: 'short secret' }, /^config error: TWILIO_AUTH_TOKEN="<redacted>" [^\n]+\n$/],
    [{ GATEWAY_CONFIG: path.join(cwd, 'missing.json') }, /^config error: GATEWAY_CONFIG[^\n]+\n$/],
  ];
  for (const [env, expected] of cases) {
    const child = spawnGateway(cwd, env);
    const { code, stderr } = await exitOf(child);
    t.equal(code, 78, `${Object.keys(env).join(',')}: exit 78`);
    t.match(stderr, expected, 'one clear line');
    t.notMatch(stderr, /short secret/, 'the secret never appears');
  }
});

t.test('with no configuration the process records a call under ./recordings', async (t) => {
  const cwd = await tempDir(t);
  const gw = await startProcess(t, cwd, {});
  const health = await fetch(`${gw.http}/healthz`);
  t.equal(health.status, 200);
  t.equal((await fetch(`${gw.http}/readyz`)).status, 200);
  const res = await runStream({ url: gw.ws, tracks: ['inbound', 'outbound'], seed: 4, frames: 100, realtime: false });
  const [rec] = await waitForRecordings(gw.http, res.callSid, 1);
  const d = decodeWav(await fetchAudio(gw.http, rec.recordingId));
  t.ok(Buffer.from(d.channel[0]!).equals(trackAudio(4, 'inbound', 100)), 'recorded bit-exact');
  t.same((await readdir(path.join(cwd, 'recordings'))).sort(),
    ['.catalog.sqlite', '.catalog.sqlite-shm', '.catalog.sqlite-wal', '.ids', '.inprogress', res.accountSid].sort(),
    'under ./recordings by default, the embedded catalog beside it');
  gw.child.kill('SIGTERM');
  t.equal((await gw.exited).code, 0, 'exits 0 after SIGTERM');
});

t.test('SIGTERM drains: not ready, new streams refused, live streams finalised as shutdown, nothing lost', async (t) => {
  const cwd = await tempDir(t);
  const gw = await startProcess(t, cwd, { DRAIN_TIMEOUT_S: '2' });
  const c = await TwilioStreamClient.connect(gw.ws);
  c.sendConnected();
  c.sendStart({ tracks: ['inbound'] });
  let sent = 0;
  const pump = setInterval(() => {
    if (c.isOpen) {
      c.sendMedia('inbound', frameFor(8, 'inbound', sent), sent * 20);
      sent++;
    }
  }, 20);
  // the stream is live at the gateway (listed) and its audio is flowing
  await until(async () => {
    const r = await fetch(`${gw.http}/v1/calls`).then((x) => x.json() as Promise<{ items: unknown[] }>);
    return r.items.length === 1 && sent >= 10;
  }, 'the stream listed by the gateway');
  gw.child.kill('SIGTERM');
  await until(async () => (await fetch(`${gw.http}/readyz`)).status === 503, 'readyz 503 while draining');
  t.pass('readyz 503 while draining');
  const refused = await TwilioStreamClient.connect(gw.ws).then(() => 101, (e: unknown) => (e instanceof UpgradeRefusedError ? e.status : -1));
  t.equal(refused, 503, 'a new stream is refused during the drain');
  const closed = await c.closed;
  clearInterval(pump);
  t.equal(closed.code, 1001, 'the live stream is closed as going away after DRAIN_TIMEOUT_S');
  const sentBeforeClose = sent;
  const { code } = await gw.exited;
  t.equal(code, 0);
  // The process is gone: read the published sidecar and audio from disk.
  const [sidecarPath] = await globSidecars(path.join(cwd, 'recordings'));
  const sidecar = JSON.parse(await readFile(sidecarPath!, 'utf8'));
  t.equal(sidecar.closeReason, 'shutdown');
  t.ok(sidecar.framesReceived >= sentBeforeClose - 2 && sidecar.framesReceived <= sentBeforeClose, `frames received ${sidecar.framesReceived} of ${sentBeforeClose} sent`);
  const wav = decodeWav(await readFile(sidecarPath!.replace(/\.json$/, '.wav')));
  t.ok(Buffer.from(wav.channel[0]!).equals(trackAudio(8, 'inbound', sidecar.framesReceived)), 'every received frame is in the file');
  t.equal(sidecar.framesMissing, 0);
});
