// One Twilio stream being recorded: frames in (already validated and decoded by the gateway),
// segments out. It owns the stream's timeline, its open segment writers, its pauses
// (pause-spans.ts) and the per-segment frame accounting (segment-accounting.ts), and turns each
// finished segment into a published WAV + sidecar (sidecar-builder.ts).
// It knows nothing of WebSockets or JSON: the gateway drives it through plain method calls.
import { Timeline, type PlaceResult, type RegionCoverage, type TimelineSink } from './timeline.js';
import { SegmentWriter, writePhaseBytes } from './segment-writer.js';
import { pauseRecordPath, recordingIdFor, segmentPaths, type SegmentPaths } from './storage-layout.js';
import { writeFileAtomic } from './atomic-file.js';
import { crashPoint } from './crash-points.js';
import { unreservedBase } from './recording-ids.js';
import { unlink } from 'node:fs/promises';
import type { Journal, JournalClient } from './journal.js';
import type { CloseReason, Encoding, PausedInterval, RecordingSidecar, Track } from './sidecar.js';
import { PauseSpans } from './pause-spans.js';
import { writePauseRecord } from './pause-record.js';
import {
  NOMINAL_FRAME_SAMPLES, addCoverage, checkpointOf, countFrame, newSegment, settleMissing, type SegmentState,
} from './segment-accounting.js';
import { buildSidecar, segmentMetaOf, type SegmentMeta, type StreamMeta } from './sidecar-builder.js';
import { SAMPLE_RATE, SAMPLES_PER_MS } from './media-clock.js';


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
  /** `skip`: paused spans are cut out of the file; `silence`: they stay as silence (aligned) */
  pauseBehavior?: 'silence' | 'skip';
  /** the call was paused before this stream started: drop from its first frame */
  startPaused?: boolean;
  /**
   * Cluster mode: whether the call was paused before this stream began is known only when Redis
   * answers the stream's registration. Until then (openGate(), or PAUSE_GATE_MAX_MS) frames wait
   * in memory, before the timeline, so a pause stored on another node holds from frame 0.
   */
  gatePauseState?: boolean;
  /** the disk refused a write of this stream (first error of a segment) */
  onWriteError?: (recordingId: string, err: NodeJS.ErrnoException) => void;
  /** the stream's pause record (pause-record.ts) could not be written: a crash now would recover its pauses only as of the last checkpoint */
  onPauseRecordError?: (err: Error) => void;
  /** cap of audio waiting for the disk, per segment writer */
  maxQueueBytes?: number;
  /** 20 ms units of audio a published segment lost to disk backpressure */
  onDropped?: (frames: number) => void;
  /**
   * Reserve the stream's unique name (recording-ids.ts); its recordings are `<base>-<segment>`.
   * Default: the streamSid itself (no reservation).
   */
  reserveBase?: () => Promise<string>;
  /**
   * A segment is published (audio and sidecar under their final names). When set, the partial's
   * meta and checkpoint stay in .inprogress as the durable mark of an outcome still to happen
   * (rules, index, webhook): the receiver removes them (removePartialMarks) once it is done, and
   * crash recovery redoes the outcome of any segment whose mark is still there.
   */
  onSegmentPublished?: (sidecar: RecordingSidecar, paths: SegmentPaths) => void;
  /**
   * The node's media journal (journal.ts): every accepted frame is appended at once, so a crash
   * loses what the last group commit did not reach, not the jitter window and the write batch.
   */
  journal?: Journal;
}

/** Remove what marks a segment as not yet fully handled (see onSegmentPublished). */
export async function removePartialMarks(paths: SegmentPaths): Promise<void> {
  // A mark that cannot be removed makes the next start redo the outcome (at least once, as
  // documented: the webhook keeps its eventId); ENOENT is a checkpoint never written.
  await unlink(paths.partialMeta).catch(() => undefined);
  await unlink(paths.partialStats).catch(() => undefined);
}

/** An emitted region held (copied) until the stream's name is reserved. */
interface HeldRegion {
  planes: Buffer[];
  samples: number;
  from: number;
  cov: RegionCoverage;
}

/** A frame that arrived while its call time was paused: dropped before the timeline. */
export type MediaResult = PlaceResult | 'paused' | 'held';

/** Longest a stream waits for its call's stored pause state (Redis away): then local knowledge rules. */
export const PAUSE_GATE_MAX_MS = 2000;
/** Frames (all channels) a gated stream holds at most: 2 s of both tracks. */
const PAUSE_GATE_MAX_FRAMES = 200;
/** With a journal, segment audio is written in pieces of this much (ms): see SegmentWriterOptions.batchBytes. */
const JOURNALED_WRITE_MS = 2000;
/** Frames kept (copies) for the journal while the stream's name is reserved: 5 s of both tracks. */
const UNNAMED_MAX_FRAMES = 500;
/**
 * How far later frames may pull the stream clock's origin back from the first frame's (ms): more
 * than any loop delay at a stream's start seen under load (p99 < 100 ms at 1 000 streams), small
 * against a pause, so a client sending ahead of real time moves a resume by this much at most.
 */
export const MAX_ORIGIN_CORRECTION_MS = 250;

interface GatedFrame { channel: number; start: number; payload: Buffer; length: number }

/** streams started in this process: each stream's number sets its write phase */
let streamsStarted = 0;

export class StreamSession implements TimelineSink, JournalClient {
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
  /** PCI pauses of the stream, in call-time samples */
  private readonly pauses: PauseSpans;
  /** closed pauses in call-time ms, in order */
  get pausedIntervals(): readonly PausedInterval[] {
    return this.pauses.intervals;
  }
  /** one past the newest call-time sample seen, paused frames included: the pause/resume instant */
  private seen = 0;
  /**
   * The stream clock's origin as seen from here: the least arrival ms − call-time ms over the
   * frames, i.e. the least-delayed frame's (late only by the network's least delay). now − origin
   * is the call time being spoken now. The first frame alone is not enough: a busy loop reads it
   * late, the origin is then late and a resume would end the pause too early, keeping paused
   * audio still in flight (PCI). The correction is bounded so that a client sending faster than
   * real time cannot push "now" far past what it sent.
   */
  private clockOrigin = Number.POSITIVE_INFINITY;
  /** the origin the first frame gave: the bound of the correction */
  private firstOrigin = Number.POSITIVE_INFINITY;
  private readonly skip: boolean;
  /** frames dropped because they were paused */
  framesPaused = 0;
  /** monotonic ms of the last message of any kind (idle detection) */
  lastActivity: number;
  /** the stream's reserved name (null until the reservation settles) */
  private base: string | null = null;
  /** settles once the base is known and the regions held meanwhile went to the writer */
  private readonly named: Promise<void>;
  /** regions emitted before the base was known (the first few hundred ms at most) */
  private held: HeldRegion[] | null = null;
  /** JournalClient: owned by the journal */
  journalGen = 0;
  journalNo = 0;
  /** one past the newest timeline sample journaled */
  private journaledTo = 0;
  /** segments handed to publish() and not settled yet (their writers still hold audio) */
  private readonly publishing = new Set<SegmentState>();
  /** every segment is published (or failed): the journal holds nothing this stream needs */
  private ended = false;
  /** this stream's number in the process (its segments' write phase: see writePhaseBytes) */
  private readonly no = streamsStarted++;

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
    this.skip = opts.pauseBehavior === 'skip';
    this.pauses = new PauseSpans(opts.startPaused);
    if (opts.gatePauseState) {
      this.gate = [];
      this.gateTimer = setTimeout(() => this.openGate(), PAUSE_GATE_MAX_MS);
      this.gateTimer.unref();
    }
    if (opts.reserveBase === undefined) {
      this.base = id.streamSid;
      this.named = Promise.resolve();
      this.journalOpen();
    } else {
      this.held = [];
      // the reserver falls back on its own; a rejection here would hold the audio forever
      this.named = opts.reserveBase().catch(() => unreservedBase(id.streamSid)).then((base) => {
        this.base = base;
        const held = this.held ?? [];
        this.held = null;
        for (const r of held) this.emit(r.planes, 0, r.samples, r.from, r.cov);
        if (!this.closed) this.journalOpen();
      });
    }
    // paused from its first frame: durable like any pause (not awaited: nothing answers a start)
    if (opts.startPaused === true) void this.persistPauses();
  }

  /** the pause record's writes, in order; each writes the state as it is when it runs */
  private pauseWrites: Promise<boolean> = Promise.resolve(true);
  /** a pause record was written (or is queued): removed once every segment is published */
  private pauseRecorded = false;
  /** the pause record is gone (the stream is published): later writes would only leave it behind */
  private pauseRecordRemoved = false;

  /**
   * Make the stream's pause state durable: its pause record beside the partials (pause-record.ts),
   * from which crash recovery gives each segment the pausedIntervals, paused silence and cuts
   * the live sidecar would have had. Called after pause() and resume() (the API awaits it
   * before its 200) and at a paused start; one small atomic write each, never on the media path.
   * Resolves once a write that began after this call is done: true, or false when it failed
   * (reported through onPauseRecordError: the pause itself holds regardless).
   */
  persistPauses(): Promise<boolean> {
    if (!this.pauseRecorded && !this.pauses.paused && !this.pauses.any) return Promise.resolve(true); // never paused
    this.pauseRecorded = true;
    const write = async (): Promise<boolean> => {
      await this.named.catch(() => undefined); // the record is named after the stream's reserved name
      if (this.pauseRecordRemoved || this.base === null) return true;
      const open = this.pauses.openFrom;
      try {
        await writePauseRecord(pauseRecordPath(this.opts.recordingsDir, this.base), {
          v: 1,
          nodeId: this.opts.nodeId,
          behavior: this.skip ? 'skip' : 'silence',
          intervals: this.pauses.intervals,
          openFrom: open === null ? null : open / SAMPLES_PER_MS,
          framesPaused: this.framesPaused,
        });
        return true;
      } catch (err) {
        this.opts.onPauseRecordError?.(err as Error);
        return false;
      }
    };
    this.pauseWrites = this.pauseWrites.then(write);
    return this.pauseWrites;
  }

  /** Every segment is published (sidecars written): the pause record has nothing left to tell. */
  private removePauseRecord(): Promise<boolean> {
    this.pauseWrites = this.pauseWrites.then(async () => {
      this.pauseRecordRemoved = true;
      if (this.base !== null) await unlink(pauseRecordPath(this.opts.recordingsDir, this.base)).catch(() => undefined); // left: removed by the next start's recovery
      return true;
    });
    return this.pauseWrites;
  }

  /** Frames are journaled once replay can find the stream's files (its name is known). */
  private journalOpen(): void {
    const journal = this.opts.journal;
    const early = this.unnamed;
    this.unnamed = null;
    if (journal === undefined) return;
    journal.register(this, {
      base: this.base as string,
      accountSid: this.id.accountSid,
      callSid: this.id.callSid,
      startedAt: this.startedAt.toISOString(),
      channels: this.channels,
      encoding: this.opts.encoding,
      segmentSamples: this.segmentSamples,
      meta: this.streamMeta(),
    });
    const now = this.opts.now();
    for (const f of early ?? []) this.journalFrame(journal, f.channel, f.start, f.payload, 0, f.length, now);
  }

  /** JournalClient: one past the newest timeline sample journaled. */
  get journalFront(): number {
    return this.journaledTo;
  }

  /**
   * JournalClient: timeline samples safe in segment files (bytes handed to the kernel): the
   * least of what each open or publishing writer has written. Infinity once all is published.
   */
  durableTo(): number {
    if (this.ended) return Number.POSITIVE_INFINITY;
    if (this.base === null) return 0;
    const perSample = this.channels * (this.opts.encoding === 'pcm16' ? 2 : 1);
    let min = Number.POSITIVE_INFINITY;
    for (const seg of this.segments.values()) {
      if (seg.writer) min = Math.min(min, seg.index * this.segmentSamples + seg.writer.writtenBytes / perSample);
    }
    for (const seg of this.publishing) {
      if (seg.writer) min = Math.min(min, seg.index * this.segmentSamples + seg.writer.writtenBytes / perSample);
    }
    return min;
  }

  /** The recordingId of segment `index` (the base must be known). */
  recordingIdOf(index: number): string {
    if (this.base === null) throw new Error('the stream has no reserved name yet');
    return recordingIdFor(this.base, index);
  }

  get paused(): boolean {
    return this.pauses.paused;
  }

  /**
   * Stop keeping audio from the newest call time seen so far (frames still in flight from
   * before it are kept). Idempotent. Returns the pause instant in call-time ms.
   */
  pause(): number {
    const from = this.closed ? this.pauses.openFrom : this.pauses.pause(this.seen);
    return (from ?? this.seen) / SAMPLES_PER_MS;
  }

  /** Keep audio again from the later of the newest call time seen and the call time spoken now. Idempotent. Returns the instant in ms. */
  resume(): number {
    if (!this.pauses.paused) return this.seen / SAMPLES_PER_MS;
    // Frames still in flight were spoken before the resume: the pause ends at the newest frame
    // read or at the call time being spoken now, whichever is later (a real-time stream's newest
    // frame lags the caller by the network delay; marker audio sent just before resume was seen).
    // Past the newest frame, the end is rounded up to the frames' grid (frames follow one another
    // from it): a frame is then paused whole, never kept from inside the audio it carries, and an
    // estimate a few ms short of the truth still drops the frame being spoken (PCI, ≤ 20 ms more
    // pause, declared in the answer and the sidecar).
    const spokenNow = Number.isFinite(this.clockOrigin)
      ? Math.floor(this.opts.now() - this.clockOrigin) * SAMPLES_PER_MS : 0;
    const end = spokenNow <= this.seen ? this.seen
      : this.seen + Math.ceil((spokenNow - this.seen) / NOMINAL_FRAME_SAMPLES) * NOMINAL_FRAME_SAMPLES;
    return this.pauses.resume(end) / SAMPLES_PER_MS;
  }

  /** A lower origin seen: the first one fixes the bound; later ones correct it within the bound. */
  private correctOrigin(origin: number): number {
    if (this.firstOrigin === Number.POSITIVE_INFINITY) this.firstOrigin = origin;
    return Math.max(origin, this.firstOrigin - MAX_ORIGIN_CORRECTION_MS);
  }

  /** Channel of a track: left/0 = inbound (caller), right/1 = outbound (agent); -1 = not in this stream. */
  channelOf(track: Track): number {
    if (this.channels === 2) return track === 'inbound' ? 0 : 1;
    return this.id.tracks[0] === track ? 0 : -1;
  }

  /** Newest sample position seen on any channel, paused frames included (call time × 8). */
  get frontier(): number {
    return Math.max(this.seen, this.timeline.frontier);
  }

  get closed(): boolean {
    return this.closing !== null;
  }

  /** Note activity that carries no audio (dtmf, mark): the stream is not idle. */
  touch(): void {
    this.lastActivity = this.opts.now();
  }

  /** frames waiting for the call's stored pause state (cluster mode); null = not gated */
  private gate: GatedFrame[] | null = null;
  private gateTimer: NodeJS.Timeout | null = null;

  /**
   * The call's stored pause state is applied (a stored pause has paused this session: with
   * nothing seen yet, from frame 0): the held frames go through the normal path, paused ones are
   * dropped there. Also opened by its timer or when the gate is full. Idempotent.
   */
  openGate(): void {
    const held = this.gate;
    if (held === null) return;
    this.gate = null;
    if (this.gateTimer !== null) clearTimeout(this.gateTimer);
    for (const f of held) this.media(f.channel, f.start, f.payload, f.length);
  }

  /**
   * Place one frame: `payload[offset .. offset + length)`. `start` is its sample position on the
   * stream clock. With a journal the gateway decodes into `journal.buf` at `journal.at`: the
   * accepted frame is then journaled without a copy.
   */
  media(channel: number, start: number, payload: Buffer, length: number, offset = 0): MediaResult {
    const arrival = this.opts.now();
    this.lastActivity = arrival;
    // at arrival, before any gate: a held frame was still spoken when it arrived
    const origin = arrival - start / SAMPLES_PER_MS;
    if (origin < this.clockOrigin) this.clockOrigin = this.correctOrigin(origin);
    if (this.gate !== null) {
      // a copy: the caller's buffer is reused for the next frame. Memory only, bounded.
      this.gate.push({ channel, start, payload: Buffer.from(payload.subarray(offset, offset + length)), length });
      if (this.gate.length >= PAUSE_GATE_MAX_FRAMES) this.openGate();
      return 'held';
    }
    if (start + length > this.seen) this.seen = start + length;
    // PCI: paused audio never reaches the ring (nor anything the ring is written to).
    const pausedUntil = this.pauses.pausedUntil(start);
    if (pausedUntil > start) {
      if (pausedUntil >= start + length) {
        this.framesPaused++;
        return 'paused';
      }
      // The frame straddles a resume (its instant is the call time spoken then, not a frame
      // edge): the part spoken before it is dropped, the rest is kept from the resume on, so the
      // paused span is exactly what the resume answered and nothing after it goes missing.
      const cut = pausedUntil - start;
      offset += cut;
      length -= cut;
      start = pausedUntil;
    }
    if (this.skip && this.pauses.any) start -= this.pauses.cutBefore(start);
    const result = this.timeline.place(channel, start, payload, length, arrival, offset);
    const segIndex = Math.floor(start / this.segmentSamples);
    const seg = segIndex === this.current.index ? this.current : this.segment(segIndex);
    countFrame(seg.stats[channel]!, result); // `channel` came from channelOf, -1 turned away
    if ((result === 'placed' || result === 'late') && this.opts.journal !== undefined) {
      // Journaled only what the timeline kept (never a paused frame: those returned above),
      // at its timeline position (after a `skip` cut): replay puts it where the file has it.
      if (this.base !== null) this.journalFrame(this.opts.journal, channel, start, payload, offset, length, arrival);
      else if (this.unnamed !== null && this.unnamed.length < UNNAMED_MAX_FRAMES) {
        // the name is being reserved (an fsync): kept until replay can find the stream's files
        this.unnamed.push({ channel, start, payload: Buffer.from(payload.subarray(offset, offset + length)), length });
      }
    }
    this.opts.onFrame(result);
    return result;
  }

  /** frames accepted before the stream's name was known (journaled once it is) */
  private unnamed: GatedFrame[] | null = [];

  private journalFrame(journal: Journal, channel: number, start: number, payload: Buffer, offset: number, length: number, arrival: number): void {
    // The segment files exist from the first frame on, so replay has somewhere to put it
    // (a frame off the 20 ms grid may end in the next segment).
    const segIndex = Math.floor(start / this.segmentSamples);
    // A frame kept while the name was reserved may belong to a segment already emitted and
    // handed to publication meanwhile: it is in that file; never open the segment again.
    if (segIndex < this.current.index) return;
    const seg = segIndex === this.current.index ? this.current : this.segment(segIndex);
    if (seg.writer === null) seg.writer = this.openWriter(seg);
    const endIndex = Math.floor((start + length - 1) / this.segmentSamples);
    if (endIndex !== segIndex) {
      const next = this.segment(endIndex);
      if (next.writer === null) next.writer = this.openWriter(next);
    }
    journal.commit(this, channel, start, payload, offset, length, arrival);
    if (start + length > this.journaledTo) this.journaledTo = start + length;
  }

  private segment(index: number): SegmentState {
    let seg = this.segments.get(index);
    if (!seg) {
      seg = newSegment(index, this.channels);
      this.segments.set(index, seg);
    }
    return seg;
  }

  /** TimelineSink: a finished region of audio, in order, never crossing a segment boundary. */
  emit(planes: readonly Buffer[], offset: number, samples: number, from: number, cov: RegionCoverage): void {
    if (this.held !== null) {
      // The name is being reserved (a few ms): keep a copy, the timeline reuses its planes.
      this.held.push({
        planes: planes.map((p) => Buffer.from(p.subarray(offset, offset + samples))),
        samples, from,
        cov: { covered: [...cov.covered], firstCovered: [...cov.firstCovered], lastCoveredEnd: [...cov.lastCoveredEnd], oldestArrival: cov.oldestArrival },
      });
      return;
    }
    const index = Math.floor(from / this.segmentSamples);
    if (index !== this.current.index) {
      this.finishSegment(this.current, 'rotate');
      this.current = this.segment(index);
    }
    const seg = this.current;
    const silent = addCoverage(seg, cov, this.channels);
    if (!seg.writer) seg.writer = this.openWriter(seg);
    seg.writer.append(planes, offset, samples, silent, cov.oldestArrival);
    if (seg.writer.checkpointDue(this.opts.now())) seg.writer.checkpoint(checkpointOf(seg, this.pauses.intervals, this.framesPaused));
  }

  /** audio bytes of this stream waiting for the disk (for the write-queue gauge) */
  get queuedBytes(): number {
    let n = 0;
    for (const seg of this.segments.values()) if (seg.writer) n += seg.writer.queuedBytes;
    return n;
  }

  private openWriter(seg: SegmentState): SegmentWriter {
    const recordingId = this.recordingIdOf(seg.index);
    const paths = segmentPaths(this.opts.recordingsDir, this.id.accountSid, this.id.callSid, this.startedAt, recordingId);
    const bytesPerSample = this.channels * (this.opts.encoding === 'pcm16' ? 2 : 1);
    const batchBytes = this.opts.journal === undefined ? 0 : JOURNALED_WRITE_MS * SAMPLES_PER_MS * bytesPerSample;
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
      // with the journal the file is written in larger, fewer pieces (the journal is what a
      // crash is recovered from): 2 s of audio per write instead of 500 ms
      batchBytes,
      // streams that start together (a burst) would write and checkpoint in the same ticks every
      // batch: each stream's first batch is 1..4 emission chunks by its number, then full ones
      firstBatchBytes: writePhaseBytes(this.no, batchBytes, this.opts.chunkMs * SAMPLES_PER_MS * bytesPerSample),
      batchWhile: this.opts.journal === undefined ? undefined : ((j) => () => j.ok)(this.opts.journal),
      // counted like received frames: per track, in 20 ms units
      onDropped: (bytes) => this.opts.onDropped?.(bytes / (this.opts.encoding === 'pcm16' ? 2 : 1) / NOMINAL_FRAME_SAMPLES),
    });
  }

  /** The sidecar fields known when the segment opens (also the recovery record). */
  private baseSidecar(seg: SegmentState, recordingId: string): SegmentMeta {
    return segmentMetaOf(this.streamMeta(), recordingId, seg.index, this.segmentSamples / SAMPLES_PER_MS);
  }

  /** The sidecar fields every segment shares (also in the media journal, for recovery). */
  private streamMeta(): StreamMeta {
    return {
      accountSid: this.id.accountSid,
      callSid: this.id.callSid,
      streamSid: this.id.streamSid,
      ctiSessionId: this.attribution.ctiSessionId,
      employeeId: this.attribution.employeeId,
      tracks: this.id.tracks,
      channels: this.channels,
      encoding: this.opts.encoding,
      sampleRate: SAMPLE_RATE,
      startedAt: this.startedAt.toISOString(),
      customParameters: this.id.customParameters,
      nodeId: this.opts.nodeId,
    };
  }

  private finishSegment(seg: SegmentState, reason: CloseReason): void {
    this.segments.delete(seg.index);
    this.publishing.add(seg);
    this.finalizing.push(this.publish(seg, reason).finally(() => this.publishing.delete(seg)));
  }

  private async publish(seg: SegmentState, reason: CloseReason): Promise<RecordingSidecar | null> {
    const writer = seg.writer;
    if (!writer) return null;
    const recordingId = this.recordingIdOf(seg.index);
    try {
      const result = await writer.finalize();
      crashPoint('publish:audio-renamed');
      const stats = settleMissing(seg, this.channels, this.skip ? null : (a, b) => this.pauses.pausedWithin(a, b));
      const base = this.baseSidecar(seg, recordingId);
      // The audio in the file (after a write error, less than was accepted).
      const samples = writer.writtenBytes / this.channels / (this.opts.encoding === 'pcm16' ? 2 : 1);
      const durationMs = samples / SAMPLES_PER_MS;
      const sidecar = buildSidecar(base, {
        stats,
        durationMs,
        pausedIntervals: this.pauses.ofSegment(base.offsetMs, durationMs, this.skip),
        framesPaused: this.framesPaused,
        closeReason: reason,
        audioBytes: result.audioBytes,
        sha256: result.sha256,
        writeError: result.writeError,
        droppedSamples: writer.droppedBytes / (this.opts.encoding === 'pcm16' ? 2 : 1), // all tracks
      });
      const paths = segmentPaths(this.opts.recordingsDir, this.id.accountSid, this.id.callSid, this.startedAt, recordingId);
      await writeFileAtomic(paths.sidecar, JSON.stringify(sidecar, null, 2) + '\n');
      crashPoint('publish:sidecar-written');
      if (this.opts.onSegmentPublished) this.opts.onSegmentPublished(sidecar, paths);
      else await removePartialMarks(paths);
      return sidecar;
    } catch (err) {
      this.opts.onSegmentError(recordingId, err as Error);
      return null;
    }
  }

  /**
   * End the stream: emit what the window holds, publish every open segment with `reason`.
   * Resolves with the sidecars written (idempotent: a second call returns the same promise).
   */
  close(reason: CloseReason): Promise<RecordingSidecar[]> {
    this.openGate(); // what was held is kept (or dropped as paused) like any other frame
    if (this.closing) return this.closing;
    if (this.base === null) {
      // ended before its name was reserved: close once the held audio reached its writer
      this.closing = this.named.then(() => this.closeNamed(reason), () => this.closeNamed(reason));
      return this.closing;
    }
    this.closing = this.closeNamed(reason);
    return this.closing;
  }

  private closeNamed(reason: CloseReason): Promise<RecordingSidecar[]> {
    // an open pause ends with the stream: at the newest call time seen (the end of the file), not
    // at "spoken now", which may run past it; a resume asked after this answers the same instant
    if (this.pauses.paused) this.pauses.resume(this.seen);
    this.timeline.flushAll();
    // silence: a pause running to the end of the call stays in the file as silence
    if (!this.skip && this.pauses.any) this.timeline.emitUpTo(this.seen);
    for (const seg of [...this.segments.values()].sort((a, b) => a.index - b.index)) {
      if (seg.writer) this.finishSegment(seg, reason);
    }
    this.segments.clear();
    return Promise.all(this.finalizing).then(async (all) => {
      this.ended = true;
      this.opts.journal?.unregister(this);
      // a segment that could not be published stays in .inprogress for the next start's
      // recovery, which still needs the record (and removes it then)
      if (this.pauseRecorded && all.every((s) => s !== null)) await this.removePauseRecord();
      return all.filter((s): s is RecordingSidecar => s !== null);
    });
  }
}
