// A WebSocket client that speaks the Twilio Media Streams protocol the way Twilio does
// (docs/twilio-media-streams.md): every counter and timestamp a string, `sequenceNumber` counting
// every message after `connected` (`start` = "1"), `chunk` counting per track from "1".
//
// Messages are built with template strings (no JSON.stringify per media frame) so that one core
// can push ~30 000 messages/s.
import { createHmac } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import WebSocket from 'ws';
import { randomSid } from './sids.js';
import type { Track } from './audio-fixtures.js';

export type { Track } from './audio-fixtures.js';

export interface ConnectOptions {
  /** sign the upgrade: `X-Twilio-Signature` = base64 HMAC-SHA1(authToken, signUrl) */
  authToken?: string;
  /** the public URL Twilio would have dialled (what is signed); default: `url` */
  signUrl?: string;
  /** extra upgrade headers (override the defaults, including the signature) */
  headers?: Record<string, string>;
  accountSid?: string;
  callSid?: string;
  streamSid?: string;
  /** upgrade timeout, ms (default 10 000) */
  handshakeTimeoutMs?: number;
}

export interface StartOptions {
  tracks: Track[];
  customParameters?: Record<string, string>;
  accountSid?: string;
  callSid?: string;
  /** override `start.mediaFormat` (default µ-law 8000 Hz mono, as Twilio always sends) */
  mediaFormat?: { encoding: string; sampleRate: number; channels: number };
}

export interface CloseInfo {
  code: number;
  reason: string;
}

/** The server refused the WebSocket upgrade (ws 'unexpected-response'). */
export class UpgradeRefusedError extends Error {
  readonly status: number;
  readonly statusCode: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
  constructor(status: number, statusMessage: string, headers: IncomingMessage['headers'], body: string) {
    super(`WebSocket upgrade refused: HTTP ${status} ${statusMessage}${body ? `: ${body.slice(0, 200)}` : ''}`);
    this.name = 'UpgradeRefusedError';
    this.status = status;
    this.statusCode = status;
    this.headers = headers;
    this.body = body;
  }
}

/**
 * Twilio request signature: base64 HMAC-SHA1 over the URL followed by every POST parameter
 * (sorted by name) as name+value. A WebSocket upgrade has no parameters.
 */
export function twilioSignature(
  authToken: string,
  url: string,
  params: Record<string, string | string[]> = {},
): string {
  let data = url;
  for (const name of Object.keys(params).sort()) {
    const v = params[name];
    const values = Array.isArray(v) ? [...new Set(v)].sort() : [v];
    for (const value of values) data += name + value;
  }
  return createHmac('sha1', authToken).update(data, 'utf8').digest('base64');
}

const MAX_BODY = 4096;
const MAX_PENDING = 1000;

export class TwilioStreamClient {
  readonly ws: WebSocket;
  accountSid: string;
  callSid: string;
  readonly streamSid: string;
  /** resolves when the socket has closed (code 1006 = abnormal, no close frame) */
  readonly closed: Promise<CloseInfo>;
  /** last `sequenceNumber` sent (0 before `start`) */
  sequenceNumber = 0;
  /** last `chunk` sent per track */
  readonly chunks: Record<Track, number> = { inbound: 0, outbound: 0 };
  /** messages the server sent us (Twilio→ direction: media/mark/clear on <Connect>) */
  receivedMessages = 0;
  /** socket errors after the upgrade (e.g. a protocol violation by the server) */
  readonly errors: Error[] = [];
  private onServerMessage: ((data: string) => void) | null = null;
  private onSocketError: ((err: Error) => void) | null = null;
  /** text messages that arrived before onMessage() was called (at most MAX_PENDING) */
  private pending: string[] | null = [];
  // precomputed JSON fragments for media messages
  private readonly mediaHead: string;
  private readonly mediaMid: Record<Track, string>;

  private constructor(ws: WebSocket, ids: { accountSid: string; callSid: string; streamSid: string }) {
    this.ws = ws;
    this.accountSid = ids.accountSid;
    this.callSid = ids.callSid;
    this.streamSid = ids.streamSid;
    this.mediaHead = '{"event":"media","sequenceNumber":"';
    this.mediaMid = {
      inbound: `","streamSid":"${this.streamSid}","media":{"track":"inbound","chunk":"`,
      outbound: `","streamSid":"${this.streamSid}","media":{"track":"outbound","chunk":"`,
    };
    this.closed = new Promise<CloseInfo>((resolve) => {
      ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() }));
    });
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      this.receivedMessages++;
      if (isBinary) return;
      // ws gives a Buffer (the default binaryType)
      if (this.onServerMessage) this.onServerMessage((data as Buffer).toString());
      else if (this.pending && this.pending.length < MAX_PENDING) this.pending.push((data as Buffer).toString());
    });
    ws.on('error', (err: Error) => {
      this.errors.push(err); // a socket errs at most a few times before it closes
      this.onSocketError?.(err);
    });
  }

  /**
   * Opens the WebSocket like Twilio does. Resolves once the upgrade succeeded; rejects with an
   * `UpgradeRefusedError` (carrying `status`) when the server answers anything but 101.
   */
  static connect(url: string, opts: ConnectOptions = {}): Promise<TwilioStreamClient> {
    const headers: Record<string, string> = { 'User-Agent': 'Twilio.TmeWs/1.0' };
    if (opts.authToken !== undefined) {
      headers['X-Twilio-Signature'] = twilioSignature(opts.authToken, opts.signUrl ?? url);
    }
    Object.assign(headers, opts.headers);
    const ws = new WebSocket(url, {
      headers,
      perMessageDeflate: false,
      handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
    });
    const ids = {
      accountSid: opts.accountSid ?? randomSid('AC'),
      callSid: opts.callSid ?? randomSid('CA'),
      streamSid: opts.streamSid ?? randomSid('MZ'),
    };
    return new Promise<TwilioStreamClient>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        reject(err);
      };
      ws.once('unexpected-response', (req, res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        const done = () => {
          const body = Buffer.concat(chunks).toString('utf8');
          fail(new UpgradeRefusedError(Number(res.statusCode), String(res.statusMessage), res.headers, body));
          req.destroy();
          ws.terminate();
        };
        res.on('data', (c: Buffer) => {
          if (size < MAX_BODY) chunks.push(c);
          size += c.length;
        });
        res.once('end', done);
        res.once('error', done);
        res.once('aborted', done);
      });
      ws.on('error', fail); // before 'open' only: afterwards the client's own listener records errors
      ws.once('open', () => {
        settled = true;
        resolve(new TwilioStreamClient(ws, ids));
      });
    });
  }

  /** bytes queued in user space, not yet handed to the kernel */
  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Called for every text message the server sends; messages that arrived before the first
   * handler was set (they can come with the upgrade response itself) are delivered at once.
   */
  onMessage(handler: ((data: string) => void) | null): void {
    this.onServerMessage = handler;
    const pending = this.pending;
    this.pending = null;
    if (handler && pending) for (const m of pending) handler(m);
  }

  /** called for every socket error after the upgrade; earlier errors are delivered at once */
  onError(handler: ((err: Error) => void) | null): void {
    this.onSocketError = handler;
    if (handler) for (const e of this.errors) handler(e);
  }

  sendConnected(cb?: (err?: Error) => void): void {
    this.ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}', cb);
  }

  sendStart(opts: StartOptions, cb?: (err?: Error) => void): void {
    if (opts.accountSid !== undefined) this.accountSid = opts.accountSid;
    if (opts.callSid !== undefined) this.callSid = opts.callSid;
    const mf = opts.mediaFormat ?? { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 };
    const seq = ++this.sequenceNumber;
    this.ws.send(
      `{"event":"start","sequenceNumber":"${seq}","streamSid":"${this.streamSid}","start":{` +
        `"accountSid":"${this.accountSid}","streamSid":"${this.streamSid}","callSid":"${this.callSid}",` +
        `"tracks":${JSON.stringify(opts.tracks)},"customParameters":${JSON.stringify(opts.customParameters ?? {})},` +
        `"mediaFormat":{"encoding":${JSON.stringify(mf.encoding)},"sampleRate":${mf.sampleRate},"channels":${mf.channels}}}}`,
      cb,
    );
  }

  /** one media message; `payload` = raw µ-law bytes (sent base64) */
  sendMedia(track: Track, payload: Uint8Array, timestampMs: number, cb?: (err?: Error) => void): void {
    const b64 = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('base64');
    this.sendMediaBase64(track, b64, timestampMs, cb);
  }

  /** like sendMedia with the payload already base64-encoded */
  sendMediaBase64(track: Track, payloadBase64: string, timestampMs: number, cb?: (err?: Error) => void): void {
    const seq = ++this.sequenceNumber;
    const chunk = ++this.chunks[track];
    this.ws.send(
      this.mediaHead + seq + this.mediaMid[track] + chunk + '","timestamp":"' + timestampMs + '","payload":"' + payloadBase64 + '"}}',
      cb,
    );
  }

  /** DTMF as Twilio sends it (track is always "inbound_track") */
  sendDtmf(digit: string, cb?: (err?: Error) => void): void {
    const seq = ++this.sequenceNumber;
    this.ws.send(
      `{"event":"dtmf","sequenceNumber":"${seq}","streamSid":"${this.streamSid}","dtmf":{"track":"inbound_track","digit":${JSON.stringify(digit)}}}`,
      cb,
    );
  }

  /** a mark echo, as Twilio sends it when audio queued before a mark has played */
  sendMark(name: string, cb?: (err?: Error) => void): void {
    const seq = ++this.sequenceNumber;
    this.ws.send(
      `{"event":"mark","sequenceNumber":"${seq}","streamSid":"${this.streamSid}","mark":{"name":${JSON.stringify(name)}}}`,
      cb,
    );
  }

  sendStop(cb?: (err?: Error) => void): void {
    const seq = ++this.sequenceNumber;
    this.ws.send(
      `{"event":"stop","sequenceNumber":"${seq}","streamSid":"${this.streamSid}","stop":{"accountSid":"${this.accountSid}","callSid":"${this.callSid}"}}`,
      cb,
    );
  }

  /** anything, unchanged (garbage tests); does not touch the counters */
  sendRaw(data: string | Buffer, binary = false, cb?: (err?: Error) => void): void {
    this.ws.send(data, { binary }, cb);
  }

  /** orderly close (close frame with `code`, default 1000); resolves like `closed` */
  close(code = 1000, reason?: string): Promise<CloseInfo> {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close(code, reason);
    }
    return this.closed;
  }

  /** abrupt end: the TCP connection is destroyed without a close frame (network loss) */
  terminate(): Promise<CloseInfo> {
    this.ws.terminate();
    return this.closed;
  }
}
