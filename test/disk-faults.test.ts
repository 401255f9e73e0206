// Disk faults against a real gateway process on real small filesystems (we run as root):
// - a full tmpfs (ENOSPC): disk_full alarm, the streams and the process carry on, the audio
//   written before the error is published with `writeError` once space is back;
// - a frozen ext4 (fsfreeze: every write blocks, i.e. the slowest disk there is): memory stays
//   bounded by WRITE_QUEUE_MAX_KB, the overflow is dropped and counted, the file stays aligned to
//   call time (silence where audio was dropped).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdir, statfs, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { TwilioStreamClient } from '../loadtest/twilio-stream-client.js';
import { runStream } from '../loadtest/stream-runner.js';
import { frameFor, trackAudio, type Track } from '../loadtest/audio-fixtures.js';
import { decodeWav, getJson, waitForRecordings, fetchAudio } from './fixtures/harness.js';
import { startProcess, tempDir, type Tap } from './fixtures/gateway-process.js';
import { until } from './fixtures/calls.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });

function mountOrFail(t: Tap, args: string[], dir: string): void {
  // No skip: if this machine cannot mount, the test fails and says why.
  sh('mount', [...args, dir]);
  t.teardown(() => { try { sh('umount', ['-l', dir]); } catch { /* already gone */ } });
}

/** A client sending frame i of `tracks` every 20 ms (timestamps by index, as Twilio does). */
function pace(c: TwilioStreamClient, seed: number, tracks: Track[]): { sent: () => number; stop: () => void } {
  let i = 0;
  const timer = setInterval(() => {
    if (!c.isOpen) return;
    for (const tr of tracks) c.sendMedia(tr, frameFor(seed, tr, i), i * 20);
    i++;
  }, 20);
  return { sent: () => i, stop: () => clearInterval(timer) };
}

const FRAMES_RECEIVED = /^gateway_frames_received_total (\d+)/m;

async function metric(http: string, re: RegExp): Promise<number> {
  const text = await (await fetch(`${http}/metrics`)).text();
  const m = text.match(re);
  return m ? Number(m[1]) : NaN;
}

t.test('a full disk: alarm, streams and process carry on, audio before the error is kept', async (t) => {
  const cwd = await tempDir(t, 'gw-full-');
  const rec = path.join(cwd, 'rec');
  await mkdir(rec);
  // 1 MB: the embedded catalog (SQLite + WAL under RECORDINGS_DIR) needs a few hundred KB of it
  mountOrFail(t, ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs'], rec);
  const gw = await startProcess(t, cwd, { RECORDINGS_DIR: rec });
  t.teardown(() => { if (gw.child.exitCode === null) gw.child.kill('SIGKILL'); });
  // Leave about 48 KB: three seconds of one stream's mono audio.
  const fs = await statfs(rec);
  const filler = path.join(rec, 'filler.bin');
  await writeFile(filler, Buffer.alloc(fs.bavail * fs.bsize - 48 * 1024));

  const a = await TwilioStreamClient.connect(gw.ws);
  a.sendConnected();
  a.sendStart({ tracks: ['inbound'] });
  const b = await TwilioStreamClient.connect(gw.ws);
  b.sendConnected();
  b.sendStart({ tracks: ['inbound', 'outbound'] });
  const pa = pace(a, 31, ['inbound']);
  const pb = pace(b, 32, ['inbound', 'outbound']);

  let alarms: { kind: string; streamSid?: string; message: string }[] = [];
  // The media journal may meet the full disk first (it then stops and gives its space back):
  // wait for the recording of stream a to meet it.
  for (let i = 0; i < 300 && !alarms.some((x) => x.kind === 'disk_full' && x.streamSid === a.streamSid); i++) {
    await sleep(50);
    alarms = (await getJson<{ items: typeof alarms }>(`${gw.http}/v1/alarms`)).body.items;
  }
  const full = alarms.filter((x) => x.kind === 'disk_full' && x.streamSid === a.streamSid);
  t.ok(full.length >= 1, 'disk_full alarm raised');
  t.match(full[0]!.message, /ENOSPC/);
  // the node goes on taking audio after the error: 50 more frames (a second of both streams)
  const atAlarm = await metric(gw.http, FRAMES_RECEIVED);
  await until(async () => (await metric(gw.http, FRAMES_RECEIVED)) >= atAlarm + 50, 'frames received after the disk filled');
  t.equal((await fetch(`${gw.http}/healthz`)).status, 200, 'the process lives on');
  t.ok(a.isOpen && b.isOpen, 'no stream was closed because of the disk');
  t.match(await (await fetch(`${gw.http}/metrics`)).text(), /gateway_alarms_total\{kind="disk_full"\} [1-9]/);

  // An operator frees space; the streams end normally and what was written before is published.
  await unlink(filler);
  pa.stop();
  pb.stop();
  const sentA = pa.sent();
  a.sendStop();
  b.sendStop();
  t.equal((await a.closed).code, 1000);
  t.equal((await b.closed).code, 1000);
  const [ra] = await waitForRecordings(gw.http, a.callSid, 1);
  t.match(ra.writeError, /ENOSPC/, 'sidecar records the write error');
  t.equal(ra.closeReason, 'stop');
  const wav = decodeWav(await fetchAudio(gw.http, ra.recordingId));
  const samples = wav.channel[0]!.length;
  t.ok(samples > 0 && samples < sentA * 160, `kept ${samples / 8} ms of ${sentA * 20} ms sent`);
  t.equal(ra.durationMs, samples / 8, 'duration is the audio in the file');
  t.ok(Buffer.from(wav.channel[0]!).equals(trackAudio(31, 'inbound', samples / 160)), 'kept audio is bit-exact');
  const [rb] = await waitForRecordings(gw.http, b.callSid, 1);
  t.ok(rb.sha256.length === 64, 'the other stream is published as well');

  // With space back, a new stream records completely.
  const res = await runStream({ url: gw.ws, tracks: ['inbound'], seed: 33, frames: 100, realtime: false });
  const [rc] = await waitForRecordings(gw.http, res.callSid, 1);
  t.equal(rc.writeError, undefined);
  t.ok(Buffer.from(decodeWav(await fetchAudio(gw.http, rc.recordingId)).channel[0]!).equals(trackAudio(33, 'inbound', 100)));
  gw.child.kill('SIGTERM');
  t.equal((await gw.exited).code, 0);
});

t.test('a stalled disk: bounded queue, dropped audio counted, file stays aligned', async (t) => {
  const cwd = await tempDir(t, 'gw-slow-');
  const img = path.join(cwd, 'disk.img');
  const rec = path.join(cwd, 'rec');
  await mkdir(rec);
  sh('truncate', ['-s', '16M', img]);
  sh('mkfs.ext4', ['-q', '-F', img]);
  mountOrFail(t, ['-o', 'loop', img], rec);
  let frozen = false;
  t.teardown(() => { if (frozen) sh('fsfreeze', ['-u', rec]); });
  const gw = await startProcess(t, cwd, { RECORDINGS_DIR: rec, WRITE_QUEUE_MAX_KB: '48' });
  t.teardown(() => { if (gw.child.exitCode === null) gw.child.kill('SIGKILL'); });

  const c = await TwilioStreamClient.connect(gw.ws);
  c.sendConnected();
  c.sendStart({ tracks: ['inbound', 'outbound'] });
  const p = pace(c, 41, ['inbound', 'outbound']);
  // 2 s of audio on both tracks reached the gateway before the disk stalls
  await until(async () => (await metric(gw.http, FRAMES_RECEIVED)) >= 200, '2 s of audio received');
  sh('fsfreeze', ['-f', rec]);
  frozen = true;
  // 16 KB/s of stereo mu-law: the 48 KB cap is full after ~3 s of stalled disk, then audio drops
  await until(async () => (await metric(gw.http, /^gateway_frames_dropped_total\{reason="disk_backpressure"\} (\d+)/m)) > 0, 'audio dropped', 20_000);
  const queued = await metric(gw.http, /^gateway_write_queue_bytes (\d+)/m);
  const dropped = await metric(gw.http, /^gateway_frames_dropped_total\{reason="disk_backpressure"\} (\d+)/m);
  t.ok(queued > 0 && queued <= 48 * 1024, `write queue bounded: ${queued} bytes`);
  t.ok(dropped > 0, `dropped frames counted: ${dropped}`);
  const alarmed = await (await fetch(`${gw.http}/v1/alarms?kind=audio_dropped`)).json() as { items: { streamSid?: string; details?: { reason?: string } }[] };
  t.same(alarmed.items.map((a) => [a.streamSid, a.details?.reason]), [[c.streamSid, 'disk_backpressure']], 'one audio_dropped alarm for the stream');
  t.equal((await fetch(`${gw.http}/healthz`)).status, 200, 'the node answers while the disk is stalled');
  sh('fsfreeze', ['-u', rec]);
  frozen = false;
  // the queue drains and a second of audio after the stall goes through it
  const thawedAt = p.sent();
  await until(async () => p.sent() >= thawedAt + 50 && (await metric(gw.http, /^gateway_write_queue_bytes (\d+)/m)) < 16 * 1024, 'writes flowing again', 20_000);
  p.stop();
  const sent = p.sent();
  c.sendStop();
  t.equal((await c.closed).code, 1000);
  const [r] = await waitForRecordings(gw.http, c.callSid, 1) as RecordingSidecar[];
  t.ok((r!.framesDroppedDiskBackpressure ?? 0) > 0, `sidecar counts ${r!.framesDroppedDiskBackpressure} dropped frames`);
  const wav = decodeWav(await fetchAudio(gw.http, r!.recordingId));
  t.equal(wav.channel[0]!.length, sent * 160, 'the file covers the whole call: aligned to call time');
  // Every 20 ms frame of each channel is either exactly what was sent or dropped as silence.
  let silentFrames = 0;
  for (const [ch, track] of [[0, 'inbound'], [1, 'outbound']] as const) {
    const got = Buffer.from(wav.channel[ch]!);
    for (let i = 0; i < sent; i++) {
      const f = got.subarray(i * 160, i * 160 + 160);
      if (f.every((x) => x === 0xff)) silentFrames++;
      else if (!f.equals(frameFor(41, track, i))) { t.fail(`${track} frame ${i} is neither the sent audio nor silence`); break; }
    }
  }
  t.equal(silentFrames, r!.framesDroppedDiskBackpressure, 'silence exactly where audio was dropped');
  t.ok(Buffer.from(wav.channel[0]!).subarray(0, 80 * 160).equals(trackAudio(41, 'inbound', 80)), 'audio before the stall intact');
  t.ok(Buffer.from(wav.channel[0]!).subarray((sent - 25) * 160).equals(trackAudio(41, 'inbound', 25, 160, sent - 25)), 'audio after the stall intact');
  gw.child.kill('SIGTERM');
  t.equal((await gw.exited).code, 0);
});
