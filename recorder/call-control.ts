// The recording policy of a contact center, per call: CTI events (attribution, keep/delete,
// holds), pause/resume, and what happens to each recording when it is published (kept and
// indexed, or deleted by a rule) — each outcome announced once to the webhook outbox.
// Contract section 5. HTTP lives at the edge (the API routes); this module is plain method calls.
import { readFile, unlink } from 'node:fs/promises';
import type { SourceSettings } from './source-settings.js';
import type { Alarms } from './alarms.js';
import type { CallState, CallStates, CtiEvent } from './call-states.js';
import type { Recorder } from './recorder.js';
import type { Catalog } from './catalog/catalog.js';
import type { RecordingSidecar } from './sidecar.js';
import type { StreamIdentity, StreamSession } from './stream-session.js';
import { sidecarPathOf } from './storage-layout.js';
import { KeyedLock, writeFileAtomic } from './atomic-file.js';
import type { Deletions } from './deletions.js';
import type { KeptMarks } from './kept-marks.js';
import { clipId, eventTime } from './ingest-limits.js';

export type RecordingEvent = 'finished' | 'failed' | 'deleted';
export type DeleteReason = 'not_responding' | 'min_session_length' | 'retention';

/** One deletion, as the audit log line records it (contract section 7). */
export interface AuditEntry {
  recordingId: string;
  accountSid: string;
  callSid: string;
  /** `rule` (min_session_length, retention) or `event` (not_responding) */
  cause: 'rule' | 'event';
  reason: DeleteReason;
  /** who caused it: `rule`, `twilio:<AccountSid>` (signed TaskRouter), `key:<id>`, `loopback`, ... */
  actor: string;
}

export interface CallControlDeps {
  recorder: () => Recorder;
  index: Catalog;
  states: CallStates;
  alarms: Alarms;
  recordingsDir: string;
  /** durable rule deletions (alarm and retry when the disk refuses) */
  deletions: Deletions;
  /** durable `connected` marks */
  kept: KeptMarks;
  settingsFor: (accountSid: string) => SourceSettings;
  /**
   * Whether calls are keyed by account: true when data sources are configured. The embedded
   * default (no source) has no tenants: every call is in the one scope ''.
   */
  scoped: boolean;
  wallNow: () => Date;
  /** one structured line per deletion (audit: true) */
  audit?: (entry: AuditEntry) => void;
  /** hand an outcome to the webhook outbox (absent when no webhook is configured) */
  announce?: (event: RecordingEvent, body: Record<string, unknown>) => Promise<void>;
  /** a recording entered the catalog / changed in it / left it: cluster mode tells the other nodes */
  onIndexed?: (sidecar: RecordingSidecar) => void;
  onUpdated?: (sidecar: RecordingSidecar) => void;
  onRemoved?: (recordingId: string) => void;
  onError: (what: string, err: Error) => void;
}

/** The answer of a CTI event or a pause/resume, as the API returns it. */
export interface CallView {
  /** absent in the embedded default (calls are not keyed by account there) */
  accountSid?: string;
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
  accountSid?: string;
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
  /** one sidecar rewrite at a time per recording, so concurrent events never lose fields */
  private readonly sidecarLock = new KeyedLock();

  constructor(private readonly deps: CallControlDeps) {}

  /** wall-clock now (ms): event times are judged against it */
  now(): number {
    return this.deps.wallNow().getTime();
  }

  /** The account a call's state belongs to: the scope its events were keyed by ('' in the embedded default). */
  private accountOf(s: CallState): string | null {
    return s.accountSid;
  }

  /** kept in memory, or durably (a `connected` before a restart or before the state expired) */
  private async isKept(s: CallState | undefined, callSid: string, accountSid: string | null): Promise<boolean> {
    if (s?.kept) return true;
    if (!(await this.deps.kept.isKept(accountSid, callSid))) return false;
    if (s) {
      s.kept = true;
      s.discard = false;
    }
    return true;
  }

  private get recorder(): Recorder {
    return this.deps.recorder();
  }

  /** The key account of a call of `accountSid`: itself, or '' in the embedded default. */
  scopeOf(accountSid: string | undefined | null): string {
    return this.deps.scoped ? accountSid ?? '' : '';
  }

  /** The live streams of a call of this account scope on this node. */
  streamsOf(scope: string, callSid: string): StreamSession[] {
    return this.recorder.streamsOfCall(callSid).filter((s) => this.scopeOf(s.id.accountSid) === scope);
  }

  /** Is a call known on this node (live stream or CTI state)? */
  knows(scope: string, callSid: string): boolean {
    return this.streamsOf(scope, callSid).length > 0 || this.deps.states.get(scope, callSid) !== undefined;
  }

  /** The settings that govern a call: its stream's account, else its scope's. */
  settingsForCall(scope: string, callSid: string): SourceSettings {
    const live = this.streamsOf(scope, callSid)[0];
    return this.deps.settingsFor(live?.id.accountSid ?? scope);
  }

  private isLive = (s: CallState): boolean => this.streamsOf(s.accountSid, s.callSid).length > 0;

  /** The state of a call, created if new (bounded: see CallStates). */
  private stateOf(scope: string, callSid: string): CallState {
    return this.deps.states.getOrCreate(scope, callSid, this.isLive);
  }

  view(s: CallState): CallView {
    return {
      ...(s.accountSid === '' ? {} : { accountSid: s.accountSid }),
      callSid: s.callSid, ctiSessionId: s.ctiSessionId, employeeId: s.employeeId, kept: s.kept,
      discard: s.discard && !s.kept, paused: s.paused, onHold: s.holdSince !== null,
      liveStreams: this.streamsOf(s.accountSid, s.callSid).length,
    };
  }

  /**
   * Apply a validated CTI event. Every check happens before the first change (the caller
   * validated shapes; `at` is parsed here), so a bad event changes nothing.
   */
  async applyEvent(ev: CtiEvent, actor = 'internal'): Promise<CallView> {
    const at = eventTime(ev.at, this.deps.wallNow().getTime());

    const scope = this.scopeOf(ev.accountSid);
    const s = this.stateOf(scope, ev.callSid);
    this.deps.states.touch(s);
    if (ev.type === 'not_responding' && !s.kept && !s.discard) this.discardActor.set(s, actor);
    const before = `${s.ctiSessionId}\u0000${s.employeeId}`;
    if (ev.ctiSessionId !== undefined) s.ctiSessionId = clipId(ev.ctiSessionId);
    if (ev.employeeId !== undefined) s.employeeId = clipId(ev.employeeId);
    const attributionChanged = before !== `${s.ctiSessionId}\u0000${s.employeeId}`;

    switch (ev.type) {
      case 'connected':
        // durable before the answer: a replayed not_responding must find it after a restart
        await this.deps.kept.mark(this.accountOf(s), s.callSid, new Date(at));
        s.kept = true;
        s.discard = false;
        break;
      case 'not_responding':
        if (!(await this.isKept(s, s.callSid, this.accountOf(s)))) s.discard = true;
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
      case 'ringing':
      case 'consult':
      case 'conference':
      case 'transfer':
      case 'wrapup':
      case 'agent_available':
        break; // attribution only
    }

    for (const session of this.streamsOf(scope, ev.callSid)) this.attribute(session, s);
    if (s.discard && !s.kept) await this.deletePublished(s, 'not_responding');
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
    const limitMin = this.settingsForCall(s.accountSid, s.callSid).longHoldDurationMin;
    const heldMs = now - s.holdSince;
    if (heldMs <= limitMin * 60_000) return;
    s.holdAlarmed = true;
    this.deps.alarms.raise('long_hold', {
      message: `call ${s.callSid} has been on hold for ${Math.round(heldMs / 60_000)} min (LONG_HOLD_DURATION_MIN ${limitMin})`,
      callSid: s.callSid,
      ...(s.accountSid === '' ? {} : { accountSid: s.accountSid }),
      details: { holdSince: new Date(s.holdSince).toISOString(), heldMs, limitMin, ctiSessionId: s.ctiSessionId },
    });
  }

  /** Stream start: take what CTI events already said about the call. */
  onStart(session: StreamSession): void {
    const s = this.deps.states.get(this.scopeOf(session.id.accountSid), session.id.callSid);
    if (s) this.attribute(session, s);
  }

  isPaused(accountSid: string, callSid: string): boolean {
    return this.deps.states.get(this.scopeOf(accountSid), callSid)?.paused ?? false;
  }

  private attribute(session: StreamSession, s: CallState): void {
    if (s.ctiSessionId !== null) session.attribution.ctiSessionId = s.ctiSessionId;
    if (s.employeeId !== null) session.attribution.employeeId = s.employeeId;
  }

  /**
   * `knownElsewhere`: cluster mode found the call in Redis (a stream, queued CTI events or a
   * stored pause) though this node has nothing of it: the pause is remembered here too.
   */
  pause(scope: string, callSid: string, knownElsewhere = false): PauseResult {
    return this.setPaused(scope, callSid, true, knownElsewhere);
  }

  resume(scope: string, callSid: string, knownElsewhere = false): PauseResult {
    return this.setPaused(scope, callSid, false, knownElsewhere);
  }

  /** Pause enabled for this call's data source? */
  pauseEnabled(scope: string, callSid: string): boolean {
    return this.settingsForCall(scope, callSid).enablePauseResume;
  }

  private setPaused(scope: string, callSid: string, paused: boolean, knownElsewhere: boolean): PauseResult {
    const live = this.streamsOf(scope, callSid);
    if (live.length === 0 && this.deps.states.get(scope, callSid) === undefined && !knownElsewhere) {
      throw new UnknownCallError(`call ${callSid} is not known: no live stream and no CTI event for it`);
    }
    if (!this.pauseEnabled(scope, callSid)) {
      throw new PauseDisabledError(`pause/resume is disabled for the data source of call ${callSid}; set TWILIO_ENABLE_PAUSE_RESUME=true to allow it`);
    }
    const s = this.stateOf(scope, callSid);
    this.deps.states.touch(s);
    s.paused = paused;
    const streams = live.map((session) => {
      const atMs = paused ? session.pause() : session.resume();
      this.recorder.streamChanged(session); // cluster mode: GET /v1/calls shows `paused` everywhere
      return { streamSid: session.id.streamSid, atMs };
    });
    return { ...(scope === '' ? {} : { accountSid: scope }), callSid, paused, streams };
  }

  /**
   * Cluster mode: Redis holds a pause (or a resume) of this call that another node stored, or
   * that a stream registering here found. Applied to the state (a stream starting later starts
   * paused) and to the call's live streams on this node.
   */
  applyStoredPause(scope: string, callSid: string, paused: boolean): void {
    let s = this.deps.states.get(scope, callSid);
    if (s === undefined) {
      if (!paused) return;
      try {
        s = this.stateOf(scope, callSid);
      } catch (err) {
        this.deps.onError(`remembering the pause of call ${callSid}`, err as Error);
        return;
      }
    }
    this.deps.states.touch(s);
    s.paused = paused;
    for (const session of this.streamsOf(scope, callSid)) {
      if (session.paused === paused) continue;
      if (paused) session.pause();
      else session.resume();
      this.recorder.streamChanged(session);
    }
  }

  /**
   * A stream's segments were published: keep (index + `finished`) or delete by rule
   * (`deleted`). `all` is every segment of the stream: the minimum length is the stream's.
   */
  async onRecording(sidecar: RecordingSidecar, all: readonly RecordingSidecar[]): Promise<void> {
    try {
      const s = this.deps.states.get(this.scopeOf(sidecar.accountSid), sidecar.callSid);
      const minMs = this.deps.settingsFor(sidecar.accountSid).minSessionLengthS * 1000;
      const streamMs = Math.max(...all.map((r) => r.offsetMs + r.durationMs));
      let reason: DeleteReason | null = null;
      if (s !== undefined && s.discard && !(await this.isKept(s, sidecar.callSid, sidecar.accountSid))) reason = 'not_responding';
      else if (minMs > 0 && streamMs < minMs) reason = 'min_session_length';
      if (reason !== null) {
        this.audit(sidecar, reason === 'not_responding' ? 'event' : 'rule', reason,
          reason === 'not_responding' && s !== undefined ? this.discardActor.get(s) ?? 'internal' : 'rule');
        await this.deleteFiles(sidecar, reason);
        return;
      }
      // events since the segment's sidecar was written (a rotated segment that waited) apply too
      if (s !== undefined) sidecar = await this.rewriteAttribution(sidecar, s) ?? sidecar;
      await this.deps.index.put(sidecar, sidecarPathOf(this.deps.recordingsDir, sidecar));
      this.deps.onIndexed?.(sidecar);
      // not this.announce: a webhook that could not be queued must leave the outcome undone
      await this.deps.announce?.(sidecar.writeError === undefined ? 'finished' : 'failed', { ...sidecar });
    } catch (err) {
      // rethrown: the segment's marks stay in .inprogress and the next start redoes its outcome
      this.deps.onError(`handling recording ${sidecar.recordingId}`, err as Error);
      throw err;
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

  /** Who sent the `not_responding` that marked a call for deletion (for the audit line). */
  private readonly discardActor = new WeakMap<CallState, string>();

  private audit(sidecar: RecordingSidecar, cause: AuditEntry['cause'], reason: DeleteReason, actor: string): void {
    this.deps.audit?.({
      recordingId: sidecar.recordingId, accountSid: sidecar.accountSid, callSid: sidecar.callSid, cause, reason, actor,
    });
  }

  /** The published recordings of a call of this scope (another account's are never touched). */
  private async publishedOf(scope: string, callSid: string): Promise<RecordingSidecar[]> {
    const { items } = await this.deps.index.query({ callSid, limit: 100_000 });
    return items.filter((r) => this.scopeOf(r.accountSid) === scope);
  }

  /** Announced as `deleted` once the files are gone (now, or by a later retry: deletions.ts). */
  private async deleteFiles(sidecar: RecordingSidecar, reason: DeleteReason): Promise<void> {
    await this.deps.deletions.delete(sidecar, reason);
  }

  /** The `deleted` webhook of a deletion whose files are gone (deletions.ts calls this). */
  async onDeleted(sidecar: RecordingSidecar, reason: string): Promise<void> {
    await this.announce('deleted', { ...sidecar, deleteReason: reason });
  }

  /** Every published recording of the call: files, sidecars and index entries. */
  private async deletePublished(s: CallState, reason: DeleteReason): Promise<void> {
    for (const sidecar of await this.publishedOf(s.accountSid, s.callSid)) {
      // checked per recording: its account's durable `connected` mark keeps it
      if (await this.isKept(s, s.callSid, sidecar.accountSid)) continue;
      this.audit(sidecar, 'event', reason, this.discardActor.get(s) ?? 'internal');
      await this.deps.index.remove(sidecar.recordingId);
      this.deps.onRemoved?.(sidecar.recordingId);
      await this.deleteFiles(sidecar, reason);
    }
  }

  /**
   * RETENTION_DAYS (maintenance sweep): a published recording that is too old is unlisted, audited
   * and handed to the durable deletion path like any rule deletion (`deleted`, reason retention).
   */
  async deleteForRetention(sidecar: RecordingSidecar): Promise<void> {
    await this.deps.index.remove(sidecar.recordingId);
    this.deps.onRemoved?.(sidecar.recordingId);
    this.audit(sidecar, 'rule', 'retention', 'rule');
    await this.deleteFiles(sidecar, 'retention');
  }

  /** CTI events after the stream ended: the published sidecars take the new attribution. */
  private async reattributePublished(s: CallState): Promise<void> {
    for (const listed of await this.publishedOf(s.accountSid, s.callSid)) {
      // unchanged or deleted meanwhile: rewriteSidecar leaves it alone
      await this.rewriteSidecar(listed.recordingId, (old) => attributed(old, s));
    }
  }

  /**
   * A segment not indexed yet (its outcome is being decided): the sidecar takes the events since
   * it was written. Same lock as rewriteSidecar. null: nothing to change, or deleted meanwhile.
   */
  private rewriteAttribution(listed: RecordingSidecar, s: CallState): Promise<RecordingSidecar | null> {
    return this.sidecarLock.run(listed.recordingId, async () => {
      const file = sidecarPathOf(this.deps.recordingsDir, listed);
      const old = await readSidecar(file);
      const updated = old && attributed(old, s);
      if (!updated) return null;
      await writeFileAtomic(file, JSON.stringify(updated, null, 2) + '\n');
      return updated;
    });
  }

  /**
   * Must a rotated segment's outcome wait for the stream's end? Only when the minimum length
   * could still delete it: the stream so far is shorter than MIN_SESSION_LENGTH_S.
   */
  outcomeWaitsForEnd(sidecar: RecordingSidecar): boolean {
    const minMs = this.deps.settingsFor(sidecar.accountSid).minSessionLengthS * 1000;
    return minMs > 0 && sidecar.offsetMs + sidecar.durationMs < minMs;
  }

  /**
   * The one path that rewrites an indexed sidecar (attribution, archive): one writer per
   * recording at a time (sidecarLock), reading the sidecar as it is on disk now, so a concurrent
   * rewrite never loses the other's fields. `change` returns the new sidecar (null: no change).
   * Returns the sidecar as it now stands, or null when the recording is not (or no longer)
   * indexed: a recording deleted meanwhile is never brought back.
   */
  rewriteSidecar(recordingId: string, change: (cur: RecordingSidecar) => RecordingSidecar | null): Promise<RecordingSidecar | null> {
    return this.sidecarLock.run(recordingId, async () => {
      const listed = await this.deps.index.get(recordingId);
      if (!listed) return null;
      const file = sidecarPathOf(this.deps.recordingsDir, listed.sidecar);
      const cur = await readSidecar(file);
      if (cur === null) return null; // its deletion removed the file
      const updated = change(cur);
      if (updated === null) return cur;
      await writeFileAtomic(file, JSON.stringify(updated, null, 2) + '\n');
      // UPDATE only: a recording deleted while the file was written is not listed again
      if (!(await this.deps.index.update(updated))) {
        // its deletion may have unlinked before our rename
        await unlink(file).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; });
        return null;
      }
      this.deps.onUpdated?.(updated);
      return updated;
    });
  }
}

/** The sidecar with a call's attribution applied; null when it changes nothing. */
function attributed(old: RecordingSidecar, s: CallState): RecordingSidecar | null {
  const updated: RecordingSidecar = {
    ...old,
    ctiSessionId: s.ctiSessionId ?? old.ctiSessionId,
    employeeId: s.employeeId ?? old.employeeId,
  };
  return updated.ctiSessionId === old.ctiSessionId && updated.employeeId === old.employeeId ? null : updated;
}

/** A sidecar as it is on disk now; null when it is gone (deleted meanwhile) or unreadable. */
async function readSidecar(file: string): Promise<RecordingSidecar | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as RecordingSidecar;
  } catch {
    return null;
  }
}
