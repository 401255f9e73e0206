// The recording policy of a contact center, per call: CTI events (attribution, keep/delete,
// holds), pause/resume, and the rules that decide whether a published recording is kept
// (not_responding, MIN_SESSION_LENGTH_S). What then happens to the recording (indexed or
// deleted, audited, announced to the webhook outbox) is recording-outcomes.ts.
// Contract section 5. HTTP lives at the edge (the API routes); this module is plain method calls.
import type { SourceSettings } from './source-settings.js';
import type { Alarms } from './alarms.js';
import type { CallState, CallStates, CtiEvent } from './call-states.js';
import type { Recorder } from './recorder.js';
import type { RecordingSidecar } from './sidecar.js';
import type { StreamSession } from './stream-session.js';
import type { KeptMarks } from './kept-marks.js';
import { clipId, eventTime } from './ingest-limits.js';
import { RecordingOutcomes, type DeleteReason, type RecordingOutcomesDeps } from './recording-outcomes.js';

export interface CallControlDeps extends Omit<RecordingOutcomesDeps, 'scopeOf'> {
  recorder: () => Recorder;
  states: CallStates;
  alarms: Alarms;
  /** durable `connected` marks */
  kept: KeptMarks;
  settingsFor: (accountSid: string) => SourceSettings;
  /**
   * Whether calls are keyed by account: true when data sources are configured. The embedded
   * default (no source) has no tenants: every call is in the one scope ''.
   */
  scoped: boolean;
  wallNow: () => Date;
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

/** Events applied together (CallControl.newBatch): the calls whose attribution they changed. */
export interface CtiBatch {
  readonly changed: Set<CallState>;
}

export class UnknownCallError extends Error {
  override name = 'UnknownCallError';
}

export class PauseDisabledError extends Error {
  override name = 'PauseDisabledError';
}

export class CallControl {
  /** what happens to a published recording once the policy decided (keep, delete, rewrite, webhooks) */
  readonly outcomes: RecordingOutcomes;

  constructor(private readonly deps: CallControlDeps) {
    this.outcomes = new RecordingOutcomes({ ...deps, scopeOf: (accountSid) => this.scopeOf(accountSid) });
  }

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
    return this.view(await this.apply(ev, actor, null));
  }

  /**
   * A batch of events in order (the Kinesis reader: one per GetRecords): each is applied as by
   * applyEvent, except that the published recordings of the calls whose attribution changed are
   * re-attributed once, by finishBatch, with one catalog query for all of them (not one per
   * event). Their sidecars and catalog rows then carry each call's attribution after the batch,
   * the same end state as one applyEvent after another. Deletions (not_responding) are not
   * deferred. Call finishBatch before the batch counts as applied (checkpointed).
   */
  newBatch(): CtiBatch {
    return { changed: new Set() };
  }

  async applyInBatch(ev: CtiEvent, actor: string, batch: CtiBatch): Promise<void> {
    await this.apply(ev, actor, batch);
  }

  async finishBatch(batch: CtiBatch): Promise<void> {
    // a call marked for deletion meanwhile had its recordings deleted: nothing to re-attribute
    const states = [...batch.changed].filter((s) => !(s.discard && !s.kept));
    batch.changed.clear();
    await this.outcomes.reattributePublishedOf(states);
  }

  private async apply(ev: CtiEvent, actor: string, batch: CtiBatch | null): Promise<CallState> {
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
    else if (attributionChanged) {
      if (batch !== null) batch.changed.add(s);
      else await this.outcomes.reattributePublished(s);
    }
    return s;
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
  pause(scope: string, callSid: string, knownElsewhere = false): Promise<PauseResult> {
    return this.setPaused(scope, callSid, true, knownElsewhere);
  }

  resume(scope: string, callSid: string, knownElsewhere = false): Promise<PauseResult> {
    return this.setPaused(scope, callSid, false, knownElsewhere);
  }

  /** Pause enabled for this call's data source? */
  pauseEnabled(scope: string, callSid: string): boolean {
    return this.settingsForCall(scope, callSid).enablePauseResume;
  }

  private async setPaused(scope: string, callSid: string, paused: boolean, knownElsewhere: boolean): Promise<PauseResult> {
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
    // The pause or resume took effect above (frames are dropped or kept from `atMs` on); what
    // the answer declares is made durable before it is sent (each stream's pause record), so
    // that a crash right after the 200 still recovers these intervals. A failed write raises an
    // alarm (StreamSession's onPauseRecordError) but the answer stays 200: the pause holds.
    await Promise.all(live.map((session) => session.persistPauses()));
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
      void session.persistPauses(); // nothing answers here; a failure is reported by the session
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
        await this.outcomes.deleteUnlisted(sidecar, reason === 'not_responding' ? 'event' : 'rule', reason,
          reason === 'not_responding' && s !== undefined ? this.discardActor.get(s) ?? 'internal' : 'rule');
        return;
      }
      await this.outcomes.keep(sidecar, s);
    } catch (err) {
      // rethrown: the segment's marks stay in .inprogress and the next start redoes its outcome
      this.deps.onError(`handling recording ${sidecar.recordingId}`, err as Error);
      throw err;
    }
  }

  /** Who sent the `not_responding` that marked a call for deletion (for the audit line). */
  private readonly discardActor = new WeakMap<CallState, string>();

  /** Every published recording of the call: files, sidecars and index entries. */
  private async deletePublished(s: CallState, reason: DeleteReason): Promise<void> {
    for (const sidecar of await this.outcomes.publishedOf(s.accountSid, s.callSid)) {
      // checked per recording: its account's durable `connected` mark keeps it
      if (await this.isKept(s, s.callSid, sidecar.accountSid)) continue;
      await this.outcomes.deleteListed(sidecar, reason, this.discardActor.get(s) ?? 'internal');
    }
  }

  /**
   * Must a rotated segment's outcome wait for the stream's end? Only when the minimum length
   * could still delete it: the stream so far is shorter than MIN_SESSION_LENGTH_S.
   */
  outcomeWaitsForEnd(sidecar: RecordingSidecar): boolean {
    const minMs = this.deps.settingsFor(sidecar.accountSid).minSessionLengthS * 1000;
    return minMs > 0 && sidecar.offsetMs + sidecar.durationMs < minMs;
  }
}
