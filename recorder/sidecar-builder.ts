// The sidecar of a finished segment, from what was known when the segment opened (its meta,
// kept beside the partial as the recovery record) and how it ended. One builder for a segment
// published by its stream (stream-session.ts) and one sealed by crash recovery (recovery.ts):
// same fields, same order, same totals.
import { NOMINAL_FRAME_SAMPLES } from './segment-accounting.js';
import {
  frameTotals, type CloseReason, type PausedInterval, type RecordingSidecar, type Track, type TrackFrameStats,
} from './sidecar.js';

/** The sidecar fields known when the segment opens (also the partial's meta: the recovery record). */
export type SegmentMeta = Omit<RecordingSidecar,
  'endedAt' | 'durationMs' | 'framesReceived' | 'framesMissing' | 'framesDuplicate' | 'framesLate' |
  'framesTooLate' | 'frames' | 'closeReason' | 'audioBytes' | 'sha256'>;

/**
 * What every segment of a stream shares (`startedAt`: the stream's start). The media journal
 * carries it, so crash recovery can write a segment's meta when the crash came before it.
 */
export type StreamMeta = Omit<SegmentMeta, 'recordingId' | 'segmentIndex' | 'offsetMs' | 'pausedIntervals' | 'audioFile'>;

/** Segment `index`'s meta: its name, where it starts on the stream (`segmentMs` per segment). */
export function segmentMetaOf(stream: StreamMeta, recordingId: string, index: number, segmentMs: number): SegmentMeta {
  const offsetMs = index * segmentMs;
  return {
    recordingId,
    accountSid: stream.accountSid,
    callSid: stream.callSid,
    streamSid: stream.streamSid,
    ctiSessionId: stream.ctiSessionId,
    employeeId: stream.employeeId,
    segmentIndex: index,
    tracks: stream.tracks,
    channels: stream.channels,
    encoding: stream.encoding,
    sampleRate: stream.sampleRate,
    startedAt: new Date(Date.parse(stream.startedAt) + offsetMs).toISOString(),
    offsetMs,
    pausedIntervals: [],
    customParameters: stream.customParameters,
    audioFile: `${recordingId}.wav`,
    nodeId: stream.nodeId,
  };
}

/** How a segment ended. */
export interface SegmentEnd {
  /** per channel (0 = left/inbound), `missing` settled */
  stats: readonly TrackFrameStats[];
  /** of the audio in the file */
  durationMs: number;
  pausedIntervals: PausedInterval[];
  /** frames of the stream dropped because they were paused (in the sidecar when > 0) */
  framesPaused: number;
  closeReason: CloseReason;
  audioBytes: number;
  sha256: string;
  /** the disk refused a write (in the sidecar when set) */
  writeError?: string | null;
  /** samples (all tracks) not kept because the disk fell behind (in the sidecar when > 0) */
  droppedSamples: number;
}

/** Track of a channel: left/0 = inbound (caller), right/1 = outbound (agent); a mono file has its stream's one track. */
export function trackOfChannel(channels: number, tracks: readonly Track[], c: number): Track {
  if (channels === 2) return c === 0 ? 'inbound' : 'outbound';
  return tracks[0]!; // a mono stream has exactly one track
}

export function buildSidecar(meta: SegmentMeta, end: SegmentEnd): RecordingSidecar {
  const frames: Partial<Record<Track, TrackFrameStats>> = {};
  for (let c = 0; c < end.stats.length; c++) frames[trackOfChannel(end.stats.length, meta.tracks, c)] = end.stats[c]!;
  return {
    ...meta,
    endedAt: new Date(Date.parse(meta.startedAt) + end.durationMs).toISOString(),
    durationMs: end.durationMs,
    ...frameTotals(frames),
    frames,
    pausedIntervals: end.pausedIntervals,
    ...(end.framesPaused > 0 ? { framesPaused: end.framesPaused } : {}),
    closeReason: end.closeReason,
    audioBytes: end.audioBytes,
    sha256: end.sha256,
    ...(end.writeError ? { writeError: end.writeError } : {}),
    ...(end.droppedSamples > 0 ? { framesDroppedDiskBackpressure: Math.round(end.droppedSamples / NOMINAL_FRAME_SAMPLES) } : {}),
  };
}
