// Runs one simulated Twilio stream: connect → connected → start → media… → stop → close.
//
// Real-time pacing follows an absolute schedule (frame i is due at t0 + i*frameMs, so late ticks
// never accumulate drift) driven by ONE shared timer tick for all streams in the process
// (StreamScheduler). Without real time, frames go out as fast as the socket drains.
import { performance } from 'node:perf_hooks';
import { fillFrame, FRAME_BYTES, FRAME_MS, type Track } from './audio-fixtures.js';
import { TwilioStreamClient, type CloseInfo } from './twilio-stream-client.js';

/** A job run by the scheduler on every tick. */
export interface PacedJob {
  /** send everything due at or before `now` (performance.now() ms); return true when finished */
  onTick(now: number): boolean;
}

/**
 * One timer for many paced jobs. The timer runs only while jobs are registered, so an idle
 * scheduler never keeps the process alive. Ticks are aligned to an absolute grid
 * (start + k*tickMs); a late tick is simply followed by the next grid point.
 */
export class StreamScheduler {
  readonly tickMs: number;
  private readonly jobs = new Set<PacedJob>();
  private timer: NodeJS.Timeout | null = null;
  private gridStart = 0;
  private nextTick = 0;
  /** ticks run so far and the largest lateness seen (ms), for diagnostics */
  ticks = 0;
  maxLateMs = 0;

  constructor(opts: { tickMs?: number } = {}) {
    this.tickMs = opts.tickMs ?? 10;
  }

  get size(): number {
    return this.jobs.size;
  }

  /** registers `job` and runs it once at once; returns a function that unregisters it */
  add(job: PacedJob): () => void {
    this.jobs.add(job);
    if (job.onTick(performance.now())) {
      this.jobs.delete(job);
    } else if (this.timer === null) {
      this.gridStart = performance.now();
      this.nextTick = this.gridStart + this.tickMs;
      this.arm();
    }
    return () => this.remove(job);
  }

  remove(job: PacedJob): void {
    this.jobs.delete(job);
    if (this.jobs.size === 0) this.stop();
  }

  /** stops the timer (jobs stay registered until the next add) */
  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(): void {
    this.timer = setTimeout(this.tick, Math.max(0, this.nextTick - performance.now()));
  }

  private readonly tick = (): void => {
    const now = performance.now();
    this.ticks++;
    const late = now - this.nextTick;
    if (late > this.maxLateMs) this.maxLateMs = late;
    for (const job of this.jobs) {
      if (job.onTick(now)) this.jobs.delete(job);
    }
    if (this.jobs.size === 0) {
      this.timer = null;
      return;
    }
    // next grid point strictly after now
    this.nextTick = this.gridStart + (Math.floor((performance.now() - this.gridStart) / this.tickMs) + 1) * this.tickMs;
    this.arm();
  };
}

/** the scheduler runStream uses unless given one */
export const defaultScheduler = new StreamScheduler();

/** optional shared counters, incremented as messages go out (cheap progress reporting) */
export interface RunCounters {
  mediaMessages: number;
  messages: number;
}

export interface RunStreamOptions {
  url: string;
  authToken?: string;
  signUrl?: string;
  headers?: Record<string, string>;
  tracks: Track[];
  /** audio seed: frame i of track T carries frameFor(seed, T, i) */
  seed: number;
  /** frames per track (Infinity: until `signal` aborts) */
  frames: number;
  /** frame duration, ms (default 20); payload size = frameMs * 8 bytes */
  frameMs?: number;
  /** pace in real time (true) or send as fast as the socket drains (false) */
  realtime: boolean;
  /** the clock real-time pacing reads (ms, default performance.now); with a `scheduler` that
   * calls onTick with the same clock, tests drive the pacing in virtual time */
  now?: () => number;
  customParameters?: Record<string, string>;
  accountSid?: string;
  callSid?: string;
  streamSid?: string;
  /** send `stop` before closing (default true) */
  sendStop?: boolean;
  /** how the client leaves: orderly close frame (default) or abrupt loss without one */
  end?: 'close' | 'terminate';
  /** `media.timestamp` of frame 0 (default 0); Twilio's first timestamp is often a few ms */
  timestampOffsetMs?: number;
  /** stops sending early; the stream then ends as usual (stop + close) */
  signal?: AbortSignal;
  scheduler?: StreamScheduler;
  counters?: RunCounters;
  /** socket errors after the upgrade (the stream ends; runStream still resolves) */
  onError?: (err: Error) => void;
  /** called once connected (e.g. to keep a handle for assertions) */
  onConnected?: (client: TwilioStreamClient) => void;
}

export interface RunStreamResult {
  streamSid: string;
  callSid: string;
  accountSid: string;
  framesSent: Record<Track, number>;
  closeCode: number;
  closeReason: string;
  /** true when the server closed the socket before we finished sending */
  closedEarly: boolean;
  /** ms from connect until every frame was handed to the socket */
  sendMs: number;
}

/** user-space bytes allowed to pile up before a non-realtime sender waits for the socket */
const HIGH_WATER = 256 * 1024;
/** at most this many frames per turn of the event loop (non-realtime), to stay fair to others */
const BURST = 64;

export async function runStream(opts: RunStreamOptions): Promise<RunStreamResult> {
  const frameMs = opts.frameMs ?? FRAME_MS;
  const frameBytes = (frameMs * FRAME_BYTES) / FRAME_MS;
  const tracks = opts.tracks;
  const tsOffset = opts.timestampOffsetMs ?? 0;
  const counters = opts.counters;
  const client = await TwilioStreamClient.connect(opts.url, {
    authToken: opts.authToken,
    signUrl: opts.signUrl,
    headers: opts.headers,
    accountSid: opts.accountSid,
    callSid: opts.callSid,
    streamSid: opts.streamSid,
  });
  const now = opts.now ?? (() => performance.now());
  const t0 = now();
  opts.onConnected?.(client);
  let socketGone = false as boolean; // set by the close handler: not narrowed to false
  if (opts.onError) client.onError(opts.onError);
  void client.closed.then(() => {
    socketGone = true;
  });

  client.sendConnected();
  client.sendStart({ tracks, customParameters: opts.customParameters });
  if (counters) counters.messages += 2;

  const framesSent: Record<Track, number> = { inbound: 0, outbound: 0 };
  const payload = Buffer.allocUnsafe(frameBytes);
  let next = 0; // next frame index

  const sendFrame = (i: number, cb?: (err?: Error) => void): void => {
    const ts = tsOffset + i * frameMs;
    for (let k = 0; k < tracks.length; k++) {
      const track = tracks[k]!;
      fillFrame(payload, opts.seed, track, i, 0, frameBytes);
      client.sendMediaBase64(track, payload.toString('base64'), ts, k === tracks.length - 1 ? cb : undefined);
      framesSent[track]++;
    }
    if (counters) {
      counters.mediaMessages += tracks.length;
      counters.messages += tracks.length;
    }
  };

  const aborted = () => opts.signal?.aborted === true;

  await new Promise<void>((resolve) => {
    if (opts.realtime) {
      const scheduler = opts.scheduler ?? defaultScheduler;
      scheduler.add({
        onTick(now: number): boolean {
          if (socketGone || aborted()) {
            resolve();
            return true;
          }
          // every frame whose due time t0 + i*frameMs has come
          const due = Math.min(opts.frames, Math.floor((now - t0) / frameMs) + 1);
          while (next < due) sendFrame(next++);
          if (next >= opts.frames) {
            resolve();
            return true;
          }
          return false;
        },
      });
    } else {
      const pump = (err?: Error): void => {
        if (err || socketGone || aborted()) return resolve();
        let burst = 0;
        while (next < opts.frames) {
          if (burst++ >= BURST) {
            setImmediate(pump);
            return;
          }
          if (client.ws.bufferedAmount >= HIGH_WATER) {
            // wait until this frame has been handed to the kernel
            sendFrame(next++, pump);
            return;
          }
          sendFrame(next++);
        }
        resolve();
      };
      pump();
    }
  });
  const sendMs = now() - t0;

  let closedEarly = socketGone;
  let info: CloseInfo;
  if (socketGone) {
    info = await client.closed;
  } else {
    if (opts.sendStop !== false) {
      client.sendStop();
      if (counters) counters.messages++;
    }
    info = opts.end === 'terminate' ? await client.terminate() : await client.close(1000);
    closedEarly = false;
  }
  return {
    streamSid: client.streamSid,
    callSid: client.callSid,
    accountSid: client.accountSid,
    framesSent,
    closeCode: info.code,
    closeReason: info.reason,
    closedEarly,
    sendMs,
  };
}
