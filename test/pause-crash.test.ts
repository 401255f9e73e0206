// PCI pauses across a SIGKILL: a recovered recording says of its pauses what the live sidecar
// says (README, Crashes). A spawned gateway (real process, sockets and files) records a stream
// that is paused and resumed through the API, is SIGKILLed, and a second process over the same
// RECORDINGS_DIR recovers it. The recovered sidecar lists every pause exactly as the gateway's
// 200 answers declared it (`atMs`), also a pause resumed in the last second before the kill (the
// stream's pause record, written before each 200, not the ≤ 2 s old checkpoint); with
// PAUSE_BEHAVIOR=silence the paused span is silence and no missing audio, with `skip` it is cut
// out; the file is compared sample by sample with what was sent. A pause still open at the kill
// ends at the end of what was recorded.
import t, { type Test } from 'tap';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { frameFor, MULAW_SILENCE, type Track } from '../loadtest/audio-fixtures.js';
import { decodeWav, getJson } from './fixtures/harness.js';
import { openStream, post, until, type OpenStream } from './fixtures/calls.js';
import { startProcess, tempDir, type Running } from './fixtures/gateway-process.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

const TRACKS: Track[] = ['inbound', 'outbound'];
const SEED = 61;
const FRAME_MS = 20;
const SAMPLES_PER_MS = 8;

interface Span { from: number; to: number }

/** What the gateway's /metrics says it placed on timelines (both tracks): a sync point, not a mock. */
async function framesReceived(g: Running): Promise<number> {
  const text = await (await fetch(`${g.http}/metrics`)).text();
  return Number(/^gateway_frames_received_total (\d+)/m.exec(text)?.[1] ?? -1);
}

/** Is frame `k` (both tracks) in the node's media journal, i.e. handed to the kernel (survives a SIGKILL)? */
async function journaled(rec: string, k: number): Promise<boolean> {
  const root = path.join(rec, '.journal');
  const files: string[] = [];
  for (const node of await readdir(root).catch(() => [] as string[])) {
    for (const f of await readdir(path.join(root, node)).catch(() => [] as string[])) files.push(path.join(root, node, f));
  }
  const data = Buffer.concat(await Promise.all(files.map((f) => readFile(f).catch(() => Buffer.alloc(0)))));
  return TRACKS.every((tr) => data.includes(frameFor(SEED, tr, k)));
}

/** The frame's start is paused by a declared span (an open one has to = Infinity). */
const pausedAt = (spans: Span[], startMs: number) => spans.some((p) => startMs >= p.from && startMs < p.to);

/** A frame sent on both tracks: payload frameFor(SEED, track, k), stamped `ms`. */
interface Sent { k: number; ms: number }

/** Frame k of both tracks at call time `ms`; resolves when handed to the socket. */
function sendFrames(s: OpenStream, frames: Sent[]): Promise<void> {
  return new Promise((resolve, reject) => {
    if (frames.length === 0) resolve();
    frames.forEach((f, i) => TRACKS.forEach((tr, c) => s.client.sendMedia(tr, frameFor(SEED, tr, f.k), f.ms,
      i === frames.length - 1 && c === TRACKS.length - 1 ? (err) => (err ? reject(err) : resolve()) : undefined)));
  });
}

/** `count` frames every 20 ms from `ms` on, numbered from `k` */
const run = (k: number, ms: number, count: number): Sent[] => Array.from({ length: count }, (_, i) => ({ k: k + i, ms: ms + i * FRAME_MS }));

/**
 * What the file must hold, per track: every frame sent that no pause dropped, at its call time
 * (silence) or moved back by the pauses cut before it (skip); silence elsewhere.
 */
function expectedAudio(sent: Sent[], spans: Span[], skip: boolean, samples: number): { tracks: Buffer[]; kept: number; end: number } {
  const tracks = TRACKS.map(() => Buffer.alloc(samples, MULAW_SILENCE));
  let kept = 0;
  let end = 0;
  for (const { k, ms } of sent) {
    if (pausedAt(spans, ms)) continue;
    const cut = skip ? spans.filter((p) => p.to <= ms).reduce((n, p) => n + p.to - p.from, 0) : 0;
    const pos = Math.round((ms - cut) * SAMPLES_PER_MS);
    TRACKS.forEach((tr, c) => frameFor(SEED, tr, k).copy(tracks[c]!, pos));
    kept++;
    end = Math.max(end, pos + 160);
  }
  return { tracks: tracks.map((b) => b.subarray(0, samples)), kept, end };
}

/** The first sample where two tracks differ, for a readable failure. */
function firstDiff(a: Buffer, b: Buffer): string {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return `sample ${i} (${i / 8} ms): ${a[i]} vs ${b[i]}`;
  return 'equal';
}

/** The pause's 200 answer: the instant it took effect on our one stream. */
async function pauseOrResume(t: Test, g: Running, s: OpenStream, action: 'pause' | 'resume'): Promise<number> {
  const r = await post(`${g.http}/v1/calls/${s.callSid}/${action}`);
  t.equal(r.status, 200, `${action} answered 200`);
  t.equal(r.body.streams.length, 1);
  t.equal(r.body.streams[0].streamSid, s.streamSid);
  return r.body.streams[0].atMs as number;
}

/** Wall-clock instant `ms` after `t0` (the call time being spoken then): a resume asked then ends the pause at or after it. */
const untilWall = (t0: number, ms: number) => new Promise((r) => setTimeout(r, Math.max(0, t0 + ms - Date.now())));

/** Kill the first process, recover with a second one, return the one recording and its decoded tracks. */
async function killAndRecover(t: Test, cwd: string, env: Record<string, string>, first: Running, s: OpenStream): Promise<{ rec: RecordingSidecar; tracks: Buffer[] }> {
  first.child.kill('SIGKILL');
  t.equal((await first.exited).signal, 'SIGKILL');
  await s.client.closed.catch(() => undefined);
  const second = await startProcess(t, cwd, env);
  await until(async () => (await fetch(`${second.http}/readyz`)).status === 200, 'recovery done (ready)', 30_000);
  const { body } = await getJson<{ items: RecordingSidecar[] }>(`${second.http}/v1/recordings?callSid=${s.callSid}`);
  // once (1 of ~10 loaded runs) the list was empty right after /readyz: say what the second
  // process logged of recovery and the catalog, so that failure can be read next time
  const why = body.items.length === 1 ? '' : `; the recovering gateway logged:\n${second.stdout().split('\n')
    .filter((l) => /recover|catalog|import|pause record|"level":(40|50|60)/.test(l)).slice(-30).join('\n')}`;
  t.equal(body.items.length, 1, `one recovered recording${why}`);
  const rec = body.items[0]!;
  t.equal(rec.closeReason, 'recovered');
  const wav = decodeWav(Buffer.from(await (await fetch(`${second.http}/v1/recordings/${rec.recordingId}/audio`)).arrayBuffer()));
  t.same(await readdir(path.join(env.RECORDINGS_DIR!, '.inprogress')), [], 'nothing left in .inprogress (partial, meta, checkpoint, pause record)');
  second.child.kill('SIGTERM');
  await second.exited;
  return { rec, tracks: wav.channel.map((ch) => Buffer.from(ch)) };
}

for (const behavior of ['silence', 'skip'] as const) {
  t.test(`PAUSE_BEHAVIOR=${behavior}: a pause resumed in the last second before a SIGKILL is recovered exactly as the 200 answers declared it`, async (t) => {
    const skip = behavior === 'skip';
    const cwd = await tempDir(t, 'gw-pause-crash-');
    const env = { RECORDINGS_DIR: path.join(cwd, 'rec'), TWILIO_ENABLE_PAUSE_RESUME: 'true', PAUSE_BEHAVIOR: behavior };
    const first = await startProcess(t, cwd, env);
    const s = await openStream(first.ws, { tracks: TRACKS, seed: SEED });
    const t0 = Date.now(); // the gateway's stream clock starts when frame 0 arrives, a hop later
    const spans: Span[] = [];
    const sent: Sent[] = [];
    const send = async (frames: Sent[]) => {
      sent.push(...frames);
      await sendFrames(s, frames);
    };
    const next = () => ({ k: sent.length, ms: sent.length === 0 ? 0 : sent.at(-1)!.ms + FRAME_MS });
    /** frames sent so far that no declared pause drops, both tracks */
    const keptSoFar = () => 2 * sent.filter((f) => !pausedAt(spans, f.ms)).length;
    // After a resume the frames go on from its instant (Twilio's timestamps are any ms): the
    // file then has no hole beside a pause, so any missing audio would be paused silence counted.

    // 0..2 s of audio, read by the gateway: the pause takes effect at its newest call time, 2000 ms
    await send(run(0, 0, 100));
    await until(async () => (await framesReceived(first)) === 200, 'frames up to 2000 ms placed');
    const a1 = await pauseOrResume(t, first, s, 'pause');
    t.equal(a1, 2000, 'the first pause begins at the newest call time read');
    await send(run(100, 2000, 50)); // 2000..3000 ms: paused
    await untilWall(t0, 3100);
    const b1 = await pauseOrResume(t, first, s, 'resume');
    t.ok(b1 >= 3000, `the first pause ends at the call time spoken when resume was asked (${b1} ms), after every paused frame`);
    spans.push({ from: a1, to: b1 });

    // Audio at about the caller's pace until a stats checkpoint covers a second of audio after
    // the first pause: the recovered counts come from it, with the pause inside its covered span.
    const ckptFile = path.join(env.RECORDINGS_DIR, '.inprogress', `${s.streamSid}-0000.ckpt`);
    const coveredTo = ((skip ? a1 : b1) + 1000) * SAMPLES_PER_MS;
    let resumeMs = b1;
    await until(async () => {
      const due = Math.floor((Date.now() - t0 + 500 - resumeMs) / FRAME_MS);
      const have = sent.filter((f) => f.ms >= resumeMs).length;
      if (due > have) await send(run(sent.length, resumeMs + have * FRAME_MS, due - have));
      const ckpt = JSON.parse((await readFile(ckptFile, 'utf8').catch(() => 'null')) || 'null') as { lastCoveredEnd: number[] } | null;
      return ckpt !== null && ckpt.lastCoveredEnd.every((e) => e >= coveredTo);
    }, 'a checkpoint covering the audio after the first pause', 30_000);
    await until(async () => (await framesReceived(first)) === keptSoFar(), 'every frame sent placed');

    // the second pause: 500 ms, resumed a moment before the kill
    const a2 = await pauseOrResume(t, first, s, 'pause');
    t.equal(a2, next().ms, 'the second pause begins at the newest call time read');
    await send(run(next().k, next().ms, 25));
    await untilWall(t0, next().ms + 100);
    const b2 = await pauseOrResume(t, first, s, 'resume');
    t.ok(b2 >= next().ms, `the second pause ends after every paused frame (${b2} ms)`);
    spans.push({ from: a2, to: b2 });
    resumeMs = b2;
    const resumedAt = Date.now();
    await send(run(next().k, b2, 35)); // 700 ms more
    await until(() => journaled(env.RECORDINGS_DIR, sent.at(-1)!.k), 'the last frame in the media journal');
    t.ok(Date.now() - resumedAt < 1500, `killed ${Date.now() - resumedAt} ms after the resume`);

    const { rec, tracks } = await killAndRecover(t, cwd, env, first, s);
    t.same(rec.pausedIntervals, spans, 'pausedIntervals: exactly the spans the 200 answers declared');
    const want = expectedAudio(sent, spans, skip, tracks[0]!.length);
    t.equal(tracks[0]!.length, want.end, `the file ends with the last frame sent (${want.end / 8} ms)`);
    t.equal(rec.durationMs, want.end / SAMPLES_PER_MS);
    TRACKS.forEach((tr, c) => {
      t.ok(tracks[c]!.equals(want.tracks[c]!), `${tr}: sample by sample what was sent, the paused spans ${skip ? 'cut out' : 'silent'} (${firstDiff(tracks[c]!, want.tracks[c]!)})`);
      // the audio after the checkpoint is counted in 20 ms blocks of the file (recovery.ts); a
      // run of frames off that grid (after each resume here) touches one block more
      t.ok(Math.abs(rec.frames[tr]!.received - want.kept) <= 2, `${tr}: framesReceived ${rec.frames[tr]!.received} ≈ ${want.kept} frames kept`);
      t.equal(rec.frames[tr]!.missing, 0, `${tr}: paused ${skip ? 'audio cut out' : 'silence'} is not missing audio`);
    });
    t.equal(rec.framesMissing, 0);
    t.ok((rec.framesPaused ?? 0) >= 100, `framesPaused ${rec.framesPaused}: at least the first pause's 50 frames per track`);
  });

  t.test(`PAUSE_BEHAVIOR=${behavior}: a pause still open at the SIGKILL ends at the end of what was recorded`, async (t) => {
    const cwd = await tempDir(t, 'gw-pause-open-');
    const env = { RECORDINGS_DIR: path.join(cwd, 'rec'), TWILIO_ENABLE_PAUSE_RESUME: 'true', PAUSE_BEHAVIOR: behavior };
    const first = await startProcess(t, cwd, env);
    const s = await openStream(first.ws, { tracks: TRACKS, seed: SEED });
    await s.frames(0, 100);
    await until(async () => (await framesReceived(first)) === 200, 'frames up to 2000 ms placed');
    const a = await pauseOrResume(t, first, s, 'pause');
    t.equal(a, 2000);
    await s.frames(100, 30); // paused: never written anywhere
    await until(() => journaled(env.RECORDINGS_DIR, 99), 'the last frame before the pause in the media journal');

    const { rec, tracks } = await killAndRecover(t, cwd, env, first, s);
    t.equal(rec.durationMs, 2000, 'the recording ends where the pause began (nothing after it was kept)');
    t.same(rec.pausedIntervals, [{ from: a, to: rec.offsetMs + rec.durationMs }], 'the open pause, from its declared start to the end of what was recorded');
    const want = expectedAudio(run(0, 0, 130), [{ from: a, to: Infinity }], behavior === 'skip', tracks[0]!.length);
    TRACKS.forEach((tr, c) => t.ok(tracks[c]!.equals(want.tracks[c]!), `${tr}: what was sent before the pause (${firstDiff(tracks[c]!, want.tracks[c]!)})`));
    t.equal(rec.framesMissing, 0);
  });
}
