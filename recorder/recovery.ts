// Crash recovery: at start, before the node reports ready, every partial segment left in
// RECORDINGS_DIR/.inprogress by a process that died (SIGKILL, OOM, power) becomes a normal
// recording: header patched to the whole sample frames actually on disk, fsync, sha256,
// published atomically under its final name with a sidecar (`closeReason: "recovered"`), and
// added to the index.
//
// Frame counts of a recovered sidecar (the issue left this open): the segment writer keeps a
// small stats checkpoint beside the partial (`<recordingId>.ckpt`, rewritten at most every
// CHECKPOINT_MS = 2 s, after the write of the audio it describes returned; never per frame).
// Neither is fsynced: a killed process leaves both in the page cache, in that order, but after
// a power loss the checkpoint may describe audio that never reached the disk, so it is used
// only when the file holds at least the `dataBytes` it describes (else as if absent). It holds
// the coverage of the audio written so far (samples that came from frames, per track) and the
// per-track counters. Recovery takes:
//   - framesReceived per track = 20 ms units of covered audio in the checkpoint, plus, for the
//     audio written after the checkpoint (≤ 2 s + one write), the 20 ms blocks that are not all
//     gap-fill silence (derived from the audio: a frame of pure digital silence there is not
//     counted);
//   - framesMissing = holes between the first and last covered sample as of the checkpoint,
//     less the paused silence in them (silence mode), as the live publish counts it;
//   - duplicate / late / tooLate = the checkpoint's counters (they may run up to one jitter
//     window ahead of the audio on disk).
// Without a checkpoint (a crash in the first 2 s) everything comes from the audio, read in
// bounded pieces (never the whole data range at once).
//
// Pauses come from the stream's pause record (pause-record.ts: `<base>.pause`, rewritten
// atomically at each pause and resume before the API answered 200), not from the checkpoint,
// which may be 2 s old: pausedIntervals exactly as answered and placed as the live publish places
// them (skip: at the cut's file position), paused silence not missing, a pause open at the crash
// ending at the end of what was recorded, framesPaused as of the record or the checkpoint. The
// record goes once none of its stream's segments is left here (in a cluster, only this node's).
//
// Every step of publication is recoverable. A segment's meta stays in .inprogress until its
// outcome (rules, index, webhook) is done, so at start each meta is in one of these states:
//   - partial WAV beside it: the process died while recording, or before the audio's rename:
//     sealed and published as above;
//   - no partial, final WAV and sidecar: died before or during the outcome: the outcome is
//     redone from the published sidecar (the webhook may go out twice, with the same eventId
//     and the same body);
//   - no partial, final WAV, no sidecar: died between the audio's rename and the sidecar:
//     the sidecar is built from the final WAV (as for a partial) and the outcome runs;
//   - nothing published: the partial was removed by a discard, or a publication finished
//     except the meta's removal: the meta goes.
// A segment's partial is created (with its header) before its meta is written (two fsyncs):
// a crash between the two leaves a partial without meta. The media journal carries the stream's
// sidecar fields, and its replay (before this) writes the missing meta (and a missing header):
// the journaled frames are recovered with the rest. A partial left with a header, no audio and no
// meta (nothing reached the disk or the journal) is removed.
// A recording whose deletion is pending (deletions.ts) is left to that deletion.
//
// A partial whose meta is unreadable cannot be put under a call: its audio is still kept, with a
// valid header, in RECORDINGS_DIR/.unattributed/ (not indexed, kept for an operator), and a
// warning is logged; a `recovery_failed` alarm is raised when a partial cannot be kept at all.
import { open, readdir, readFile, unlink, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { buildWavHeader, parseWavHeader, wavHeaderLength, type WavInfo } from '../codecs/wav.js';
import { publishFile, writeFileAtomic } from './atomic-file.js';
import { hashFile } from './segment-writer.js';
import {
  CHECKPOINT_EXT, IN_PROGRESS_DIR, PAUSE_RECORD_EXT, RECORDING_ID_RE, baseOfRecordingId, segmentPaths, type SegmentPaths,
} from './storage-layout.js';
import { DELETIONS_DIR } from './deletions.js';
import { crashPoint } from './crash-points.js';
import type { RecordingSidecar, TrackFrameStats, Encoding } from './sidecar.js';
import { NOMINAL_FRAME_SAMPLES as FRAME_SAMPLES, missingFrames, type SegmentCheckpoint } from './segment-accounting.js';
import { buildSidecar, type SegmentMeta as Meta } from './sidecar-builder.js';
import { readPauseRecord, recoveredPauses, type PauseRecord } from './pause-record.js';
import type { AlarmInput, AlarmKind } from './alarms.js';
import { leftoverJournalFiles } from './journal.js';
import { replayJournal } from './journal-replay.js';
import { SAMPLES_PER_MS } from './media-clock.js';

export const UNATTRIBUTED_DIR = '.unattributed';

export interface RecoveryDeps {
  recordingsDir: string;
  nodeId: string;
  /** cluster mode: only this node's partials are ours to recover */
  onlyOwn: boolean;
  /**
   * Files created after this instant (epoch ms) belong to this gateway's own streams (it takes
   * streams while it recovers): never recovered. Unset: every file is a leftover.
   */
  ownSince?: number;
  raise: (kind: AlarmKind, input: AlarmInput) => void;
  /** a recovered recording's outcome (rules, index, webhook); awaited before its meta goes */
  onRecovered: (sidecar: RecordingSidecar) => void | Promise<void>;
  log: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };
  /**
   * This node's media journal (journal.ts): replayed into the partials before they are sealed,
   * then deleted. `ownToken`: files of the running process, never replayed.
   */
  journal?: { dir: string; ownToken?: string };
}

export interface RecoveryResult {
  recovered: number;
  unattributed: number;
  failed: number;
}

/** the segment's stats checkpoint (segment-accounting.ts), the audio bytes it describes and the bytes dropped for backpressure */
type Checkpoint = SegmentCheckpoint & { dataBytes: number; droppedBytes?: number };

/** What recovery knows of a segment's stream's pauses. */
interface StreamPauses {
  /** the stream's pause record (pause-record.ts); null: never paused, or no usable record */
  record: PauseRecord | null;
  /** the segment is its stream's last one in .inprogress (a pause open at the crash belongs to it) */
  last: boolean;
}

export async function recoverPartials(deps: RecoveryDeps): Promise<RecoveryResult> {
  const dir = path.join(deps.recordingsDir, IN_PROGRESS_DIR);
  const result: RecoveryResult = { recovered: 0, unattributed: 0, failed: 0 };
  const journalFiles = deps.journal ? await leftoverJournalFiles(deps.journal.dir, deps.journal.ownToken) : [];
  let replayed = true;
  if (journalFiles.length > 0) {
    try {
      const r = await replayJournal(deps.recordingsDir, journalFiles);
      deps.log.info(r, 'media journal replayed into the partial recordings');
    } catch (err) {
      // the partials still hold what was written before the crash; the journal stays for an operator
      replayed = false;
      deps.raise('recovery_failed', { message: `the media journal could not be replayed: ${(err as Error).message}` });
    }
  }
  await recoverAll(deps, dir, result);
  // everything the journal held is in the recovered files now (or had no file to go to)
  if (replayed) for (const f of journalFiles) await unlink(f).catch(() => undefined);
  return result;
}

async function recoverAll(deps: RecoveryDeps, dir: string, result: RecoveryResult): Promise<RecoveryResult> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return result;
  }
  // per stream (its reserved name): the highest segment index left, and its pause record
  const lastIndex = new Map<string, number>();
  for (const n of names) {
    const id = n.endsWith('.wav') ? n.slice(0, -4) : n.endsWith('.json') ? n.slice(0, -5) : null;
    if (id === null || !RECORDING_ID_RE.test(id)) continue;
    const base = baseOfRecordingId(id);
    lastIndex.set(base, Math.max(lastIndex.get(base) ?? -1, Number(id.slice(-4))));
  }
  const records = new Map<string, Promise<PauseRecord | null>>();
  const pausesOf = async (meta: Meta): Promise<StreamPauses> => {
    const base = baseOfRecordingId(meta.recordingId);
    let rec = records.get(base);
    if (rec === undefined) {
      rec = readPauseRecord(path.join(dir, base + PAUSE_RECORD_EXT)).then(({ record, problem }) => {
        if (problem !== null) deps.log.warn({ base, problem }, 'pause record unusable: the recovered sidecars take their pauses from the checkpoint');
        return record;
      });
      records.set(base, rec);
    }
    return { record: await rec, last: meta.segmentIndex >= (lastIndex.get(base) ?? -1) };
  };
  const ownSince = deps.ownSince ?? Number.POSITIVE_INFINITY;
  const wavs = names.filter((n) => n.endsWith('.wav'));
  for (const name of wavs) {
    const id = name.slice(0, -4);
    const partial = path.join(dir, name);
    if (await bornSince(partial, ownSince)) continue; // a live stream of this process
    const meta = await readJson<Meta>(path.join(dir, `${id}.json`));
    if (meta !== null && deps.onlyOwn && meta.nodeId !== deps.nodeId) continue;
    if (await isEmpty(partial)) {
      // Killed between creating the file and its first write: there is no audio to keep.
      await unlink(partial).catch(() => undefined); // left: the next start finds it empty again
      continue;
    }
    try {
      if (meta === null || !RECORDING_ID_RE.test(id) || meta.recordingId !== id) {
        if (deps.onlyOwn) continue; // in a cluster an unreadable partial may be another node's
        if (meta === null && (await headerOnly(partial))) {
          // killed after creating the partial, before its meta (written second) and before any
          // audio reached it or the journal: nothing to keep
          await unlink(partial).catch(() => undefined); // left: the next start finds it again
          continue;
        }
        await keepUnattributed(deps, partial, name);
        result.unattributed++;
        continue;
      }
      const sidecar = await recoverOne(deps, partial, meta, await readJson<Checkpoint>(path.join(dir, id + CHECKPOINT_EXT)), await pausesOf(meta));
      result.recovered++;
      deps.log.info({ recordingId: id, durationMs: sidecar.durationMs, framesReceived: sidecar.framesReceived }, 'recovered a partial recording');
    } catch (err) {
      result.failed++;
      deps.raise('recovery_failed', {
        message: `partial ${name} could not be recovered: ${(err as Error).message}`,
        recordingId: meta?.recordingId, callSid: meta?.callSid, streamSid: meta?.streamSid,
      });
    }
  }
  // Meta files with no partial beside them: the segment's audio was published (or never
  // written) and its outcome may not have happened yet.
  for (const n of names) {
    if (!n.endsWith('.json') || n.startsWith('.')) continue;
    const id = n.slice(0, -5);
    if (await exists(path.join(dir, `${id}.wav`))) continue; // handled above (or kept for its node)
    if (await bornSince(path.join(dir, n), ownSince)) continue; // a live stream's published segment, its outcome under way
    const meta = await readJson<Meta>(path.join(dir, n));
    if (meta !== null && deps.onlyOwn && meta.nodeId !== deps.nodeId) continue;
    try {
      if (meta !== null && RECORDING_ID_RE.test(id) && meta.recordingId === id
        && (await finishPublished(deps, meta, await readJson<Checkpoint>(path.join(dir, id + CHECKPOINT_EXT)), () => pausesOf(meta)))) {
        result.recovered++;
      }
      // left: the next start finds the outcome done again (at least once); ENOENT: no checkpoint
      await unlink(path.join(dir, n)).catch(() => undefined);
      await unlink(path.join(dir, id + CHECKPOINT_EXT)).catch(() => undefined);
    } catch (err) {
      result.failed++;
      deps.raise('recovery_failed', {
        message: `published segment ${id} could not be given its outcome: ${(err as Error).message}`,
        recordingId: id, callSid: meta?.callSid, streamSid: meta?.streamSid,
      });
    }
  }
  // Checkpoints with neither partial nor meta describe nothing left to recover.
  for (const n of names) {
    if (!n.endsWith(CHECKPOINT_EXT)) continue;
    const id = n.slice(0, -CHECKPOINT_EXT.length);
    if ((await exists(path.join(dir, `${id}.wav`))) || (await exists(path.join(dir, `${id}.json`)))) continue;
    await unlink(path.join(dir, n)).catch(() => undefined); // left: removed at the next start
  }
  // Pause records of streams with nothing left here: every segment is published. Only records
  // that were here when recovery began (a stream of this process may be paused before its first
  // partial exists) and, in a cluster, only this node's (another node's live stream has one).
  const leftBases = new Set((await readdir(dir).catch(() => [] as string[]))
    .map((x) => x.replace(/\.(wav|json)$/, '')).filter((id) => RECORDING_ID_RE.test(id)).map(baseOfRecordingId));
  for (const n of names) {
    if (!n.endsWith(PAUSE_RECORD_EXT) || n.startsWith('.')) continue;
    const base = n.slice(0, -PAUSE_RECORD_EXT.length);
    if (leftBases.has(base)) continue;
    if (deps.onlyOwn && (await readPauseRecord(path.join(dir, n))).record?.nodeId !== deps.nodeId) continue;
    await unlink(path.join(dir, n)).catch(() => undefined); // left: removed at the next start
  }
  return result;
}

function pathsOf(deps: RecoveryDeps, meta: Meta): SegmentPaths {
  const streamStart = new Date(Date.parse(meta.startedAt) - meta.offsetMs);
  return segmentPaths(deps.recordingsDir, meta.accountSid, meta.callSid, streamStart, meta.recordingId);
}

/**
 * A segment whose audio was published but whose meta is still there: finish what the crash
 * interrupted. Returns false when there was nothing to finish.
 */
async function finishPublished(deps: RecoveryDeps, meta: Meta, ckpt: Checkpoint | null, pauses: () => Promise<StreamPauses>): Promise<boolean> {
  if (await exists(path.join(deps.recordingsDir, DELETIONS_DIR, `${meta.recordingId}.json`))) return false;
  const paths = pathsOf(deps, meta);
  if (!(await exists(paths.audio))) return false; // never published: nothing was written
  let sidecar = await readJson<RecordingSidecar>(paths.sidecar);
  if (sidecar === null || sidecar.recordingId !== meta.recordingId) {
    // died between the audio's rename and its sidecar: build the sidecar from the final file
    sidecar = await sidecarFromAudio(paths.audio, meta, ckpt, await pauses());
    await writeFileAtomic(paths.sidecar, JSON.stringify(sidecar, null, 2) + '\n');
    crashPoint('recovery:sidecar-written');
  }
  await deps.onRecovered(sidecar);
  deps.log.info({ recordingId: meta.recordingId }, 'finished the outcome of a segment published before the crash');
  return true;
}

async function recoverOne(deps: RecoveryDeps, partial: string, meta: Meta, ckpt: Checkpoint | null, pauses: StreamPauses): Promise<RecordingSidecar> {
  const paths = pathsOf(deps, meta);
  const sidecar = await sidecarFromAudio(partial, meta, ckpt, pauses);
  // Same order as a normal publish: audio under its final name, then the sidecar, then the
  // outcome, then the partial's meta goes. A crash in between leaves the meta, and the next
  // start finishes the rest (finishPublished).
  await publishFile(partial, paths.audio);
  crashPoint('recovery:audio-renamed');
  await writeFileAtomic(paths.sidecar, JSON.stringify(sidecar, null, 2) + '\n');
  crashPoint('recovery:sidecar-written');
  await deps.onRecovered(sidecar);
  // left: the next start redoes the outcome (at least once); ENOENT: no checkpoint was written
  await unlink(paths.partialMeta).catch(() => undefined);
  await unlink(paths.partialStats).catch(() => undefined);
  return sidecar;
}

/** Seal `file` (a partial, or a published WAV without its sidecar) and describe it. */
function ckptFits(ckpt: Checkpoint, channels: number): boolean {
  return [ckpt.stats, ckpt.covered, ckpt.firstCovered, ckpt.lastCoveredEnd].every((a) => Array.isArray(a) && a.length >= channels);
}

async function sidecarFromAudio(file: string, meta: Meta, ckpt: Checkpoint | null, pauses: StreamPauses): Promise<RecordingSidecar> {
  const partial = file;
  const { info, dataBytes } = await sealPartial(partial, meta.encoding);
  const bps = info.blockAlign;
  const channels = info.channels;
  const samples = dataBytes / bps;
  const durationMs = samples / SAMPLES_PER_MS;
  // The pauses as the live publish would place them: from the stream's pause record (written at
  // each pause and resume, before the API answered), with the pause behaviour, so paused silence
  // is not missing audio and a skip cut sits where it was made.
  const record = pauses.record;
  // Silence mode: a pause left open in the record whose file holds sound after it start was
  // resumed, and the crash came before the resume's record reached the disk (its 200 was never
  // sent): the audio after it is the call's, so the pause ends before the first sound.
  let soundAfterOpen: number | null = null;
  if (record !== null && record.openFrom !== null && record.behavior === 'silence' && record.openFrom < meta.offsetMs + durationMs) {
    const fromSample = Math.max(0, Math.ceil((record.openFrom - meta.offsetMs) * SAMPLES_PER_MS));
    const at = await firstSound(partial, info, fromSample * bps, dataBytes);
    if (at !== null) soundAfterOpen = meta.offsetMs + Math.floor(at / bps / SAMPLES_PER_MS);
  }
  const recovered = record === null ? null : recoveredPauses(record, meta.offsetMs, durationMs, pauses.last, soundAfterOpen);

  // Frame counts: checkpoint for what it covers, the audio itself for the tail after it.
  // A checkpoint is only used if it has an entry per channel (it comes from disk; the `!`s below rely on it).
  const ckptBytes = ckpt !== null && ckpt.dataBytes <= dataBytes && ckptFits(ckpt, channels) ? ckpt.dataBytes : 0;
  const tail = await nonSilentBlocks(partial, info, ckptBytes, dataBytes);
  const stats: TrackFrameStats[] = [];
  for (let c = 0; c < channels; c++) {
    const useCkpt = ckptBytes > 0 && ckpt !== null;
    const span = useCkpt && ckpt.firstCovered[c]! >= 0 ? ckpt.lastCoveredEnd[c]! - ckpt.firstCovered[c]! : 0;
    // silence mode: a paused span inside the covered one is silence on purpose, not missing
    // audio (as settleMissing in the live publish); with skip it is not in the file at all
    const paused = useCkpt && recovered?.pausedWithin ? recovered.pausedWithin(ckpt.firstCovered[c]!, ckpt.lastCoveredEnd[c]!) : 0;
    stats.push({
      received: (useCkpt ? Math.round(ckpt.covered[c]! / FRAME_SAMPLES) : 0) + tail[c]!,
      missing: useCkpt ? missingFrames(span, ckpt.covered[c]!, paused) : 0,
      duplicate: useCkpt ? ckpt.stats[c]!.duplicate : 0,
      late: useCkpt ? ckpt.stats[c]!.late : 0,
      tooLate: useCkpt ? ckpt.stats[c]!.tooLate : 0,
    });
  }
  const sha256 = await hashFile(partial);
  const counted = (x: unknown): number => (typeof x === 'number' && Number.isSafeInteger(x) && x > 0 ? x : 0);
  return buildSidecar(meta, {
    stats,
    durationMs,
    pausedIntervals: recovered !== null ? recovered.pausedIntervals
      // no pause record (never paused, or a partial of an older version): the checkpoint's
      // pauses as of its write, by call-time overlap (without the behaviour a cut cannot be placed)
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- meta is JSON from disk, not validated
      : (ckpt?.pausedIntervals ?? meta.pausedIntervals ?? []).filter((p) => p.to > meta.offsetMs && p.from < meta.offsetMs + durationMs),
    // the stream's frames dropped as paused, as of its last pause record or checkpoint (those
    // dropped after both, in the last seconds before the crash, were counted nowhere durable)
    framesPaused: Math.max(counted(pauses.record?.framesPaused), counted(ckpt?.framesPaused)),
    closeReason: 'recovered',
    audioBytes: info.dataOffset + dataBytes + (dataBytes % 2),
    sha256,
    // audio the disk was too slow for, as of the checkpoint (written as silence, counted as in the live sidecar)
    droppedSamples: ckptBytes > 0 ? counted(ckpt?.droppedBytes) / (meta.encoding === 'pcm16' ? 2 : 1) : 0,
  });
}

/**
 * Patch the partial's header to the whole sample frames on disk (a write cut short by the
 * crash may leave half a frame), drop anything after them, add the RIFF pad byte, fsync.
 * The format comes from the header written when the segment opened.
 */
async function sealPartial(file: string, expected?: Encoding): Promise<{ info: WavInfo; dataBytes: number }> {
  const fh = await open(file, 'r+');
  try {
    const head = Buffer.alloc(128);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const info = parseWavHeader(head.subarray(0, bytesRead));
    if (info.encoding === 'alaw' || (expected !== undefined && info.encoding !== expected)) {
      throw new Error(`unexpected encoding ${info.encoding} in the partial's header`);
    }
    const size = (await fh.stat()).size;
    const raw = Math.max(0, size - info.dataOffset);
    const dataBytes = raw - (raw % info.blockAlign);
    await fh.truncate(info.dataOffset + dataBytes);
    if (dataBytes % 2 === 1) await fh.write(Buffer.alloc(1), 0, 1, info.dataOffset + dataBytes);
    const header = buildWavHeader({ encoding: info.encoding, channels: info.channels, sampleRate: info.sampleRate, dataBytes });
    if (header.length !== wavHeaderLength(info.encoding) || header.length !== info.dataOffset) {
      throw new Error('the partial\'s header is not one this gateway writes');
    }
    await fh.write(header, 0, header.length, 0);
    await fh.sync();
    return { info: { ...info, dataBytes }, dataBytes };
  } finally {
    await fh.close();
  }
}

/** 20 ms blocks read per piece while scanning audio (bounded memory: ~250 KiB of stereo PCM) */
const SCAN_BLOCKS = 400;

/**
 * Reads the data bytes [from, to) of `file` in chunks of whole samples (all channels) and hands each
 * to `visit` (`buf` holds `frames` samples starting at data byte `pos`); `visit` returning true
 * stops the scan. One buffer for the whole scan.
 */
async function scanData(file: string, info: WavInfo, from: number, to: number,
  visit: (buf: Buffer, frames: number, pos: number) => boolean): Promise<void> {
  if (to <= from) return;
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(Math.min(to - from, SCAN_BLOCKS * FRAME_SAMPLES * info.blockAlign));
    for (let pos = from; pos < to;) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, to - pos), info.dataOffset + pos);
      const frames = Math.floor(bytesRead / info.blockAlign);
      if (frames === 0 || visit(buf, frames, pos)) return;
      pos += frames * info.blockAlign;
    }
  } finally {
    await fh.close();
  }
}

/** Whether sample `i` of channel `c` in a chunk of `scanData` is not silence. */
function soundAt(buf: Buffer, info: WavInfo, i: number, c: number): boolean {
  const o = i * info.blockAlign + c * (info.blockAlign / info.channels);
  return info.encoding === 'pcm16' ? buf.readInt16LE(o) !== 0 : buf[o] !== 0xff;
}

/**
 * Per channel, 20 ms blocks in data [from, to) that are not entirely silence. Read in pieces of
 * whole blocks, so an hour of audio costs one piece of memory, not the hour.
 */
async function nonSilentBlocks(file: string, info: WavInfo, from: number, to: number): Promise<number[]> {
  const counts = new Array<number>(info.channels).fill(0);
  await scanData(file, info, from, to, (buf, frames) => {
    for (let c = 0; c < info.channels; c++) {
      for (let b = 0; b < frames; b += FRAME_SAMPLES) {
        const end = Math.min(frames, b + FRAME_SAMPLES);
        let sound = false;
        for (let i = b; i < end && !sound; i++) sound = soundAt(buf, info, i, c);
        if (sound) counts[c]!++;
      }
    }
    return false;
  });
  return counts;
}

/** Byte offset (in the data) of the first block-aligned sample in [from, to) that is not silence on some channel, or null. */
async function firstSound(file: string, info: WavInfo, from: number, to: number): Promise<number | null> {
  let found: number | null = null;
  await scanData(file, info, from, to, (buf, frames, pos) => {
    for (let i = 0; i < frames; i++) {
      for (let c = 0; c < info.channels; c++) {
        if (soundAt(buf, info, i, c)) {
          found = pos + i * info.blockAlign;
          return true;
        }
      }
    }
    return false;
  });
  return found;
}

async function keepUnattributed(deps: RecoveryDeps, partial: string, name: string): Promise<void> {
  await sealPartial(partial);
  const dir = path.join(deps.recordingsDir, UNATTRIBUTED_DIR);
  await mkdir(dir, { recursive: true });
  await publishFile(partial, path.join(dir, name));
  // Kept: an operator can still attribute it by hand (an alarm is raised only when it cannot be kept).
  deps.log.warn({ file: path.join(UNATTRIBUTED_DIR, name) }, 'partial without readable meta: audio kept, attributed to no call');
}

async function readJson<T>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch {
    return null;
  }
}

/** Whether `file` was created after `since` (epoch ms); false when it cannot be told (no birth time). */
async function bornSince(file: string, since: number): Promise<boolean> {
  try {
    const { birthtimeMs } = await stat(file);
    return birthtimeMs > 0 && birthtimeMs > since + 1; // ms clocks: a file of the same millisecond is not newer
  } catch {
    return false;
  }
}

/** A partial holding a WAV header and no audio. */
async function headerOnly(file: string): Promise<boolean> {
  try {
    const fh = await open(file, 'r');
    try {
      const head = Buffer.alloc(128);
      const { bytesRead } = await fh.read(head, 0, head.length, 0);
      return (await fh.stat()).size <= parseWavHeader(head.subarray(0, bytesRead)).dataOffset;
    } finally {
      await fh.close();
    }
  } catch {
    return false; // not a WAV: kept for an operator
  }
}

async function isEmpty(file: string): Promise<boolean> {
  try {
    const fh = await open(file, 'r');
    try {
      return (await fh.stat()).size === 0;
    } finally {
      await fh.close();
    }
  } catch {
    return false;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await (await open(file, 'r')).close();
    return true;
  } catch {
    return false;
  }
}
