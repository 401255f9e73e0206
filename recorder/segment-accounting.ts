// The frame accounting of one segment: per track, what the timeline did with each frame
// (received, duplicate, late, too late) and which samples of the emitted audio came from frames
// (coverage), from which the missing audio is settled when the segment is published. The same
// figures, checkpointed beside the partial, give a recovered recording its counts (recovery.ts).
import type { PlaceResult, RegionCoverage } from './timeline.js';
import type { SegmentWriter } from './segment-writer.js';
import type { PausedInterval, TrackFrameStats } from './sidecar.js';

/** Missing audio is reported in units of Twilio's usual 20 ms frame. */
export const NOMINAL_FRAME_SAMPLES = 160;

export interface SegmentState {
  index: number;
  /** per channel (0 = left/inbound) */
  stats: TrackFrameStats[];
  /** per channel: samples of the emitted audio that came from frames */
  covered: number[];
  /** per channel: first covered sample (-1: none yet) */
  firstCovered: number[];
  /** per channel: one past the last covered sample (-1: none yet) */
  lastCoveredEnd: number[];
  writer: SegmentWriter | null;
}

/**
 * What a segment writer checkpoints beside its partial (the writer adds `dataBytes`, the audio
 * it describes) and crash recovery reads back for the recovered sidecar's frame counts.
 */
export type SegmentCheckpoint = {
  stats: TrackFrameStats[];
  covered: number[];
  firstCovered: number[];
  lastCoveredEnd: number[];
  pausedIntervals: PausedInterval[];
  /** frames of the stream dropped as paused so far (absent in checkpoints of older versions) */
  framesPaused?: number;
};

function newTrackStats(): TrackFrameStats {
  return { received: 0, missing: 0, duplicate: 0, late: 0, tooLate: 0 };
}

export function newSegment(index: number, channels: number): SegmentState {
  return {
    index,
    stats: Array.from({ length: channels }, newTrackStats),
    covered: new Array<number>(channels).fill(0),
    firstCovered: new Array<number>(channels).fill(-1),
    lastCoveredEnd: new Array<number>(channels).fill(-1),
    writer: null,
  };
}

/** Count one frame's outcome on its track. */
export function countFrame(s: TrackFrameStats, result: PlaceResult): void {
  switch (result) {
    case 'placed': s.received++; break;
    case 'late': s.received++; s.late++; break;
    case 'duplicate': s.duplicate++; break;
    case 'too_late': s.tooLate++; break;
  }
}

/** Add an emitted region's coverage. Returns whether the region is all gap-fill silence (no track covered). */
export function addCoverage(seg: SegmentState, cov: RegionCoverage, channels: number): boolean {
  let silent = true;
  for (let c = 0; c < channels; c++) {
    if (cov.covered[c] === 0) continue;
    silent = false;
    seg.covered[c]! += cov.covered[c]!;
    if (seg.firstCovered[c]! < 0) seg.firstCovered[c] = cov.firstCovered[c]!;
    seg.lastCoveredEnd[c] = cov.lastCoveredEnd[c]!;
  }
  return silent;
}

/**
 * What crash recovery needs for the sidecar's frame counts, as of the audio accepted so far
 * (see recorder/recovery.ts): coverage of the emitted audio and the per-track counters.
 */
export function checkpointOf(seg: SegmentState, pausedIntervals: PausedInterval[], framesPaused = 0): SegmentCheckpoint {
  return {
    stats: seg.stats,
    covered: seg.covered,
    firstCovered: seg.firstCovered,
    lastCoveredEnd: seg.lastCoveredEnd,
    pausedIntervals,
    framesPaused,
  };
}

/** 20 ms units of audio that never arrived in a covered span of `span` samples (`paused` of it silence on purpose). */
export function missingFrames(span: number, covered: number, paused: number): number {
  return Math.max(0, Math.round((span - covered - paused) / NOMINAL_FRAME_SAMPLES));
}

/**
 * Settle each track's `missing` (holes between its first and last covered sample) and return
 * the per-channel stats. `pausedWithin`: paused samples inside [a, b) of the file, which are
 * silence on purpose, not missing audio; null when pauses are cut out of the file (skip).
 */
export function settleMissing(seg: SegmentState, channels: number, pausedWithin: ((a: number, b: number) => number) | null): TrackFrameStats[] {
  for (let c = 0; c < channels; c++) {
    const s = seg.stats[c]!;
    const span = seg.firstCovered[c]! < 0 ? 0 : seg.lastCoveredEnd[c]! - seg.firstCovered[c]!;
    // a paused span is silence on purpose, not missing audio
    const paused = pausedWithin === null ? 0 : pausedWithin(seg.firstCovered[c]!, seg.lastCoveredEnd[c]!);
    s.missing = missingFrames(span, seg.covered[c]!, paused);
  }
  return seg.stats;
}
