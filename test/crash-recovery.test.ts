// SIGKILL mid-call, then a restart over the same RECORDINGS_DIR: the partial becomes a valid
// recording (closeReason "recovered"), a bit-exact prefix of what was sent with at most about the
// last second missing, published and indexed before /readyz first answers 200. A partial without
// readable meta is kept as audio in .unattributed.
import t from 'tap';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { runStream, type RunCounters } from '../loadtest/stream-runner.js';
import { trackAudio } from '../loadtest/audio-fixtures.js';
import { buildWavHeader, parseWavHeader } from '../codecs/wav.js';
import { decodeWav, getJson } from './fixtures/harness.js';
import { globSidecars } from './fixtures/disk.js';
import { startProcess, tempDir } from './fixtures/gateway-process.js';
import { until } from './fixtures/calls.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('SIGKILL mid-call: the next start recovers the partial before it is ready', async (t) => {
  const cwd = await tempDir(t, 'gw-crash-');
  const env = { RECORDINGS_DIR: path.join(cwd, 'rec') };
  const first = await startProcess(t, cwd, env);
  const abort = new AbortController();
  const counters: RunCounters = { mediaMessages: 0, messages: 0 };
  const run = runStream({
    url: first.ws, tracks: ['inbound', 'outbound'], seed: 21, frames: Infinity, realtime: true, signal: abort.signal, counters,
  });
  // A stats checkpoint on disk (the first is written with the first audio), then 2 s more audio
  // (two tracks: 200 messages), so recovery counts frames from both the checkpoint and the audio.
  const inprogressDir = path.join(env.RECORDINGS_DIR, '.inprogress');
  await until(async () => (await readdir(inprogressDir).catch(() => [] as string[])).some((n) => n.endsWith('.ckpt')), 'a stats checkpoint', 15_000);
  const atCheckpoint = counters.mediaMessages;
  await until(() => counters.mediaMessages >= atCheckpoint + 200, 'audio after the checkpoint');
  first.child.kill('SIGKILL');
  const killed = await first.exited;
  t.equal(killed.signal, 'SIGKILL');
  const res = await run;
  const sentFrames = res.framesSent.inbound;
  t.ok(sentFrames > 140, `frames sent per track before the kill: ${sentFrames}`);
  const inprogress = path.join(env.RECORDINGS_DIR, '.inprogress');
  t.ok((await readdir(inprogress)).some((n) => n.endsWith('.wav')), 'the crash left a partial');
  t.same(await globSidecars(env.RECORDINGS_DIR), [], 'nothing published before recovery');

  // A partial whose meta is gone: its audio must survive too.
  const orphanAudio = Buffer.alloc(8000, 0x55);
  await writeFile(path.join(inprogress, 'orphan.wav'), Buffer.concat([
    buildWavHeader({ encoding: 'mulaw', channels: 1, sampleRate: 8000, dataBytes: 0 }), orphanAudio, Buffer.from([0x55]),
  ]));

  const second = await startProcess(t, cwd, env);
  // Poll readiness; at the first 200 the recording must already be on disk and in the index.
  const statuses: number[] = [];
  let listed: RecordingSidecar[] = [];
  for (let i = 0; i < 200; i++) {
    const st = (await fetch(`${second.http}/readyz`)).status;
    statuses.push(st);
    if (st === 200) {
      listed = (await getJson<{ items: RecordingSidecar[] }>(`${second.http}/v1/recordings?callSid=${res.callSid}`)).body.items;
      break;
    }
    t.equal(st, 503, 'not ready while recovering');
    await sleep(10);
  }
  t.equal(statuses.at(-1), 200, 'ready after recovery');
  t.equal(listed.length, 1, 'the recovered recording is indexed when the node first reports ready');
  t.same(await readdir(inprogress), [], 'nothing left in .inprogress');

  const [sidecarPath] = await globSidecars(env.RECORDINGS_DIR);
  const sidecar = JSON.parse(await readFile(sidecarPath!, 'utf8')) as RecordingSidecar;
  t.same(listed[0], sidecar);
  t.equal(sidecar.closeReason, 'recovered');
  t.equal(sidecar.streamSid, res.streamSid);
  const wavBytes = await readFile(sidecarPath!.replace(/\.json$/, '.wav'));
  t.equal(sidecar.sha256, createHash('sha256').update(wavBytes).digest('hex'), 'sha256 of the published file');
  t.equal(sidecar.audioBytes, wavBytes.length);
  const info = parseWavHeader(wavBytes);
  t.equal(info.dataOffset + info.dataBytes + (info.dataBytes % 2), wavBytes.length, 'header patched to the data on disk');
  const wav = decodeWav(wavBytes);
  const samples = wav.channel[0]!.length;
  t.equal(sidecar.durationMs, samples / 8);
  const keptFrames = Math.floor(samples / 160);
  for (const [c, track] of [[0, 'inbound'], [1, 'outbound']] as const) {
    // The client sends each frame's inbound then outbound message: the kill may land between the
    // two, so one track's last frame may be missing (silence) in the file. Everything before it
    // is bit-exact; the last frame is either the one sent or silence.
    const got = Buffer.from(wav.channel[c]!);
    const want = trackAudio(21, track, samples / 160);
    const body = Math.max(0, samples - 160);
    t.ok(got.subarray(0, body).equals(want.subarray(0, body)), `${track}: bit-exact prefix of what was sent`);
    const last = got.subarray(body);
    t.ok(last.equals(want.subarray(body)) || last.every((b) => b === 0xff), `${track}: the last frame is the one sent, or silence (in flight at the kill)`);
    // Frame counts: checkpoint + audio after it; every frame was a real 160-sample frame.
    t.ok(Math.abs(sidecar.frames[track]!.received - keptFrames) <= 1, `${track}: framesReceived ${sidecar.frames[track]!.received} ≈ ${keptFrames} frames in the file`);
  }
  const lostMs = (sentFrames - keptFrames) * 20;
  // The jitter window is 1 s and writes go out every 500 ms; allow some scheduling slack on a
  // loaded machine (frames handed to the socket just before the kill never reached the node).
  t.ok(lostMs <= 1300, `at most about one second lost at the end: ${lostMs} ms`);
  t.equal(sidecar.framesMissing, 0);

  const orphan = await readFile(path.join(env.RECORDINGS_DIR, '.unattributed', 'orphan.wav'));
  const o = parseWavHeader(orphan);
  t.equal(o.dataBytes, 8001, 'a partial without meta keeps its audio under a patched header');
  t.ok(orphan.subarray(o.dataOffset, o.dataOffset + 8000).equals(orphanAudio));

  second.child.kill('SIGTERM');
  t.equal((await second.exited).code, 0);
});
