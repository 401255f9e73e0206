// The node's registry of live stream sessions: creates them, finds them by streamSid and
// callSid, ends them (stop, hang-up, idle, shutdown) and keeps the node-wide frame counters that
// /metrics reads. Counters are plain numbers bumped per frame; prom-client reads them on scrape.
import { StreamSession, removePartialMarks, type Attribution, type StreamIdentity } from './stream-session.js';
import { reserveStreamBase, unreservedBase } from './recording-ids.js';
import { crashPoint } from './crash-points.js';
import type { SegmentPaths } from './storage-layout.js';
import type { PlaceResult } from './timeline.js';
import type { CloseReason, RecordingSidecar } from './sidecar.js';
import type { SourceSettings } from './source-settings.js';
import { clipId } from './ingest-limits.js';
import { Journal } from './journal.js';

export interface RecorderCounters {
  framesReceived: number;
  framesLate: number;
  framesDuplicate: number;
  framesTooLate: number;
  /** summed from sidecars as segments are published */
  framesMissing: number;
  bytesWritten: number;
  recordingsPublished: number;
  segmentErrors: number;
  /** 20 ms units of audio not kept because the disk fell behind (writer queue full) */
  framesDroppedBackpressure: number;
}

/** Whoever holds the stream's connection: asked to end it when the node decides to. */
export interface StreamOwner {
  endByServer(reason: CloseReason): void;
}

export interface RecorderOptions {
  recordingsDir: string;
  nodeId: string;
  settingsFor: (accountSid: string) => SourceSettings;
  idleTimeoutMs: number;
  windowMs?: number;
  chunkMs?: number;
  now?: () => number;
  wallNow?: () => Date;
  onWritten?: (bytes: number, lagMs: number) => void;
  /**
   * A published segment's outcome (rules, index, webhook), run as soon as the segment is
   * published (a rotated segment mid-call too); `all` is the stream's segments published so far
   * (every segment once the stream ended). The session's end waits for it.
   */
  onRecording?: (sidecar: RecordingSidecar, all: readonly RecordingSidecar[]) => void | Promise<void>;
  /**
   * A rotated segment whose outcome depends on how long the whole stream gets (a minimum
   * length longer than the stream so far): its outcome waits for the stream's end. Its partial
   * marks stay in .inprogress meanwhile, so a crash still gives it an outcome at recovery.
   */
  outcomeWaitsForEnd?: (sidecar: RecordingSidecar) => boolean;
  /** a recordingId used before reservations existed (in the index): never reused */
  isRecordingIdTaken?: (recordingId: string) => boolean | Promise<boolean>;
  /** the volume refused a stream's name reservation (it records under a random unique name) */
  onReserveError?: (streamSid: string, err: Error) => void;
  onSegmentError?: (recordingId: string, err: Error, id: StreamIdentity) => void;
  /** a stream began: the CTI layer applies what it already knows of the call */
  onStart?: (session: StreamSession) => void;
  /** was this call paused before the stream started? */
  isCallPaused?: (callSid: string, accountSid: string) => boolean;
  /** cluster mode: new streams hold their frames until the call's stored pause state is known */
  gatePauseState?: boolean;
  /** a segment writer's first disk error (alarm) */
  onWriteError?: (session: StreamSession, recordingId: string, err: NodeJS.ErrnoException) => void;
  /** a stream's pause record could not be written (alarm): its pauses hold, a crash would recover them as of the last checkpoint */
  onPauseRecordError?: (session: StreamSession, err: Error) => void;
  /** per segment writer, audio bytes that may wait for the disk */
  maxQueueBytes?: number;
  /** audio of a stream dropped because the disk fell behind (20 ms units; per write, not per frame) */
  onBackpressureDrop?: (session: StreamSession, frames: number) => void;
  /**
   * RECORDINGS_DIR/.journal/<node>: every accepted frame is journaled there within
   * JOURNAL_COMMIT_MS (journal.ts), so a crash loses at most that, not the jitter window.
   * Frame-to-disk lag is then measured to the journal's write. Unset: no journal.
   */
  journalDir?: string;
  /** the journal could not write (disk): streams go on, a crash may lose up to the window again */
  onJournalError?: (err: Error) => void;
}

/** Per-stream (never per-frame) notifications, e.g. for the cluster's stream registry. */
export type StreamListener = (session: StreamSession) => void;

export interface LiveStream {
  session: StreamSession;
  owner: StreamOwner;
}

type Live = LiveStream;

/** Per stream: its published segments and their outcomes, in flight or waiting for the end. */
interface Outcomes {
  published: RecordingSidecar[];
  waiting: { sidecar: RecordingSidecar; paths: SegmentPaths }[];
  running: Promise<void>[];
}

export class Recorder {
  readonly counters: RecorderCounters = {
    framesReceived: 0, framesLate: 0, framesDuplicate: 0, framesTooLate: 0, framesMissing: 0,
    bytesWritten: 0, recordingsPublished: 0, segmentErrors: 0, framesDroppedBackpressure: 0,
  };
  private readonly opts: Required<Pick<RecorderOptions, 'windowMs' | 'chunkMs' | 'now' | 'wallNow'>> & RecorderOptions;
  private readonly live = new Map<string, Live>();
  private readonly byCall = new Map<string, Set<string>>();
  /** sessions ended but not yet published, for drain */
  private readonly pending = new Set<Promise<unknown>>();
  private readonly outcomes = new WeakMap<StreamSession, Outcomes>();
  private readonly countFrame: (r: PlaceResult) => void;
  private readonly countWritten: (bytes: number, lagMs: number) => void;
  private readonly startedListeners: StreamListener[] = [];
  private readonly endedListeners: StreamListener[] = [];
  private readonly changedListeners: StreamListener[] = [];
  /** the node's media journal; null without RecorderOptions.journalDir */
  readonly journal: Journal | null;

  constructor(opts: RecorderOptions) {
    this.opts = {
      ...opts,
      windowMs: opts.windowMs ?? 1000,
      // 500 ms per write: few syscalls per stream, and at most the 1 s window is lost on a crash.
      chunkMs: opts.chunkMs ?? 500,
      now: opts.now ?? (() => performance.now()),
      wallNow: opts.wallNow ?? (() => new Date()),
    };
    const c = this.counters;
    this.countFrame = (r) => {
      switch (r) {
        case 'placed': c.framesReceived++; break;
        case 'late': c.framesReceived++; c.framesLate++; break;
        case 'duplicate': c.framesDuplicate++; break;
        case 'too_late': c.framesTooLate++; break;
      }
    };
    this.journal = opts.journalDir === undefined ? null : new Journal({
      dir: opts.journalDir,
      now: this.opts.now,
      // a frame is on disk (in the kernel) once its journal commit is written
      onCommitted: (_bytes, lagMs) => this.opts.onWritten?.(0, lagMs),
      onError: (err) => this.opts.onJournalError?.(err),
    });
    const lagFromWrites = this.journal === null;
    this.countWritten = (bytes, lagMs) => {
      c.bytesWritten += bytes;
      this.opts.onWritten?.(bytes, lagFromWrites ? lagMs : Number.NaN);
    };
  }

  /** audio bytes waiting for the disk across live streams (sessions still publishing excluded) */
  get queuedBytes(): number {
    let n = 0;
    for (const { session } of this.live.values()) n += session.queuedBytes;
    return n;
  }

  get activeStreams(): number {
    return this.live.size;
  }

  get(streamSid: string): StreamSession | undefined {
    return this.live.get(streamSid)?.session;
  }

  streamsOfCall(callSid: string): StreamSession[] {
    const sids = this.byCall.get(callSid);
    if (!sids) return [];
    const out: StreamSession[] = [];
    for (const sid of sids) {
      const l = this.live.get(sid);
      if (l) out.push(l.session);
    }
    return out;
  }

  /** every live stream with the owner that can end it (maintenance sweep) */
  liveStreams(): LiveStream[] {
    return [...this.live.values()];
  }

  sessions(): IterableIterator<StreamSession> {
    return [...this.live.values()].map((l) => l.session)[Symbol.iterator]();
  }

  /** Begin recording a stream; null when that streamSid is already live on this node. */
  start(id: StreamIdentity, owner: StreamOwner): StreamSession | null {
    if (this.live.has(id.streamSid)) return null;
    const settings = this.opts.settingsFor(id.accountSid);
    const attribution: Attribution = {
      ctiSessionId: clipId(id.customParameters.ctiSessionId) ?? null,
      employeeId: clipId(id.customParameters.employeeId) ?? settings.defaultEmployeeId,
    };
    const outcomes: Outcomes = { published: [], waiting: [], running: [] };
    const session = new StreamSession(id, attribution, {
      recordingsDir: this.opts.recordingsDir,
      nodeId: this.opts.nodeId,
      encoding: settings.recordingFormat,
      segmentMaxS: settings.segmentMaxS,
      windowMs: this.opts.windowMs,
      chunkMs: this.opts.chunkMs,
      now: this.opts.now,
      wallNow: this.opts.wallNow,
      onFrame: this.countFrame,
      onWritten: this.countWritten,
      onSegmentError: (rid, err) => {
        this.counters.segmentErrors++;
        this.opts.onSegmentError?.(rid, err, id);
      },
      pauseBehavior: settings.pauseBehavior,
      startPaused: this.opts.isCallPaused?.(id.callSid, id.accountSid) ?? false,
      gatePauseState: this.opts.gatePauseState,
      onWriteError: (rid, err) => this.opts.onWriteError?.(session, rid, err),
      onPauseRecordError: (err) => this.opts.onPauseRecordError?.(session, err),
      maxQueueBytes: this.opts.maxQueueBytes,
      onDropped: (frames) => {
        this.counters.framesDroppedBackpressure += frames;
        this.opts.onBackpressureDrop?.(session, frames);
      },
      reserveBase: () => this.reserve(id),
      onSegmentPublished: (sidecar, paths) => this.segmentPublished(outcomes, sidecar, paths),
      journal: this.journal ?? undefined,
    });
    this.outcomes.set(session, outcomes);
    this.live.set(id.streamSid, { session, owner });
    let set = this.byCall.get(id.callSid);
    if (!set) this.byCall.set(id.callSid, (set = new Set()));
    set.add(id.streamSid);
    this.opts.onStart?.(session);
    for (const l of this.startedListeners) l(session);
    return session;
  }

  /** End a stream and publish its segments. Idempotent. */
  finish(session: StreamSession, reason: CloseReason): Promise<RecordingSidecar[]> {
    const sid = session.id.streamSid;
    if (this.live.get(sid)?.session === session) {
      this.live.delete(sid);
      const set = this.byCall.get(session.id.callSid);
      set?.delete(sid);
      if (set && set.size === 0) this.byCall.delete(session.id.callSid);
      for (const l of this.endedListeners) l(session);
    }
    const wasClosed = session.closed;
    const done = session.close(reason);
    const outcomes = this.outcomes.get(session);
    if (!wasClosed && outcomes) {
      const tracked = done.then(async (sidecars) => {
        // every segment is published: the ones waiting for the stream's length get it now
        for (const w of outcomes.waiting.splice(0)) outcomes.running.push(this.outcome(w.sidecar, sidecars, w.paths));
        await Promise.all(outcomes.running);
        return sidecars;
      });
      this.pending.add(tracked);
      void tracked.finally(() => this.pending.delete(tracked));
      return tracked;
    }
    return done;
  }

  /** The stream's unique name on the shared volume (recording-ids.ts). */
  private async reserve(id: StreamIdentity): Promise<string> {
    const taken = this.opts.isRecordingIdTaken;
    try {
      return await reserveStreamBase({
        recordingsDir: this.opts.recordingsDir,
        streamSid: id.streamSid,
        owner: { accountSid: id.accountSid, callSid: id.callSid, nodeId: this.opts.nodeId },
        usedWithoutReservation: taken ? (base) => taken(`${base}-0000`) : undefined,
      });
    } catch (err) {
      this.opts.onReserveError?.(id.streamSid, err as Error);
      return unreservedBase(id.streamSid);
    }
  }

  /** A segment is on disk under its final names: its outcome now, or at the stream's end. */
  private segmentPublished(o: Outcomes, sidecar: RecordingSidecar, paths: SegmentPaths): void {
    this.counters.recordingsPublished++;
    this.counters.framesMissing += sidecar.framesMissing;
    o.published.push(sidecar);
    if (sidecar.closeReason === 'rotate' && this.opts.outcomeWaitsForEnd?.(sidecar)) {
      o.waiting.push({ sidecar, paths });
      return;
    }
    const run = this.outcome(sidecar, [...o.published], paths);
    o.running.push(run);
  }

  private outcome(sidecar: RecordingSidecar, all: readonly RecordingSidecar[], paths: SegmentPaths): Promise<void> {
    const run = (async () => {
      try {
        await this.opts.onRecording?.(sidecar, all);
      } catch {
        return; // the marks stay: the next start's recovery gives it its outcome
      }
      crashPoint('publish:outcome-done');
      await removePartialMarks(paths);
    })();
    this.pending.add(run);
    void run.finally(() => this.pending.delete(run));
    return run;
  }

  /** A stream began recording on this node (called after it is registered as live). */
  onStreamStarted(l: StreamListener): void {
    this.startedListeners.push(l);
  }

  /** A stream stopped being live on this node (its segments may still be publishing). */
  onStreamEnded(l: StreamListener): void {
    this.endedListeners.push(l);
  }

  /** Something others list about a live stream changed (e.g. paused): call `streamChanged`. */
  onStreamChanged(l: StreamListener): void {
    this.changedListeners.push(l);
  }

  /** Whoever changes a live stream's listed state (pause/resume) calls this once per change. */
  streamChanged(session: StreamSession): void {
    if (this.live.get(session.id.streamSid)?.session !== session) return;
    for (const l of this.changedListeners) l(session);
  }

  /** End every stream that sent nothing for the idle timeout (called by a periodic sweep). */
  sweepIdle(): number {
    const cutoff = this.opts.now() - this.opts.idleTimeoutMs;
    // Once a second over every live stream: no copy of the map unless something is idle (ending
    // a stream removes it from the map, so those are collected first).
    let idle: StreamOwner[] | null = null;
    for (const { session, owner } of this.live.values()) {
      if (session.lastActivity <= cutoff) (idle ??= []).push(owner);
    }
    if (idle === null) return 0;
    for (const owner of idle) owner.endByServer('idle');
    return idle.length;
  }

  /** Ask every owner to end its stream with `reason`, then wait for all publishing. */
  async endAll(reason: CloseReason): Promise<void> {
    for (const { owner } of [...this.live.values()]) owner.endByServer(reason);
    await this.settled();
  }

  /** Resolves when every ended session has been published. */
  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  /** After the last stream: write what the journal holds and close it (its files go when unneeded). */
  async closeJournal(): Promise<void> {
    await this.journal?.close();
  }
}
