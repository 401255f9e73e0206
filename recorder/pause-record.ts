// The durable pause record of one stream: what crash recovery needs to say of its pauses what
// the live sidecar says (README, Crashes). `.inprogress/<base>.pause` (storage-layout.ts), one
// per stream that was ever paused, written atomically (atomic-file.ts: temporary file, fsync,
// rename, directory fsync) at each pause and resume, before the API answers 200, never on the
// media path. It holds the stream's closed pauses and its open one (call-time ms, exactly as the
// 200 answers declared them), the pause behaviour (silence or skip) and the frames dropped as
// paused so far. The stream removes it once every segment is published; recovery reads it for
// every segment of the stream and removes it with the stream's last partial.
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './atomic-file.js';
import { pausedSamplesWithin, pausesOfSegment } from './pause-spans.js';
import type { PauseBehavior } from './source-settings.js';
import type { PausedInterval } from './sidecar.js';

export interface PauseRecord {
  v: 1;
  /** the node that recorded the stream (cluster mode: only its own node recovers it) */
  nodeId: string;
  /** `silence`: paused spans are silence in the file; `skip`: they are cut out */
  behavior: PauseBehavior;
  /** closed pauses, call-time ms, in order */
  intervals: PausedInterval[];
  /** call-time ms where the open pause began; null = not paused */
  openFrom: number | null;
  /** frames of the stream dropped as paused when the record was written */
  framesPaused: number;
}

export async function writePauseRecord(file: string, record: PauseRecord): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(record) + '\n');
}

const isMs = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x >= 0;

/**
 * The record in `file`: `record` null when there is none; `problem` says why a file that is
 * there cannot be used (recovery then falls back on the checkpoint's pauses and says so).
 */
export async function readPauseRecord(file: string): Promise<{ record: PauseRecord | null; problem: string | null }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { record: null, problem: code === 'ENOENT' ? null : `unreadable: ${(err as Error).message}` };
  }
  let r: Partial<PauseRecord>;
  try {
    r = JSON.parse(text) as Partial<PauseRecord>;
  } catch {
    return { record: null, problem: 'not JSON' };
  }
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- JSON from disk, not validated yet
  if (r === null || typeof r !== 'object' || r.v !== 1) return { record: null, problem: 'not a version 1 pause record' };
  if (r.behavior !== 'silence' && r.behavior !== 'skip') return { record: null, problem: `pause behaviour ${JSON.stringify(r.behavior)}` };
  const intervals = r.intervals;
  if (!Array.isArray(intervals)) return { record: null, problem: 'no intervals' };
  let prevTo = 0;
  for (const p of intervals as unknown[]) {
    const q = p as Partial<PausedInterval> | null;
    if (q === null || typeof q !== 'object' || !isMs(q.from) || !isMs(q.to) || q.to < q.from || q.from < prevTo) {
      return { record: null, problem: `interval ${JSON.stringify(p)} (each {from, to} in call-time ms, in order)` };
    }
    prevTo = q.to;
  }
  if (r.openFrom !== null && !(isMs(r.openFrom) && r.openFrom >= prevTo)) return { record: null, problem: `open pause from ${JSON.stringify(r.openFrom)}` };
  return {
    record: {
      v: 1, nodeId: typeof r.nodeId === 'string' ? r.nodeId : '', behavior: r.behavior,
      intervals: intervals.map((p) => ({ from: p.from, to: p.to })), openFrom: r.openFrom,
      framesPaused: Number.isSafeInteger(r.framesPaused) && (r.framesPaused as number) >= 0 ? r.framesPaused as number : 0,
    },
    problem: null,
  };
}

/** What a recovered segment says of its stream's pauses. */
export interface RecoveredPauses {
  /** the segment's pausedIntervals, as the live publish places them */
  pausedIntervals: PausedInterval[];
  /** silence mode: paused samples inside file samples [a, b) (silence on purpose, not missing); null with skip */
  pausedWithin: ((a: number, b: number) => number) | null;
}

/**
 * The pauses of a recovered segment whose file spans [offsetMs, +durationMs) (file time). A
 * pause still open at the crash ends at the end of what was recorded (nothing after it reached
 * the file, nor could: paused frames never reach the journal): the segment's file end in call
 * time, never before the pause began. It belongs to the segment where it began, or, when the
 * crash cost the audio just before it, to the stream's last segment (`last`). `soundAfterOpen`
 * (silence mode, call ms): where the file holds sound after the open pause began: a resume
 * whose record the crash kept from the disk; the pause ends there.
 */
export function recoveredPauses(record: PauseRecord, offsetMs: number, durationMs: number, last: boolean, soundAfterOpen: number | null = null): RecoveredPauses {
  const skip = record.behavior === 'skip';
  const all = record.intervals.map((p) => ({ ...p }));
  let open: PausedInterval | null = null;
  let openAt = 0;
  if (record.openFrom !== null) {
    // with skip, file time t is call time t + every cut before it (all closed pauses precede the open one)
    const cutMs = skip ? all.reduce((n, p) => n + p.to - p.from, 0) : 0;
    const end = offsetMs + durationMs + cutMs;
    open = { from: record.openFrom, to: Math.max(record.openFrom, soundAfterOpen === null ? end : Math.min(end, soundAfterOpen)) };
    openAt = open.from - cutMs;
    all.push(open);
  }
  const placed = pausesOfSegment(all, offsetMs, durationMs, skip);
  if (open !== null && last && openAt >= offsetMs && placed.at(-1)?.from !== open.from) placed.push({ ...open });
  return { pausedIntervals: placed, pausedWithin: skip ? null : (a, b) => pausedSamplesWithin(all, a, b) };
}
