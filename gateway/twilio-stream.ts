// One Twilio Media Stream connection: the protocol state machine between the socket and the
// recorder. States: awaiting_start -> recording -> ended. Every message is validated; a bad one
// is counted, logged once per kind per stream, and dropped without touching what was recorded.
// The handler never imports `ws`: it talks to a two-method socket, so tests can drive it directly.
import type { Logger } from 'pino';
import { parseTwilioMessage, decodeBase64Into, ParseFailure, type ProtocolErrorKind } from './twilio-protocol.js';
import { MAX_PAYLOAD_BYTES, type MediaMessage, type StartMessage } from './twilio-messages.js';
import type { Recorder, StreamOwner } from '../recorder/recorder.js';
import type { StreamSession } from '../recorder/stream-session.js';
import type { CloseReason } from '../recorder/sidecar.js';

export interface StreamSocket {
  close(code: number, reason: string): void;
}

export interface StreamHandlerDeps {
  recorder: Recorder;
  /** may this connection record `accountSid`? (configured source, and its signature matched) */
  acceptAccount: (accountSid: string) => boolean;
  log: Logger;
  onProtocolError: (kind: ProtocolErrorKind | 'unknown_event') => void;
  /** close a stream after this many bad messages in a row */
  maxConsecutiveErrors: number;
  /** a frame further than this ahead of the newest audio is refused (a corrupt timestamp would
   * otherwise make us write hours of silence) */
  maxJumpMs: number;
}

type State = 'awaiting_start' | 'recording' | 'ended';

// Frames are decoded here and copied into the session's ring before the next message is
// handled, so one scratch buffer serves every stream on the node (the event loop is single-threaded).
const scratch = Buffer.allocUnsafe(MAX_PAYLOAD_BYTES);

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
  private log: Logger;
  private consecutiveErrors = 0;
  private readonly errorCounts = new Map<string, number>();
  private readonly maxJumpSamples: number;
  /** resolves when the recording (if any) is published */
  finished: Promise<unknown> = Promise.resolve();

  constructor(socket: StreamSocket, deps: StreamHandlerDeps) {
    this.socket = socket;
    this.deps = deps;
    this.log = deps.log;
    this.maxJumpSamples = deps.maxJumpMs * 8;
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
      case 'connected': this.consecutiveErrors = 0; return;
      case 'dtmf':
      case 'mark':
        if (this.checkSid(msg.streamSid)) this.touch();
        return;
    }
  }

  private onMedia(msg: MediaMessage): void {
    const session = this.session;
    if (session === null) {
      this.error('media_before_start', 'media received before start');
      return;
    }
    if (msg.streamSid !== this.streamSid) {
      this.error('wrong_stream_sid', `media for ${msg.streamSid.slice(0, 40)} on stream ${this.streamSid}`);
      return;
    }
    const m = msg.media;
    const channel = session.channelOf(m.track);
    if (channel < 0) {
      this.error('unexpected_track', `media on track ${m.track}, stream has ${session.id.tracks.join('+')}`);
      return;
    }
    const n = decodeBase64Into(m.payload, scratch);
    if (n < 0) {
      this.error('bad_base64', 'media.payload is not valid base64');
      return;
    }
    const start = Number(m.timestamp) * 8;
    if (start > session.frontier + this.maxJumpSamples) {
      this.error('timestamp_jump', `timestamp ${m.timestamp} is more than ${this.deps.maxJumpMs} ms ahead of the audio`);
      return;
    }
    this.consecutiveErrors = 0;
    session.media(channel, start, scratch, n);
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
    const session = this.deps.recorder.start({
      accountSid: s.accountSid,
      callSid: s.callSid,
      streamSid: msg.streamSid,
      tracks: s.tracks,
      customParameters: s.customParameters ?? {},
    }, this);
    if (session === null) {
      this.deps.onProtocolError('duplicate_start');
      this.log.warn({ kind: 'duplicate_start' }, 'refusing stream: this streamSid is already being recorded');
      this.end(CLOSE_POLICY, 'streamSid already active');
      return;
    }
    this.session = session;
    this.streamSid = msg.streamSid;
    this.state = 'recording';
    this.consecutiveErrors = 0;
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
    this.consecutiveErrors = 0;
    this.session?.touch();
  }

  /** The socket refused a message over the size limit; it closes itself (1009) next. */
  onTooLarge(): void {
    this.deps.onProtocolError('message_too_large');
    this.noteOnce('message_too_large', 'a message exceeded the 64 KiB limit: closing the stream (1009)', 'warn');
  }

  /** The socket went away (Twilio closed after stop, or the network dropped). */
  onClose(_code: number): void {
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
    this.state = 'ended';
    this.socket.close(code, reason);
  }

  private error(kind: ProtocolErrorKind, detail: string): void {
    this.deps.onProtocolError(kind);
    this.noteOnce(kind, detail, 'warn');
    this.consecutiveErrors++;
    if (this.consecutiveErrors >= this.deps.maxConsecutiveErrors) {
      this.log.warn({ kind, consecutive: this.consecutiveErrors }, 'closing stream: too many bad messages in a row');
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
