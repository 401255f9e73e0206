// The recording policy of a contact center, per call: CTI events (attribution, keep/delete,
// holds), pause/resume, and what happens to each recording when it is published (kept and
// indexed, or deleted by a rule) — each outcome announced once to the webhook outbox.
// Contract section 5. HTTP lives in gateway/api/*; this module is plain method calls.
import { unlink } from 'node:fs/promises';
import path from 'node:path';
import type { SourceSettings } from '../gateway/config-types.js';
import type { Alarms } from './alarms.js';
import type { CallState, CallStates, CtiEvent } from './call-states.js';
import type { Recorder } from './recorder.js';
import type { RecordingIndex } from './recording-index.js';
import type { RecordingSidecar } from './sidecar.js';
import type { StreamIdentity, StreamSession } from './stream-session.js';
import { sidecarPathOf } from './storage-layout.js';
import { writeFileAtomic } from './atomic-file.js';
import { ARCHIVE_FORMATS, archiveFileName } from './archive/formats.js';

export type RecordingEvent = 'finished' | 'failed' | 'deleted';
export type DeleteReason = 'not_responding' | 'min_session_length';

export interface CallControlDeps {
  recorder: () => Recorder;
  index: RecordingIndex;
  states: CallStates;
  alarms: Alarms;
  recordingsDir: string;
  settingsFor: (accountSid: string) => SourceSettings;
  wallNow: () => Date;
  /** hand an outcome to the webhook outbox (absent when no webhook is configured) */
  announce?: (event: RecordingEvent, body: Record<string, unknown>) => Promise<void>;
  /** a recording entered (or changed in) the index / left it: cluster mode tells the other nodes */
  onIndexed?: (sidecar: RecordingSidecar) => void;
  onRemoved?: (recordingId: string) => void;
  onError: (what: string, err: Error) => void;
}

/** The answer of a CTI event or a pause/resume, as the API returns it. */
export interface CallView {
  callSid: string;
  ctiSessionId: string | null;
  employeeId: string | null;
  kept: boolean;
  discard: boolean;
  paused: boolean;
  onHold: boolean;
  liveStreams: number;
}

export interface PauseResult {
  callSid: string;
  paused: boolean;
  /** per live stream: the call-time instant (ms) the pause or resume took effect */
  streams: { streamSid: string; atMs: number }[];
}

export class UnknownCallError extends Error {
  override name = 'UnknownCallError';
}

export class PauseDisabledError extends Error {
  override name = 'PauseDisabledError';
}

export class CallControl {
  /** one sidecar rewrite at a time per recording (read-modify-write must not lose an update) */
  private readonly sidecarWrites = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: CallControlDeps) {}

  private get recorder(): Recorder {
    return this.deps.recorder();
  }

  /** The settings that govern a call: its stream's account, else the account of its CTI events. */
  settingsForCall(callSid: string): SourceSettings {
    const live = this.recorder.streamsOfCall(callSid)[0];
    const account = live?.id.accountSid ?? this.deps.states.get(callSid)?.accountSid ?? '';
    return this.deps.settingsFor(account);
  }

  view(s: CallState): CallView {
    return {
      callSid: s.callSid, ctiSessionId: s.ctiSessionId, employeeId: s.employeeId, kept: s.kept,
      discard: s.discard && !s.kept, paused: s.paused, onHold: s.holdSince !== null,
      liveStreams: this.recorder.streamsOfCall(s.callSid).length,
    };
  }

  /**
   * Apply a validated CTI event. Every check happens before the first change (the caller
   * validated shapes; `at` is parsed here), so a bad event changes nothing.
   */
  async applyEvent(ev: CtiEvent): Promise<CallView> {
    const at = ev.at === undefined ? this.deps.wallNow().getTime() : Date.parse(ev.at);
    if (!Number.isFinite(at)) throw new RangeError(`at ${JSON.stringify(ev.at)} is not an ISO 8601 date-time`);

    const s = this.deps.states.getOrCreate(ev.callSid);
    this.deps.states.touch(s);
    if (ev.accountSid !== undefined) s.accountSid = ev.accountSid;
    const before = `${s.ctiSessionId}\u0000${s.employeeId}`;
    if (ev.ctiSessionId !== undefined) s.ctiSessionId = ev.ctiSessionId;
    if (ev.employeeId !== undefined) s.employeeId = ev.employeeId;
    const attributionChanged = before !== `${s.ctiSessionId}\u0000${s.employeeId}`;

    switch (ev.type) {
      case 'connected':
        s.kept = true;
        s.discard = false;
        break;
      case 'not_responding':
        if (!s.kept) s.discard = true;
        break;
      case 'hold':
        if (s.holdSince === null) {
          s.holdSince = at;
          s.holdAlarmed = false;
        }
        break;
      case 'unhold':
      case 'ended':
        this.endHold(s, at);
        break;
      default:
        break; // ringing, consult, conference, transfer, wrapup, agent_available: attribution only
    }

    for (const session of this.recorder.streamsOfCall(ev.callSid)) this.attribute(session, s);
    if (s.discard && !s.kept) await this.deletePublished(ev.callSid, 'not_responding');
    else if (attributionChanged) await this.reattributePublished(s);
    return this.view(s);
  }

  /** A hold ends (unhold, or the call ended on hold): alarm when it ran too long. */
  private endHold(s: CallState, at: number): void {
    if (s.holdSince === null) return;
    this.checkHold(s, at);
    s.holdSince = null;
    s.holdAlarmed = false;
  }

  /** Raise long_hold once per hold when it has lasted longer than LONG_HOLD_DURATION_MIN. */
  checkHold(s: CallState, now: number): void {
    if (s.holdSince === null || s.holdAlarmed) return;
    const limitMin = this.settingsForCall(s.callSid).longHoldDurationMin;
    const heldMs = now - s.holdSince;
    if (heldMs <= limitMin * 60_000) return;
    s.holdAlarmed = true;
    this.deps.alarms.raise('long_hold', {
      message: `call ${s.callSid} has been on hold for ${Math.round(heldMs / 60_000)} min (LONG_HOLD_DURATION_MIN ${limitMin})`,
      callSid: s.callSid,
      details: { holdSince: new Date(s.holdSince).toISOString(), heldMs, limitMin, ctiSessionId: s.ctiSessionId },
    });
  }

  /** Stream start: take what CTI events already said about the call. */
  onStart(session: StreamSession): void {
    const s = this.deps.states.get(session.id.callSid);
    if (s) this.attribute(session, s);
  }

  isPaused(callSid: string): boolean {
    return this.deps.states.get(callSid)?.paused ?? false;
  }

  private attribute(session: StreamSession, s: CallState): void {
    if (s.ctiSessionId !== null) session.attribution.ctiSessionId = s.ctiSessionId;
    if (s.employeeId !== null) session.attribution.employeeId = s.employeeId;
  }

  pause(callSid: string): PauseResult {
    return this.setPaused(callSid, true);
  }

  resume(callSid: string): PauseResult {
    return this.setPaused(callSid, false);
  }

  private setPaused(callSid: string, paused: boolean): PauseResult {
    const live = this.recorder.streamsOfCall(callSid);
    if (live.length === 0 && this.deps.states.get(callSid) === undefined) {
      throw new UnknownCallError(`call ${callSid} is not known on this node: no live stream and no CTI event for it`);
    }
    if (!this.settingsForCall(callSid).enablePauseResume) {
      throw new PauseDisabledError(`pause/resume is disabled for the data source of call ${callSid}; set TWILIO_ENABLE_PAUSE_RESUME=true to allow it`);
    }
    const s = this.deps.states.getOrCreate(callSid);
    this.deps.states.touch(s);
    s.paused = paused;
    const streams = live.map((session) => {
      const atMs = paused ? session.pause() : session.resume();
      this.recorder.streamChanged(session); // cluster mode: GET /v1/calls shows `paused` everywhere
      return { streamSid: session.id.streamSid, atMs };
    });
    return { callSid, paused, streams };
  }

  /**
   * A stream's segments were published: keep (index + `finished`) or delete by rule
   * (`deleted`). `all` is every segment of the stream: the minimum length is the stream's.
   */
  async onRecording(sidecar: RecordingSidecar, all: readonly RecordingSidecar[]): Promise<void> {
    try {
      const s = this.deps.states.get(sidecar.callSid);
      const minMs = this.deps.settingsFor(sidecar.accountSid).minSessionLengthS * 1000;
      const streamMs = Math.max(...all.map((r) => r.offsetMs + r.durationMs));
      let reason: DeleteReason | null = null;
      if (s !== undefined && s.discard && !s.kept) reason = 'not_responding';
      else if (minMs > 0 && streamMs < minMs) reason = 'min_session_length';
      if (reason !== null) {
        await this.deleteFiles(sidecar);
        await this.announce('deleted', { ...sidecar, deleteReason: reason });
        return;
      }
      this.deps.index.add(sidecar, sidecarPathOf(this.deps.recordingsDir, sidecar));
      this.deps.onIndexed?.(sidecar);
      await this.announce(sidecar.writeError === undefined ? 'finished' : 'failed', { ...sidecar });
    } catch (err) {
      this.deps.onError(`handling recording ${sidecar.recordingId}`, err as Error);
    }
  }

  /** A segment that could not be published at all: announce it as failed. */
  async onSegmentError(recordingId: string, err: Error, id: StreamIdentity): Promise<void> {
    await this.announce('failed', {
      recordingId, accountSid: id.accountSid, callSid: id.callSid, streamSid: id.streamSid, error: err.message,
    });
  }

  private async announce(event: RecordingEvent, body: Record<string, unknown>): Promise<void> {
    if (!this.deps.announce) return;
    try {
      await this.deps.announce(event, body);
    } catch (err) {
      this.deps.onError(`queueing the ${event} webhook of ${String(body.recordingId)}`, err as Error);
    }
  }

  private async deleteFiles(sidecar: RecordingSidecar): Promise<void> {
    const sidecarPath = sidecarPathOf(this.deps.recordingsDir, sidecar);
    const gone = (e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; };
    // the sidecar first: a crash in between leaves an orphan WAV, never a sidecar without audio
    await unlink(sidecarPath).catch(gone);
    await unlink(path.join(path.dirname(sidecarPath), sidecar.audioFile)).catch(gone);
    // its compressed copy (made, or being made: the archiver removes a late one itself)
    for (const f of ARCHIVE_FORMATS) await unlink(path.join(path.dirname(sidecarPath), archiveFileName(sidecar.recordingId, f))).catch(gone);
  }

  /** Every published recording of the call: files, sidecars and index entries. */
  private async deletePublished(callSid: string, reason: DeleteReason): Promise<void> {
    const { items } = this.deps.index.query({ callSid, limit: 100_000 });
    for (const sidecar of items) {
      this.deps.index.remove(sidecar.recordingId);
      this.deps.onRemoved?.(sidecar.recordingId);
      await this.deleteFiles(sidecar);
      await this.announce('deleted', { ...sidecar, deleteReason: reason });
    }
  }

  /** CTI events after the stream ended: the published sidecars take the new attribution. */
  private async reattributePublished(s: CallState): Promise<void> {
    const { items } = this.deps.index.query({ callSid: s.callSid, limit: 100_000 });
    for (const { recordingId } of items) {
      await this.rewriteSidecar(recordingId, (old) => {
        const updated: RecordingSidecar = {
          ...old,
          ctiSessionId: s.ctiSessionId ?? old.ctiSessionId,
          employeeId: s.employeeId ?? old.employeeId,
        };
        return updated.ctiSessionId === old.ctiSessionId && updated.employeeId === old.employeeId ? null : updated;
      });
    }
  }

  /**
   * The one path that rewrites a published sidecar (attribution, archive): `change` gets the
   * current sidecar and returns the new one (null: no change). One writer per recording at a
   * time. Returns the sidecar as written, or null when the recording is not (or no longer)
   * indexed — a recording deleted meanwhile is never brought back.
   */
  rewriteSidecar(recordingId: string, change: (cur: RecordingSidecar) => RecordingSidecar | null): Promise<RecordingSidecar | null> {
    const run = async (): Promise<RecordingSidecar | null> => {
      const cur = this.deps.index.get(recordingId);
      if (!cur) return null;
      const updated = change(cur.sidecar);
      if (updated === null) return cur.sidecar;
      const file = sidecarPathOf(this.deps.recordingsDir, updated);
      await writeFileAtomic(file, JSON.stringify(updated, null, 2) + '\n');
      if (!this.deps.index.get(recordingId)) {
        // deleted while the file was written: its deletion may have run before our rename
        await unlink(file).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; });
        return null;
      }
      this.deps.index.add(updated, file);
      this.deps.onIndexed?.(updated);
      return updated;
    };
    const prev = this.sidecarWrites.get(recordingId) ?? Promise.resolve();
    const result = prev.then(run, run);
    const tail = result.catch(() => undefined);
    this.sidecarWrites.set(recordingId, tail);
    void tail.then(() => { if (this.sidecarWrites.get(recordingId) === tail) this.sidecarWrites.delete(recordingId); });
    return result;
  }
}
