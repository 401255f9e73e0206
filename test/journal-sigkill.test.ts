// SIGKILL under 50 live both_tracks streams, then a restart over the same RECORDINGS_DIR: with
// the media journal (recorder/journal.ts, 50 ms group commit) every stream's recovered file
// holds all but at most 250 ms of the audio sent before the kill, each track a bit-exact prefix
// of what was sent, both tracks aligned sample by sample (file sample i = call time i/8 ms on
// both channels). Without the journal a kill lost the 1 s jitter window plus a 500 ms batch.
import t from 'tap';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { runStream, StreamScheduler, type RunCounters, type RunStreamResult } from '../loadtest/stream-runner.js';
import { trackAudio, FRAME_BYTES, MULAW_SILENCE, type Track } from '../loadtest/audio-fixtures.js';
import { parseWavHeader } from '../codecs/wav.js';
import { globSidecars } from './fixtures/disk.js';
import { startProcess, tempDir } from './fixtures/gateway-process.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const STREAMS = 50;
const SEED = 500;
/** the bound on audio lost to a crash */
const MAX_LOST_MS = 250;
/**
 * Frames the client handed to its socket in the scheduler tick before the kill may not have
 * left this process yet (the StreamScheduler sends every 10 ms: at most one frame per track per
 * tick at 20 ms pacing). They are not counted as received by the gateway.
 */
const IN_FLIGHT_FRAMES = 1;

/** Leading frames of `channel` equal to what was sent, and whether everything after is silence. */
function prefixOf(data: Buffer, channels: number, channel: number, sent: Buffer): { frames: number; restSilent: boolean } {
  const samples = data.length / channels;
  let i = 0;
  while (i < samples && i < sent.length && data[i * channels + channel] === sent[i]) i++;
  const frames = Math.floor(i / FRAME_BYTES);
  let restSilent = true;
  for (let k = frames * FRAME_BYTES; k < samples && restSilent; k++) {
    if (k < i) continue; // matched audio of a partly kept last frame cannot happen, but is not silence either
    restSilent = data[k * channels + channel] === MULAW_SILENCE;
  }
  return { frames: i % FRAME_BYTES === 0 ? frames : -1, restSilent };
}

t.test('SIGKILL under 50 live streams loses at most 250 ms per stream; recovered files are bit-exact prefixes', async (t) => {
  const cwd = await tempDir(t, 'gw-journal-kill-');
  const env = { RECORDINGS_DIR: path.join(cwd, 'rec') };
  const first = await startProcess(t, cwd, env);
  const abort = new AbortController();
  const scheduler = new StreamScheduler({ tickMs: 10 });
  const counters: RunCounters[] = [];
  const runs: Promise<RunStreamResult>[] = [];
  let connected = 0;
  for (let k = 0; k < STREAMS; k++) {
    const c: RunCounters = { mediaMessages: 0, messages: 0 };
    counters.push(c);
    runs.push(runStream({
      url: first.ws, tracks: ['inbound', 'outbound'], seed: SEED + k, frames: Infinity, realtime: true,
      signal: abort.signal, counters: c, scheduler, onConnected: () => { connected++; },
      onError: () => undefined, // the kill resets every socket
    }));
  }
  await until(() => connected === STREAMS, 'every stream connected');
  // ~2.5 s of audio on every stream: several journal files rotated, segment writes behind them
  await until(() => counters.every((c) => c.mediaMessages >= 2 * 125), '2.5 s of audio sent on every stream');
  const sentAtKill = counters.map((c) => c.mediaMessages / 2);
  first.child.kill('SIGKILL');
  t.equal((await first.exited).signal, 'SIGKILL');
  abort.abort();
  const results = await Promise.all(runs);
  const journalDir = path.join(env.RECORDINGS_DIR, '.journal');
  const [nodeDir] = await readdir(journalDir);
  t.ok((await readdir(path.join(journalDir, nodeDir!))).length > 0, 'the crash left journal files');

  const second = await startProcess(t, cwd, env);
  await until(async () => (await fetch(`${second.http}/readyz`)).status === 200, 'ready after recovery');
  t.same(await readdir(path.join(env.RECORDINGS_DIR, '.inprogress')), [], 'nothing left in .inprogress');
  t.same(await readdir(path.join(journalDir, nodeDir!)), [], 'the replayed journal is deleted');

  const bySid = new Map<string, { s: RecordingSidecar; file: string }>();
  for (const p of await globSidecars(env.RECORDINGS_DIR)) {
    const s = JSON.parse(await readFile(p, 'utf8')) as RecordingSidecar;
    bySid.set(s.streamSid, { s, file: p });
  }
  let worst = 0;
  const losses: number[] = [];
  for (let k = 0; k < STREAMS; k++) {
    const r = results[k]!;
    const found = bySid.get(r.streamSid);
    if (!found) {
      t.fail(`stream ${k}: no recovered recording`);
      continue;
    }
    t.equal(found.s.closeReason, 'recovered', `stream ${k}: recovered`);
    const wav = await readFile(found.file.replace(/\.json$/, '.wav'));
    const info = parseWavHeader(wav);
    const data = wav.subarray(info.dataOffset, info.dataOffset + info.dataBytes);
    t.equal(info.channels, 2);
    const fileFrames = data.length / 2 / FRAME_BYTES;
    for (const [c, track] of [[0, 'inbound'], [1, 'outbound']] as [number, Track][]) {
      const sent = trackAudio(SEED + k, track, sentAtKill[k]!);
      const p = prefixOf(data, 2, c, sent);
      // bit-exact prefix: frame i of the track at samples [160 i, 160 i + 160) of its channel,
      // then at most the last frame of the file silent (its other track's frame was committed)
      if (p.frames < 0 || !p.restSilent || fileFrames - p.frames > 1) {
        t.fail(`stream ${k} ${track}: not a bit-exact prefix (${p.frames} frames match, file ${fileFrames} frames)`);
        continue;
      }
      const lostMs = Math.max(0, sentAtKill[k]! - IN_FLIGHT_FRAMES - p.frames) * 20;
      losses.push(lostMs);
      worst = Math.max(worst, lostMs);
      if (lostMs > MAX_LOST_MS) t.fail(`stream ${k} ${track}: ${lostMs} ms lost (sent ${sentAtKill[k]} frames, recovered ${p.frames})`);
    }
  }
  losses.sort((a, b) => a - b);
  t.equal(losses.length, STREAMS * 2, 'every track of every stream is a bit-exact prefix');
  t.ok(worst <= MAX_LOST_MS, `at most ${MAX_LOST_MS} ms lost per stream: worst ${worst} ms, median ${losses[losses.length >> 1]} ms`);

  second.child.kill('SIGTERM');
  t.equal((await second.exited).code, 0);
});

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await sleep(20);
  }
}
