// One Twilio Media Stream connection: the protocol state machine between the socket and the
// recorder. States: awaiting_start -> recording -> ended. Every message is validated; a bad one
// is counted, logged once per kind per stream, and dropped without touching what was recorded.
// The handler never imports `ws`: the route pushes messages in (onMessage, onClose) and the
// handler only ever calls the socket's close, so tests drive it with a stand-in socket.
import type { Logger } from 'pino';
import { parseTwilioMessage, decodeBase64Into, ParseFailure, type ProtocolErrorKind } from './twilio-protocol.js';
import { MAX_PAYLOAD_BYTES, type MediaMessage, type StartMessage } from './twilio-messages.js';
import type { Recorder, StreamOwner } from '../../recorder/recorder.js';
import type { StreamSession } from '../../recorder/stream-session.js';
import type { CloseReason } from '../../recorder/sidecar.js';
import { ErrorBudget } from './error-budget.js';
import { cleanCustomParameters } from './custom-parameters.js';
import { newMediaScan, scanMedia } from './media-scan.js';

export interface StreamSocket {
  close(code: number, reason: string): void;
}

/** Why audio that reached us was not kept (each raises one alarm per stream). */
export type DropReason =
  | 'too_late' | 'timestamp_lead'
  // media messages refused by the protocol: their audio is not kept either
  | 'media_before_start' | 'wrong_stream_sid' | 'unexpected_track' | 'bad_base64';

export interface StreamHandlerDeps {
  recorder: Recorder;
  /** may this connection record `accountSid`? (configured source, and its signature matched) */
  acceptAccount: (accountSid: string) => boolean;
  log: Logger;
  onProtocolError: (kind: ProtocolErrorKind | 'unknown_event') => void;
  /** close a stream that sends more than `limit` bad messages within `windowMs` */
  errorBudget: { limit: number; windowMs: number };
  /** a frame stamped further ahead than the stream's age plus this is refused (a corrupt
   * timestamp would otherwise make us write hours of silence) */
  maxLeadMs: number;
  /** a socket that has sent no start by then is closed (1008); 0 = never */
  startTimeoutMs: number;
  /** monotonic ms (stream age for the timestamp bound, error budget window) */
  now: () => number;
  /** audio was dropped: called once per stream and reason (the caller raises the alarm) */
  onAudioDropped: (reason: DropReason, ids: { callSid: string; streamSid: string }, detail: string) => void;
  /** frames refused for running ahead of the stream's age (dropped-frames metric) */
  onLeadRefused: () => void;
}

type State = 'awaiting_start' | 'recording' | 'ended';

// Frames are decoded here and copied into the session's ring before the next message is
// handled, so one scratch buffer serves every stream on the node (the event loop is single-threaded).
const scratch = Buffer.allocUnsafe(MAX_PAYLOAD_BYTES);
/** fields of the media message being handled (one for the node, like the scratch buffer) */
const scan = newMediaScan();

/** ws close codes (RFC 6455 §7.4.1) */
export const CLOSE_NORMAL = 1000;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_INVALID_DATA = 1007;
export const CLOSE_POLICY = 1008;

export class TwilioStreamHandler implements StreamOwner {
  private readonly socket: StreamSocket;
  private readonly deps: StreamHandlerDeps;
  private state: State = 'awaiting_start';
  private session: StreamSession | null = null;
  private streamSid = '';
  /** the streamSid's bytes, compared in place by the media fast path */
  private sidBytes: Buffer = Buffer.alloc(0);
  private log: Logger;
  private readonly budget: ErrorBudget;
  private readonly errorCounts = new Map<string, number>();
  /** monotonic ms of the start message: the stream's age is measured from it */
  private startedAt = 0;
  /** a frame starting at or beyond this sample is ahead of the stream's age: re-check with the clock */
  private leadLimit = 0;
  private readonly maxLeadSamples: number;
  private startTimer: NodeJS.Timeout | null = null;
  /** drop reasons already alarmed for this stream */
  private readonly alarmed = new Set<DropReason>();
  /** resolves when the recording (if any) is published */
  finished: Promise<unknown> = Promise.resolve();

  constructor(socket: StreamSocket, deps: StreamHandlerDeps) {
    this.socket = socket;
    this.deps = deps;
    this.log = deps.log;
    this.maxLeadSamples = deps.maxLeadMs * 8;
    this.budget = new ErrorBudget(deps.errorBudget.limit, deps.errorBudget.windowMs);
    if (deps.startTimeoutMs > 0) {
      this.startTimer = setTimeout(() => this.onStartTimeout(), deps.startTimeoutMs);
      this.startTimer.unref();
    }
  }

  private clearStartTimer(): void {
    if (this.startTimer !== null) clearTimeout(this.startTimer);
    this.startTimer = null;
  }

  /** A socket that never says which stream it is holds a descriptor for nothing: close it. */
  private onStartTimeout(): void {
    this.startTimer = null;
    if (this.state !== 'awaiting_start') return;
    this.deps.onProtocolError('start_timeout');
    this.noteOnce('start_timeout', `no start within ${this.deps.startTimeoutMs / 1000} s: closing (1008)`, 'info');
    this.end(CLOSE_POLICY, 'no start message in time');
  }

  get currentState(): State {
    return this.state;
  }

  onMessage(data: Buffer | string, isBinary: boolean): void {
    if (this.state === 'ended') return;
    if (isBinary) {
      this.error('binary_frame', 'binary frames are not part of the protocol');
      return;
    }
    // A well-formed media message of this stream: no JSON.parse, no strings. The payload is
    // decoded by the scan straight into the journal's buffer when there is one (else the scratch):
    // the accepted frame is journaled without a copy.
    if (this.session !== null && typeof data !== 'string') {
      const j = this.deps.recorder.journal;
      const buf = j === null ? scratch : j.buf;
      const at = j === null ? 0 : j.at;
      if (scanMedia(data, scan, buf, at) && this.onMediaFast(data, buf, at)) return;
    }
    const msg = parseTwilioMessage(typeof data === 'string' ? data : data.toString('utf8'));
    if (msg instanceof ParseFailure) {
      if (msg.kind === 'unknown_event') {
        // Twilio adds events over time: ignore, but let operators see them.
        this.deps.onProtocolError('unknown_event');
        this.noteOnce('unknown_event', `ignoring unknown event "${msg.detail}"`, 'info');
        return;
      }
      this.error(msg.kind, msg.detail);
      return;
    }
    switch (msg.event) {
      case 'media': this.onMedia(msg); return;
      case 'start': this.onStart(msg); return;
      case 'stop': this.onStop(msg.streamSid); return;
      case 'connected': return;
      case 'dtmf':
      case 'mark':
        if (this.checkSid(msg.streamSid)) this.touch();
        return;
    }
  }

  /**
   * The media fast path: true when the frame was handled exactly as onMedia would; false when
   * anything needs onMedia's answer (another streamSid, a track the stream lacks, a payload that
   * did not fit, a timestamp beyond the lead): nothing was changed then, and the full path runs.
   * The scan decoded the payload into `buf` at `at`.
   */
  private onMediaFast(data: Buffer, buf: Buffer, at: number): boolean {
    const session = this.session as StreamSession;
    const sid = this.sidBytes;
    const s0 = scan.sidStart;
    if (scan.sidEnd - s0 !== sid.length) return false;
    for (let i = 0; i < sid.length; i++) if (data[s0 + i] !== sid[i]) return false;
    const channel = session.channelOf(scan.track === 0 ? 'inbound' : 'outbound');
    if (channel < 0) return false;
    const n = scan.payloadBytes;
    if (n < 0) return false;
    const start = scan.timestamp * 8;
    if (start >= this.leadLimit && !this.withinLead(start)) return false;
    if (session.media(channel, start, buf, n, at) === 'too_late' && !this.alarmed.has('too_late')) {
      this.dropped('too_late', `a frame stamped ${scan.timestamp} ms arrived after its audio was written: dropped`);
    }
    return true;
  }

  private onMedia(msg: MediaMessage): void {
    const session = this.session;
    if (session === null) {
      this.refuseMedia('media_before_start', 'media received before start');
      return;
    }
    if (msg.streamSid !== this.streamSid) {
      this.refuseMedia('wrong_stream_sid', `media for ${msg.streamSid.slice(0, 40)} on stream ${this.streamSid}`);
      return;
    }
    const m = msg.media;
    const channel = session.channelOf(m.track);
    if (channel < 0) {
      this.refuseMedia('unexpected_track', `media on track ${m.track}, stream has ${session.id.tracks.join('+')}`);
      return;
    }
    // decoded straight into the journal's buffer when there is one: the accepted frame is journaled without a copy
    const j = this.deps.recorder.journal;
    const buf = j === null ? scratch : j.buf;
    const at = j === null ? 0 : j.at;
    const n = decodeBase64Into(m.payload, buf, at);
    if (n < 0) {
      this.refuseMedia('bad_base64', 'media.payload is not valid base64');
      return;
    }
    const start = Number(m.timestamp) * 8;
    // Bounded by the stream's age, not by its newest frame: jumps cannot add up. The clock is
    // read only when a frame passes the bound computed at the last reading.
    if (start >= this.leadLimit && !this.withinLead(start)) {
      this.deps.onLeadRefused();
      this.dropped('timestamp_lead', `timestamp ${m.timestamp} ms is more than ${this.deps.maxLeadMs / 1000} s (MAX_TIMESTAMP_LEAD_S) ahead of the stream's age: frame refused`);
      this.error('timestamp_jump', `timestamp ${m.timestamp} is ahead of the stream's age by more than MAX_TIMESTAMP_LEAD_S`);
      return;
    }
    if (session.media(channel, start, buf, n, at) === 'too_late' && !this.alarmed.has('too_late')) {
      this.dropped('too_late', `a frame stamped ${m.timestamp} ms arrived after its audio was written: dropped`);
    }
  }

  /** A media message the protocol refuses: a protocol error, and its audio is dropped. */
  private refuseMedia(kind: ProtocolErrorKind & DropReason, detail: string): void {
    if (!this.alarmed.has(kind)) this.dropped(kind, `${detail}: its audio is dropped`);
    this.error(kind, detail);
  }

  private withinLead(start: number): boolean {
    this.leadLimit = (this.deps.now() - this.startedAt) * 8 + this.maxLeadSamples;
    return start < this.leadLimit;
  }

  /** Audio is being dropped: one alarm per stream and reason (counters count every frame). */
  private dropped(reason: DropReason, detail: string): void {
    if (this.alarmed.has(reason)) return;
    this.alarmed.add(reason);
    const ids = this.session?.id;
    this.deps.onAudioDropped(reason, { callSid: ids?.callSid ?? '', streamSid: this.streamSid }, detail);
  }

  private onStart(msg: StartMessage): void {
    if (this.state !== 'awaiting_start') {
      this.error('duplicate_start', 'a second start on one stream is ignored');
      return;
    }
    const s = msg.start;
    if (s.streamSid !== undefined && s.streamSid !== msg.streamSid) {
      this.error('invalid_message', 'start.streamSid differs from streamSid');
      return;
    }
    this.log = this.deps.log.child({ streamSid: msg.streamSid, callSid: s.callSid, accountSid: s.accountSid });
    if (!this.deps.acceptAccount(s.accountSid)) {
      this.deps.onProtocolError('unknown_account');
      this.log.warn({ kind: 'unknown_account' }, 'refusing stream: accountSid is not a configured data source');
      this.end(CLOSE_POLICY, 'unknown accountSid');
      return;
    }
    const custom = cleanCustomParameters(s.customParameters);
    if (custom.clipped > 0) this.log.info({ clipped: custom.clipped }, 'customParameters clipped (kept with a marker)');
    const session = this.deps.recorder.start({
      accountSid: s.accountSid,
      callSid: s.callSid,
      streamSid: msg.streamSid,
      tracks: s.tracks,
      customParameters: custom.params,
    }, this);
    if (session === null) {
      this.deps.onProtocolError('duplicate_start');
      this.log.warn({ kind: 'duplicate_start' }, 'refusing stream: this streamSid is already being recorded');
      this.end(CLOSE_POLICY, 'streamSid already active');
      return;
    }
    this.session = session;
    this.streamSid = msg.streamSid;
    this.sidBytes = Buffer.from(msg.streamSid, 'utf8');
    this.state = 'recording';
    this.clearStartTimer();
    this.startedAt = this.deps.now();
    this.leadLimit = this.maxLeadSamples;
    this.log.info({ tracks: s.tracks }, 'stream started');
  }

  private onStop(streamSid: string): void {
    if (this.session === null) {
      this.error('media_before_start', 'stop received before start');
      return;
    }
    if (!this.checkSid(streamSid)) return;
    // <Connect><Stream> waits for us to close; <Start><Stream> closes by itself. Either way done.
    this.finish('stop');
    this.end(CLOSE_NORMAL, 'stopped');
  }

  private checkSid(streamSid: string): boolean {
    if (this.session === null) {
      this.error('media_before_start', 'message received before start');
      return false;
    }
    if (streamSid !== this.streamSid) {
      this.error('wrong_stream_sid', `message for ${streamSid.slice(0, 40)} on stream ${this.streamSid}`);
      return false;
    }
    return true;
  }

  private touch(): void {
    this.session?.touch();
  }

  /** The socket refused a message over the size limit; it closes itself (1009) next. */
  onTooLarge(): void {
    this.deps.onProtocolError('message_too_large');
    this.noteOnce('message_too_large', 'a message exceeded the 64 KiB limit: closing the stream (1009)', 'warn');
  }

  /** The socket went away (Twilio closed after stop, or the network dropped). */
  onClose(_code: number): void {
    this.clearStartTimer();
    if (this.state === 'ended') return;
    this.finish('hangup');
    this.state = 'ended';
  }

  /** StreamOwner: the node ends this stream (idle, shutdown, long call). */
  endByServer(reason: CloseReason): void {
    if (this.state === 'ended') return;
    this.finish(reason);
    this.end(reason === 'shutdown' ? CLOSE_GOING_AWAY : CLOSE_NORMAL, reason);
  }

  private finish(reason: CloseReason): void {
    const session = this.session;
    if (session === null || session.closed) return;
    const started = this.state === 'recording';
    this.state = 'ended';
    if (!started) return;
    const errors = this.errorCounts.size > 0 ? Object.fromEntries(this.errorCounts) : undefined;
    this.finished = this.deps.recorder.finish(session, reason).then((sidecars) => {
      this.log.info({ reason, recordings: sidecars.map((s) => s.recordingId), protocolErrors: errors }, 'stream finished');
    });
  }

  private end(code: number, reason: string): void {
    this.clearStartTimer();
    this.state = 'ended';
    this.socket.close(code, reason);
  }

  private error(kind: ProtocolErrorKind, detail: string): void {
    this.deps.onProtocolError(kind);
    this.noteOnce(kind, detail, 'warn');
    if (this.state !== 'ended' && this.budget.spend(this.deps.now())) {
      const { limit, windowMs } = this.deps.errorBudget;
      this.log.warn({ kind, errors: Object.fromEntries(this.errorCounts) }, `closing stream: more than ${limit} bad messages within ${windowMs / 1000} s`);
      const invalidData = kind === 'not_json' || kind === 'invalid_message' || kind === 'bad_base64' || kind === 'binary_frame';
      // The contract's reasons have no "protocol error": to the recording it is a hang-up.
      this.finish('hangup');
      this.end(invalidData ? CLOSE_INVALID_DATA : CLOSE_POLICY, 'too many invalid messages');
    }
  }

  /** Log a kind of problem once per stream (a misbehaving peer must not flood the log). */
  private noteOnce(kind: string, detail: string, level: 'warn' | 'info'): void {
    const n = (this.errorCounts.get(kind) ?? 0) + 1;
    this.errorCounts.set(kind, n);
    if (n === 1) this.log[level]({ kind }, detail);
  }
}
