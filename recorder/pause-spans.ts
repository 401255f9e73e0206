// PCI pause/resume of one stream, in call-time samples: the open pause, the closed spans, and
// what they mean for a frame (paused or not; with `skip`, how far it moves) and for a segment's
// sidecar (its pausedIntervals, the paused silence that is not missing audio). Pure bookkeeping:
// the stream session decides when a pause starts and ends (from the frames seen and its clock).
import type { PausedInterval } from './sidecar.js';
import { SAMPLES_PER_MS } from './media-clock.js';

export class PauseSpans {
  /** closed pauses in call-time ms, in order (the sidecars' and the checkpoints' pausedIntervals) */
  readonly intervals: PausedInterval[] = [];
  /** closed pauses in call-time samples, [from, to), in order */
  private readonly spans: { from: number; to: number }[] = [];
  /** call-time sample where the open pause began; null = not paused */
  private pauseFrom: number | null = null;

  /** `startPaused`: the call was paused before the stream began: paused from sample 0 */
  constructor(startPaused = false) {
    if (startPaused) this.pauseFrom = 0;
  }

  get paused(): boolean {
    return this.pauseFrom !== null;
  }

  /** call-time sample where the open pause began; null = not paused */
  get openFrom(): number | null {
    return this.pauseFrom;
  }

  /** Whether any pause has closed (only then can a frame fall inside one, or be moved by a cut). */
  get any(): boolean {
    return this.spans.length > 0;
  }

  /** Pause from call-time sample `at`, unless a pause is open already. Returns where the open pause began. */
  pause(at: number): number {
    this.pauseFrom ??= at;
    return this.pauseFrom;
  }

  /**
   * End the open pause at call-time sample `end` (never before it began). Returns the sample it
   * ended at; `end` when no pause was open. An empty pause leaves no span.
   */
  resume(end: number): number {
    const from = this.pauseFrom;
    if (from === null) return end;
    this.pauseFrom = null;
    const to = Math.max(from, end);
    if (to > from) {
      this.spans.push({ from, to });
      this.intervals.push({ from: from / SAMPLES_PER_MS, to: to / SAMPLES_PER_MS });
    }
    return to;
  }

  /** Is a frame starting at call-time sample `start` paused (at least its start)? */
  isPaused(start: number): boolean {
    return this.pausedUntil(start) > start;
  }

  /**
   * Where the pause holding call-time sample `start` ends: Infinity for the open pause, `start`
   * itself when no pause holds it. A frame is paused up to there (and whole when it ends before).
   */
  pausedUntil(start: number): number {
    if (this.pauseFrom !== null && start >= this.pauseFrom) return Number.POSITIVE_INFINITY;
    for (let i = this.spans.length - 1; i >= 0; i--) {
      const p = this.spans[i]!;
      if (start >= p.to) return start; // spans are ordered: nothing earlier can contain it
      if (start >= p.from) return p.to;
    }
    return start;
  }

  /** With `skip`, samples cut out before call-time sample `start`. */
  cutBefore(start: number): number {
    let cut = 0;
    for (const p of this.spans) {
      if (p.to > start) break;
      cut += p.to - p.from;
    }
    return cut;
  }

  /** Paused samples inside [a, b) of the file (silence mode: file position = call time). */
  pausedWithin(a: number, b: number): number {
    if (a < 0) return 0;
    let n = 0;
    for (const p of this.spans) n += Math.max(0, Math.min(b, p.to) - Math.max(a, p.from));
    return n;
  }

  /**
   * The pauses (call-time ms) that touch a segment spanning file time [offsetMs, +durationMs).
   * With skip, a pause sits at one file position (where it was cut out).
   */
  ofSegment(offsetMs: number, durationMs: number, skip: boolean): PausedInterval[] {
    return pausesOfSegment(this.intervals, offsetMs, durationMs, skip);
  }
}

/**
 * The pauses (call-time ms, in order) that touch a segment spanning file time
 * [offsetMs, +durationMs): with silence a pause covers its call-time span of the file; with skip
 * it sits at one file position (where it was cut out: its start less every cut before it). The
 * live publish (PauseSpans.ofSegment) and crash recovery (pause-record.ts) both place pauses so.
 */
export function pausesOfSegment(intervals: readonly PausedInterval[], offsetMs: number, durationMs: number, skip: boolean): PausedInterval[] {
  const out: PausedInterval[] = [];
  let cutMs = 0;
  for (const p of intervals) {
    const at = skip ? p.from - cutMs : p.from;
    const end = skip ? at : p.to;
    if (end >= offsetMs && at <= offsetMs + durationMs) out.push({ ...p });
    cutMs += p.to - p.from;
  }
  return out;
}

/** Paused samples inside file samples [a, b) (silence mode: file position = call time), as PauseSpans.pausedWithin. */
export function pausedSamplesWithin(intervals: readonly PausedInterval[], a: number, b: number): number {
  if (a < 0) return 0;
  let n = 0;
  for (const p of intervals) n += Math.max(0, Math.min(b, p.to * SAMPLES_PER_MS) - Math.max(a, p.from * SAMPLES_PER_MS));
  return n;
}
