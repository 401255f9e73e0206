// One Twilio stream being recorded: frames in (already validated and decoded by the gateway),
// segments out. It owns the stream's timeline, its open segment writer and the per-segment
// frame accounting, and turns each finished segment into a published WAV + sidecar.
// It knows nothing of WebSockets or JSON: the gateway drives it through plain method calls.
import { Timeline, type PlaceResult, type RegionCoverage, type TimelineSink } from './timeline.js';
import { SegmentWriter } from './segment-writer.js';
import { recordingIdFor, segmentPaths } from './storage-layout.js';
import { writeFileAtomic } from './atomic-file.js';
import { unlink } from 'node:fs/promises';
import type {
  CloseReason, Encoding, PausedInterval, RecordingSidecar, Track, TrackFrameStats,
} from './sidecar.js';

export const SAMPLE_RATE = 8000;
const SAMPLES_PER_MS = SAMPLE_RATE / 1000;
/** Missing audio is reported in units of Twilio's usual 20 ms frame. */
const NOMINAL_FRAME_SAMPLES = 160;

export interface StreamIdentity {
  accountSid: string;
  callSid: string;
  streamSid: string;
  tracks: Track[];
  customParameters: Record<string, string>;
}

export interface Attribution {
  ctiSessionId: string | null;
  employeeId: string | null;
}

export interface StreamSessionOptions {
  recordingsDir: string;
  nodeId: string;
  encoding: Encoding;
  segmentMaxS: number;
  /** how late (behind the newest frame) a frame may arrive and still be put in place */
  windowMs: number;
  /** emission granularity while running */
  chunkMs: number;
  /** monotonic ms: arrival times and lag */
  now: () => number;
  /** wall clock, for startedAt/endedAt */
  wallNow: () => Date;
  /** every frame outcome, for the node-wide counters (kept cheap: plain increments) */
  onFrame: (result: PlaceResult) => void;
  onWritten: (bytes: number, lagMs: number) => void;
  onSegmentError: (recordingId: string, err: Error) => void;
  /** the disk refused a write of this stream (first error of a segment) */
  onWriteError?: (recordingId: string, err: NodeJS.ErrnoException) => void;
  /** cap of audio waiting for the disk, per segment writer */
  maxQueueBytes?: number;
  /** 20 ms units of audio a published segment lost to disk backpressure */
  onDropped?: (frames: number) => void;
}

interface SegmentState {
  index: number;
  stats: TrackFrameStats[];
  covered: number[];
  firstCovered: number[];
  lastCoveredEnd: number[];
  writer: SegmentWriter | null;
}

function newTrackStats(): TrackFrameStats {
  return { received: 0, missing: 0, duplicate: 0, late: 0, tooLate: 0 };
}

export class StreamSession implements TimelineSink {
  readonly id: StreamIdentity;
  readonly attribution: Attribution;
  readonly startedAt: Date;
  readonly channels: 1 | 2;
  private readonly opts: StreamSessionOptions;
  private readonly timeline: Timeline;
  private readonly segmentSamples: number;
  private readonly segments = new Map<number, SegmentState>();
  /** segment being written; frames mostly land in it */
  private current: SegmentState;
  private readonly finalizing: Promise<RecordingSidecar | null>[] = [];
  private closing: Promise<RecordingSidecar[]> | null = null;
  readonly pausedIntervals: PausedInterval[] = [];
  /** monotonic ms of the last message of any kind (idle detection) */
  lastActivity: number;

  constructor(id: StreamIdentity, attribution: Attribution, opts: StreamSessionOptions) {
    this.id = id;
    this.attribution = attribution;
    this.opts = opts;
    this.startedAt = opts.wallNow();
    this.lastActivity = opts.now();
    this.channels = id.tracks.length === 2 ? 2 : 1;
    this.segmentSamples = opts.segmentMaxS * SAMPLE_RATE;
    this.timeline = new Timeline({
      channels: this.channels,
      windowSamples: opts.windowMs * SAMPLES_PER_MS,
      chunkSamples: opts.chunkMs * SAMPLES_PER_MS,
      boundarySamples: this.segmentSamples,
    }, this);
    this.current = this.segment(0);
  }

  /** Channel of a track: left/0 = inbound (caller), right/1 = outbound (agent); -1 = not in this stream. */
  channelOf(track: Track): number {
    if (this.channels === 2) return track === 'inbound' ? 0 : 1;
    return this.id.tracks[0] === track ? 0 : -1;
  }

  /** Newest sample position placed on any channel (call time × 8). */
  get frontier(): number {
    return this.timeline.frontier;
  }

  get closed(): boolean {
    return this.closing !== null;
  }

  /** Note activity that carries no audio (dtmf, mark): the stream is not idle. */
  touch(): void {
    this.lastActivity = this.opts.now();
  }

  /** Place one frame. `start` is its sample position on the stream clock. */
  media(channel: number, start: number, payload: Buffer, length: number): PlaceResult {
    const arrival = this.opts.now();
    this.lastActivity = arrival;
    const result = this.timeline.place(channel, start, payload, length, arrival);
    const segIndex = Math.floor(start / this.segmentSamples);
    const seg = segIndex === this.current.index ? this.current : this.segment(segIndex);
    const s = seg.stats[channel];
    switch (result) {
      case 'placed': s.received++; break;
      case 'late': s.received++; s.late++; break;
      case 'duplicate': s.duplicate++; break;
      case 'too_late': s.tooLate++; break;
    }
    this.opts.onFrame(result);
    return result;
  }

  private segment(index: number): SegmentState {
    let seg = this.segments.get(index);
    if (!seg) {
      seg = {
        index,
        stats: Array.from({ length: this.channels }, newTrackStats),
        covered: new Array<number>(this.channels).fill(0),
        firstCovered: new Array<number>(this.channels).fill(-1),
        lastCoveredEnd: new Array<number>(this.channels).fill(-1),
        writer: null,
      };
      this.segments.set(index, seg);
    }
    return seg;
  }

  /** TimelineSink: a finished region of audio, in order, never crossing a segment boundary. */
  emit(planes: readonly Buffer[], offset: number, samples: number, from: number, cov: RegionCoverage): void {
    const index = Math.floor(from / this.segmentSamples);
    if (index !== this.current.index) {
      this.finishSegment(this.current, 'rotate');
      this.current = this.segment(index);
    }
    const seg = this.current;
    let silent = true;
    for (let c = 0; c < this.channels; c++) {
      if (cov.covered[c] === 0) continue;
      silent = false;
      seg.covered[c] += cov.covered[c];
      if (seg.firstCovered[c] < 0) seg.firstCovered[c] = cov.firstCovered[c];
      seg.lastCoveredEnd[c] = cov.lastCoveredEnd[c];
    }
    if (!seg.writer) seg.writer = this.openWriter(seg);
    seg.writer.append(planes, offset, samples, silent, cov.oldestArrival);
    if (seg.writer.checkpointDue(this.opts.now())) seg.writer.checkpoint(this.checkpointOf(seg));
  }

  /**
   * What crash recovery needs for the sidecar's frame counts, as of the audio accepted so far
   * (see recorder/recovery.ts): coverage of the emitted audio and the per-track counters.
   */
  private checkpointOf(seg: SegmentState): Record<string, unknown> {
    return {
      stats: seg.stats,
      covered: seg.covered,
      firstCovered: seg.firstCovered,
      lastCoveredEnd: seg.lastCoveredEnd,
      pausedIntervals: this.pausedIntervals,
    };
  }

  /** audio bytes of this stream waiting for the disk (for the write-queue gauge) */
  get queuedBytes(): number {
    let n = 0;
    for (const seg of this.segments.values()) if (seg.writer) n += seg.writer.queuedBytes;
    return n;
  }

  private openWriter(seg: SegmentState): SegmentWriter {
    const recordingId = recordingIdFor(this.id.streamSid, seg.index);
    const paths = segmentPaths(this.opts.recordingsDir, this.id.accountSid, this.id.callSid, this.startedAt, recordingId);
    return new SegmentWriter({
      paths,
      encoding: this.opts.encoding,
      channels: this.channels,
      sampleRate: SAMPLE_RATE,
      chunkSamples: this.opts.chunkMs * SAMPLES_PER_MS,
      meta: this.baseSidecar(seg, recordingId),
      checkpointPath: paths.partialStats,
      now: this.opts.now,
      onWritten: this.opts.onWritten,
      onWriteError: (err) => this.opts.onWriteError?.(recordingId, err),
      maxQueueBytes: this.opts.maxQueueBytes,
      // counted like received frames: per track, in 20 ms units
      onDropped: (bytes) => this.opts.onDropped?.(bytes / (this.opts.encoding === 'pcm16' ? 2 : 1) / NOMINAL_FRAME_SAMPLES),
    });
  }

  /** The sidecar fields known when the segment opens (also the recovery record). */
  private baseSidecar(seg: SegmentState, recordingId: string): Omit<RecordingSidecar,
    'endedAt' | 'durationMs' | 'framesReceived' | 'framesMissing' | 'framesDuplicate' | 'framesLate' |
    'framesTooLate' | 'frames' | 'closeReason' | 'audioBytes' | 'sha256'> {
    const offsetMs = (seg.index * this.segmentSamples) / SAMPLES_PER_MS;
    return {
      recordingId,
      accountSid: this.id.accountSid,
      callSid: this.id.callSid,
      streamSid: this.id.streamSid,
      ctiSessionId: this.attribution.ctiSessionId,
      employeeId: this.attribution.employeeId,
      segmentIndex: seg.index,
      tracks: this.id.tracks,
      channels: this.channels,
      encoding: this.opts.encoding,
      sampleRate: SAMPLE_RATE,
      startedAt: new Date(this.startedAt.getTime() + offsetMs).toISOString(),
      offsetMs,
      pausedIntervals: [],
      customParameters: this.id.customParameters,
      audioFile: `${recordingId}.wav`,
      nodeId: this.opts.nodeId,
    };
  }

  private finishSegment(seg: SegmentState, reason: CloseReason): void {
    this.segments.delete(seg.index);
    this.finalizing.push(this.publish(seg, reason));
  }

  private async publish(seg: SegmentState, reason: CloseReason): Promise<RecordingSidecar | null> {
    const writer = seg.writer;
    if (!writer) return null;
    const recordingId = recordingIdFor(this.id.streamSid, seg.index);
    try {
      const result = await writer.finalize();
      const frames: Partial<Record<Track, TrackFrameStats>> = {};
      let received = 0; let missing = 0; let duplicate = 0; let late = 0; let tooLate = 0;
      for (let c = 0; c < this.channels; c++) {
        const s = seg.stats[c];
        const span = seg.firstCovered[c] < 0 ? 0 : seg.lastCoveredEnd[c] - seg.firstCovered[c];
        s.missing = Math.round((span - seg.covered[c]) / NOMINAL_FRAME_SAMPLES);
        frames[this.trackOfChannel(c)] = s;
        received += s.received; missing += s.missing; duplicate += s.duplicate; late += s.late; tooLate += s.tooLate;
      }
      const base = this.baseSidecar(seg, recordingId);
      // The audio in the file (after a write error, less than was accepted).
      const samples = writer.writtenBytes / this.channels / (this.opts.encoding === 'pcm16' ? 2 : 1);
      const droppedSamples = writer.droppedBytes / (this.opts.encoding === 'pcm16' ? 2 : 1); // all tracks
      const durationMs = samples / SAMPLES_PER_MS;
      const sidecar: RecordingSidecar = {
        ...base,
        endedAt: new Date(Date.parse(base.startedAt) + durationMs).toISOString(),
        durationMs,
        framesReceived: received,
        framesMissing: missing,
        framesDuplicate: duplicate,
        framesLate: late,
        framesTooLate: tooLate,
        frames,
        pausedIntervals: this.pausedIntervals.filter((p) => p.to > base.offsetMs && p.from < base.offsetMs + durationMs),
        closeReason: reason,
        audioBytes: result.audioBytes,
        sha256: result.sha256,
        ...(result.writeError ? { writeError: result.writeError } : {}),
        ...(droppedSamples > 0 ? { framesDroppedDiskBackpressure: Math.round(droppedSamples / NOMINAL_FRAME_SAMPLES) } : {}),
      };
      const paths = segmentPaths(this.opts.recordingsDir, this.id.accountSid, this.id.callSid, this.startedAt, recordingId);
      await writeFileAtomic(paths.sidecar, JSON.stringify(sidecar, null, 2) + '\n');
      await unlink(paths.partialMeta).catch(() => undefined);
      await unlink(paths.partialStats).catch(() => undefined);
      return sidecar;
    } catch (err) {
      this.opts.onSegmentError(recordingId, err as Error);
      return null;
    }
  }

  private trackOfChannel(c: number): Track {
    if (this.channels === 2) return c === 0 ? 'inbound' : 'outbound';
    return this.id.tracks[0];
  }

  /**
   * End the stream: emit what the window holds, publish every open segment with `reason`.
   * Resolves with the sidecars written (idempotent: a second call returns the same promise).
   */
  close(reason: CloseReason): Promise<RecordingSidecar[]> {
    if (this.closing) return this.closing;
    this.timeline.flushAll();
    for (const seg of [...this.segments.values()].sort((a, b) => a.index - b.index)) {
      if (seg.writer) this.finishSegment(seg, reason);
    }
    this.segments.clear();
    this.closing = Promise.all(this.finalizing).then((all) => all.filter((s): s is RecordingSidecar => s !== null));
    return this.closing;
  }
}
