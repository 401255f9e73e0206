// Crash recovery, first step: put what the media journal (journal.ts) holds beyond the end of
// each partial segment file into that file, so the partial then covers the audio received up to
// the journal's last commit, not up to the last 500 ms batch behind the 1 s jitter window.
//
// The journal is read in pieces of READ_BYTES (never whole: it may hold seconds of every call
// on the node); a record split between two pieces is carried over. Per piece, the frames are
// grouped by partial file and each file's touched range is read, overlaid and written once.
//
// Exact by construction: the journal holds only frames the timeline accepted, at their timeline
// position, in the order they were accepted (so a later partial overlap wins, as in the ring),
// and never a paused frame. Samples the partial already has (before its end at the crash) are
// never touched: they were emitted from the ring with every frame accepted before them. Holes
// beyond it are mu-law silence, as the ring would have emitted them.
import { access, open, type FileHandle } from 'node:fs/promises';
import { buildWavHeader, parseWavHeader, wavHeaderLength } from '../codecs/wav.js';
import { writeFileAtomic } from './atomic-file.js';
import { segmentMetaOf } from './sidecar-builder.js';
import { SAMPLE_RATE, SAMPLES_PER_MS } from './media-clock.js';
import { MULAW_TO_PCM16 } from '../codecs/g711.js';
import { recordingIdFor, segmentPaths } from './storage-layout.js';
import { HEADER_BYTES, REC_FRAME, REC_OPEN, type JournalStream } from './journal.js';

/** bytes of journal read at a time */
export const READ_BYTES = 1024 * 1024;

export interface ReplayResult {
  files: number;
  /** frames placed into partial files */
  frames: number;
  /** frames whose partial file does not exist (published, or the crash came before it was created) */
  orphanFrames: number;
}

interface Target {
  path: string;
  fh: FileHandle | null;
  dataOffset: number;
  channels: number;
  pcm: boolean;
  /** samples per channel in the file before replay: never overwritten */
  original: number;
  /** samples per channel in the file now */
  end: number;
}

interface FrameRef {
  at: number;
  channel: number;
  pos: number;
  length: number;
}

const SILENCE_MULAW = 0xff;

export async function replayJournal(recordingsDir: string, files: readonly string[]): Promise<ReplayResult> {
  const result: ReplayResult = { files: 0, frames: 0, orphanFrames: 0 };
  const targets = new Map<string, Target | null>();
  try {
    for (const file of files) {
      await replayFile(recordingsDir, file, targets, result);
      result.files++;
    }
  } finally {
    for (const t of targets.values()) await t?.fh?.close().catch(() => undefined);
  }
  return result;
}

async function replayFile(recordingsDir: string, file: string, targets: Map<string, Target | null>, result: ReplayResult): Promise<void> {
  const streams = new Map<number, JournalStream>();
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(READ_BYTES + 64 * 1024);
    let have = 0;
    let pos = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, have, buf.length - have, pos);
      pos += bytesRead;
      have += bytesRead;
      // whole records in buf[0 .. have)
      const frames = new Map<string, FrameRef[]>();
      const segmentOf = new Map<string, { stream: JournalStream; index: number }>();
      let i = 0;
      while (i + HEADER_BYTES <= have) {
        const type = buf[i];
        const length = buf.readUInt16LE(i + 2);
        if (i + HEADER_BYTES + length > have) break;
        const no = buf.readUInt32LE(i + 4);
        if (type === REC_OPEN) {
          try {
            streams.set(no, JSON.parse(buf.toString('utf8', i + HEADER_BYTES, i + HEADER_BYTES + length)) as JournalStream);
          } catch {
            // a torn open record (the crash): its frames are not replayed
          }
        } else if (type === REC_FRAME) {
          const s = streams.get(no);
          const start = buf.readUInt32LE(i + 8);
          // a frame across a segment boundary (a stream whose timestamps are not multiples of
          // 20 ms) is split there, as the timeline splits what it emits
          for (let done = 0; s !== undefined && done < length;) {
            const at = start + done;
            const seg = Math.floor(at / s.segmentSamples);
            const n = Math.min(length - done, (seg + 1) * s.segmentSamples - at);
            const p = partialOf(recordingsDir, s, seg);
            let list = frames.get(p);
            if (list === undefined) {
              frames.set(p, (list = []));
              segmentOf.set(p, { stream: s, index: seg });
            }
            list.push({ at: i + HEADER_BYTES + done, channel: buf[i + 1]!, pos: at - seg * s.segmentSamples, length: n });
            done += n;
          }
        } else {
          i = have; // not a record: a torn tail; nothing after it is trusted
          break;
        }
        i += HEADER_BYTES + length;
      }
      for (const [p, list] of frames) {
        const t = await targetOf(recordingsDir, p, segmentOf.get(p)!, targets); // set with `frames`
        if (t === null) result.orphanFrames += list.length;
        else result.frames += await apply(t, buf, list);
      }
      if (bytesRead === 0) return; // what is left is a record cut by the crash
      buf.copy(buf, 0, i, have);
      have -= i;
    }
  } finally {
    await fh.close();
  }
}

function partialOf(recordingsDir: string, s: JournalStream, segment: number): string {
  return segmentPaths(recordingsDir, s.accountSid, s.callSid, new Date(s.startedAt), recordingIdFor(s.base, segment)).partial;
}

/**
 * The partial `p` (segment `seg.index` of `seg.stream`), opened for replay; null when it does not
 * exist (published, or the crash came before it was created). A partial the crash left without
 * its header (killed between creating and writing it) gets one, and one without its meta (the
 * meta is written after the partial) gets the meta the journal carries: the frames are then
 * recovered as any others.
 */
async function targetOf(recordingsDir: string, p: string, seg: { stream: JournalStream; index: number }, targets: Map<string, Target | null>): Promise<Target | null> {
  if (targets.has(p)) return targets.get(p) ?? null;
  let t: Target | null = null;
  let fh: FileHandle;
  try {
    fh = await open(p, 'r+');
  } catch {
    targets.set(p, null); // no partial (or unreadable): recovery handles what exists
    return null;
  }
  const { stream } = seg;
  try {
    let size = (await fh.stat()).size;
    if (size < wavHeaderLength(stream.encoding)) {
      const header = buildWavHeader({ encoding: stream.encoding, channels: stream.channels, sampleRate: SAMPLE_RATE, dataBytes: 0 });
      await fh.write(header, 0, header.length, 0);
      size = header.length;
    }
    const head = Buffer.alloc(128);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const info = parseWavHeader(head.subarray(0, bytesRead));
    const samples = Math.floor(Math.max(0, size - info.dataOffset) / info.blockAlign);
    t = { path: p, fh, dataOffset: info.dataOffset, channels: info.channels, pcm: info.encoding === 'pcm16', original: samples, end: samples };
    if (stream.meta !== undefined) {
      const recordingId = recordingIdFor(stream.base, seg.index);
      const { partialMeta } = segmentPaths(recordingsDir, stream.accountSid, stream.callSid, new Date(stream.startedAt), recordingId);
      if (!(await exists(partialMeta))) {
        await writeFileAtomic(partialMeta, JSON.stringify(segmentMetaOf(stream.meta, recordingId, seg.index, stream.segmentSamples / SAMPLES_PER_MS)));
      }
    }
  } catch {
    await fh.close().catch(() => undefined);
    t = null;
  }
  targets.set(p, t);
  return t;
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(() => true, () => false);
}

/** Overlay `list` (frames in `buf`) on the file beyond its original end; returns frames used. */
async function apply(t: Target, buf: Buffer, list: FrameRef[]): Promise<number> {
  let lo = Number.POSITIVE_INFINITY;
  let hi = 0;
  let used = 0;
  for (const f of list) {
    if (f.pos + f.length <= t.original || f.channel >= t.channels) continue;
    lo = Math.min(lo, Math.max(f.pos, t.original));
    hi = Math.max(hi, f.pos + f.length);
    used++;
  }
  if (used === 0 || t.fh === null) return 0;
  lo = Math.min(lo, t.end); // holes between the file's end and the first frame become silence
  const bps = t.pcm ? 2 : 1;
  const block = t.channels * bps;
  const region = Buffer.alloc((hi - lo) * block, t.pcm ? 0 : SILENCE_MULAW);
  const existing = Math.min(hi, t.end) - lo;
  if (existing > 0) await t.fh.read(region, 0, existing * block, t.dataOffset + lo * block);
  for (const f of list) {
    if (f.pos + f.length <= t.original || f.channel >= t.channels) continue;
    const from = Math.max(f.pos, t.original);
    for (let k = from; k < f.pos + f.length; k++) {
      const b = buf[f.at + (k - f.pos)]!; // frames were bounded against the journal when collected
      const o = (k - lo) * block + f.channel * bps;
      if (t.pcm) region.writeInt16LE(MULAW_TO_PCM16[b]!, o);
      else region[o] = b;
    }
  }
  await t.fh.write(region, 0, region.length, t.dataOffset + lo * block);
  if (hi > t.end) t.end = hi;
  return used;
}
