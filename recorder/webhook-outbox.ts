// Recording webhooks (contract section 5) through a durable outbox: each event is one file in
// RECORDINGS_DIR/.outbox/ (written atomically before anything is sent, deleted after a 2xx), so
// a restart resends what was not acknowledged. The file holds the exact bytes POSTed, so every
// retry carries the same body, eventId and signature: receivers de-duplicate by eventId.
// Delivery is one at a time in order, retried with exponential back-off (capped).
import { createHmac } from 'node:crypto';
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomic } from './atomic-file.js';

export const OUTBOX_DIR = '.outbox';

export interface WebhookOutboxOptions {
  recordingsDir: string;
  url: string;
  secret: string;
  log: Logger;
  /** first retry delay; doubles per failure up to maxDelayMs */
  baseDelayMs?: number;
  maxDelayMs?: number;
  requestTimeoutMs?: number;
  /** after this many failures in a row an alarm is raised (once per failing spell) */
  alarmAfter?: number;
  onFailing?: (eventId: string, attempts: number, lastError: string) => void;
}

export function signBody(secret: string, body: string | Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** File name of an event: ids are `<recordingId>.<event>`, already file-name safe; keep it so. */
function fileOf(eventId: string): string {
  return `${eventId.replace(/[^A-Za-z0-9._-]/g, '_')}.json`;
}

export class WebhookOutbox {
  readonly dir: string;
  private readonly opts: Required<Omit<WebhookOutboxOptions, 'onFailing'>> & Pick<WebhookOutboxOptions, 'onFailing'>;
  /** file names waiting, in order */
  private readonly queue: string[] = [];
  private readonly known = new Set<string>();
  private running = false;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private wake: (() => void) | null = null;
  private inFlight: AbortController | null = null;
  private loop: Promise<void> = Promise.resolve();
  delivered = 0;

  constructor(opts: WebhookOutboxOptions) {
    this.opts = { baseDelayMs: 1000, maxDelayMs: 5 * 60_000, requestTimeoutMs: 10_000, alarmAfter: 5, ...opts };
    this.dir = path.join(opts.recordingsDir, OUTBOX_DIR);
  }

  /** Pick up what a previous run left, then start delivering. */
  async start(): Promise<number> {
    await mkdir(this.dir, { recursive: true });
    const left = (await readdir(this.dir)).filter((f) => f.endsWith('.json') && !f.startsWith('.')).sort();
    for (const f of left) this.push(f);
    this.loop = this.run();
    return left.length;
  }

  get pending(): number {
    return this.queue.length;
  }

  /**
   * Queue an event durably (resolves once it is on disk). An eventId already queued is not
   * queued again: one result per recording and event.
   */
  async enqueue(eventId: string, payload: Record<string, unknown>): Promise<void> {
    const name = fileOf(eventId);
    if (this.known.has(name)) return;
    this.known.add(name);
    const body = JSON.stringify({ eventId, ...payload });
    await writeFileAtomic(path.join(this.dir, name), body);
    this.push(name);
  }

  private push(name: string): void {
    this.known.add(name);
    this.queue.push(name);
    this.wake?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = () => { this.wake = null; if (this.timer) clearTimeout(this.timer); this.timer = null; resolve(); };
      if (ms !== Infinity) this.timer = setTimeout(() => this.wake?.(), ms);
    });
  }

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    let failures = 0;
    while (!this.stopped) {
      const name = this.queue[0];
      if (name === undefined) {
        await this.sleep(Infinity);
        continue;
      }
      const file = path.join(this.dir, name);
      let body: string;
      try {
        body = await readFile(file, 'utf8');
      } catch {
        this.queue.shift(); // removed by hand: nothing to send
        continue;
      }
      const error = await this.post(body);
      if (this.stopped) break;
      if (error === null) {
        failures = 0;
        this.delivered++;
        await unlink(file).catch(() => undefined);
        this.queue.shift();
        this.known.delete(name);
        continue;
      }
      failures++;
      if (failures === this.opts.alarmAfter) this.opts.onFailing?.(name.slice(0, -5), failures, error);
      const delay = Math.min(this.opts.maxDelayMs, this.opts.baseDelayMs * 2 ** Math.min(failures - 1, 30));
      this.opts.log.warn({ eventId: name.slice(0, -5), attempts: failures, retryInMs: delay, err: error }, 'recording webhook not acknowledged; will retry');
      await this.sleepUnlessNewWork(delay);
    }
    this.running = false;
  }

  /** Back-off sleep; new events do not cut it short (the head of the queue still waits). */
  private async sleepUnlessNewWork(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (!this.stopped && Date.now() < until) await this.sleep(until - Date.now());
  }

  /** null on a 2xx, else what went wrong. */
  private async post(body: string): Promise<string | null> {
    const ac = new AbortController();
    this.inFlight = ac;
    const timer = setTimeout(() => ac.abort(), this.opts.requestTimeoutMs);
    try {
      const res = await fetch(this.opts.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-gateway-signature': signBody(this.opts.secret, body) },
        body,
        signal: ac.signal,
        // never follow: a 3xx would re-post the signed body to wherever Location points; it is a failure, retried
        redirect: 'manual',
      });
      await res.arrayBuffer().catch(() => undefined);
      return res.status >= 200 && res.status < 300 ? null : `HTTP ${res.status}`;
    } catch (err) {
      return (err as Error).message;
    } finally {
      clearTimeout(timer);
      this.inFlight = null;
    }
  }

  /** Stop delivering (what is queued stays on disk for the next start). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.inFlight?.abort();
    this.wake?.();
    await this.loop;
  }
}
