// Recording webhooks (contract section 5) through a durable outbox: each event is one file,
// written atomically before anything is sent and deleted after a 2xx, so a restart resends what
// was not acknowledged. The file holds the exact bytes POSTed, so every retry carries the same
// body, eventId and signature: receivers de-duplicate by eventId.
//
// Each event is retried on its own schedule (exponential back-off, capped) and several are in
// flight at once: a receiver that refuses one event never delays the others.
//
// One owner per event on a shared volume: each node keeps its events in its own folder,
// RECORDINGS_DIR/.outbox/<nodeId>/, and refreshes `.alive` there while it runs. A folder whose
// `.alive` has not been refreshed for `deadAfterMs` belongs to a dead node: live nodes take its
// events over by renaming each file into their own folder (a rename succeeds for exactly one of
// them). Files left directly in .outbox/ (older versions) are claimed the same way.
//
// Redirects are not followed: a 3xx is a failed delivery, retried to the configured URL.
import { createHmac } from 'node:crypto';
import { mkdir, readdir, readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomic } from './atomic-file.js';
import { crashPoint } from './crash-points.js';

export const OUTBOX_DIR = '.outbox';
const ALIVE = '.alive';

export interface WebhookOutboxOptions {
  recordingsDir: string;
  /** this node: its folder under .outbox */
  nodeId: string;
  url: string;
  secret: string;
  log: Logger;
  /** first retry delay; doubles per failure of that event up to maxDelayMs */
  baseDelayMs?: number;
  maxDelayMs?: number;
  requestTimeoutMs?: number;
  /** after this many failures of one event an alarm is raised (once per event) */
  alarmAfter?: number;
  onFailing?: (eventId: string, attempts: number, lastError: string) => void;
  /** events POSTed at once */
  concurrency?: number;
  /** how often `.alive` is refreshed and dead nodes' folders are looked at */
  heartbeatMs?: number;
  /** a folder whose `.alive` is older than this belongs to a dead node */
  deadAfterMs?: number;
}

export function signBody(secret: string, body: string | Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** File name of an event: ids are `<recordingId>.<event>`, already file-name safe; keep it so. */
function fileOf(eventId: string): string {
  return `${eventId.replace(/[^A-Za-z0-9._-]/g, '_')}.json`;
}

/** A node id as a folder name (node ids are host names; keep them path-safe). */
function folderOf(nodeId: string): string {
  const safe = nodeId.replace(/[^A-Za-z0-9._-]/g, '_');
  return safe.startsWith('.') || safe === '' ? `_${safe}` : safe;
}

interface EventState {
  attempts: number;
  /** Date.now() ms of the next attempt */
  dueAt: number;
  inFlight: boolean;
}

type Opts = Required<Omit<WebhookOutboxOptions, 'onFailing'>> & Pick<WebhookOutboxOptions, 'onFailing'>;

export class WebhookOutbox {
  /** the root, RECORDINGS_DIR/.outbox */
  readonly root: string;
  /** this node's folder: its events */
  readonly dir: string;
  private readonly opts: Opts;
  /** this node's events, in the order they were queued */
  private readonly events = new Map<string, EventState>();
  private stopped = false;
  private started = false;
  private timer: NodeJS.Timeout | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private readonly inFlight = new Map<string, AbortController>();
  private readonly posts = new Set<Promise<void>>();
  delivered = 0;

  constructor(opts: WebhookOutboxOptions) {
    this.opts = {
      baseDelayMs: 1000, maxDelayMs: 5 * 60_000, requestTimeoutMs: 10_000, alarmAfter: 5,
      concurrency: 4, heartbeatMs: 5000, deadAfterMs: 60_000, ...opts,
    };
    this.root = path.join(opts.recordingsDir, OUTBOX_DIR);
    this.dir = path.join(this.root, folderOf(opts.nodeId));
  }

  /** Pick up what this node left, claim orphaned events, then start delivering. */
  async start(): Promise<number> {
    await mkdir(this.dir, { recursive: true });
    await this.beat();
    await this.claimOrphans();
    const left = (await readdir(this.dir)).filter((f) => f.endsWith('.json') && !f.startsWith('.')).sort();
    for (const f of left) this.track(f);
    this.started = true;
    this.heartbeat = setInterval(() => {
      void this.beat().then(() => this.claimOrphans()).catch((err: Error) => this.opts.log.warn({ err }, 'outbox heartbeat failed'));
    }, this.opts.heartbeatMs);
    this.heartbeat.unref();
    this.schedule();
    return left.length;
  }

  get pending(): number {
    return this.events.size;
  }

  /**
   * Queue an event durably (resolves once it is on disk). An eventId already queued is not
   * queued again: one result per recording and event.
   */
  async enqueue(eventId: string, payload: Record<string, unknown>): Promise<void> {
    const name = fileOf(eventId);
    if (this.events.has(name)) return;
    const state: EventState = { attempts: 0, dueAt: Infinity, inFlight: false };
    this.events.set(name, state); // reserve the id while the file is written
    try {
      await writeFileAtomic(path.join(this.dir, name), JSON.stringify({ eventId, ...payload }));
    } catch (err) {
      this.events.delete(name);
      throw err;
    }
    state.dueAt = 0;
    this.schedule();
  }

  private track(name: string): void {
    if (!this.events.has(name)) this.events.set(name, { attempts: 0, dueAt: 0, inFlight: false });
  }

  private async beat(): Promise<void> {
    const file = path.join(this.dir, ALIVE);
    const now = new Date();
    try {
      await utimes(file, now, now);
    } catch {
      await writeFile(file, '');
    }
  }

  /** Take over events of dead nodes (and loose ones from older versions): rename into ours. */
  private async claimOrphans(): Promise<void> {
    let entries;
    try {
      entries = await readdir(this.root, { withFileTypes: true });
    } catch {
      return;
    }
    const mine = path.basename(this.dir);
    for (const e of entries) {
      if (e.isFile() && e.name.endsWith('.json') && !e.name.startsWith('.')) {
        await this.claim(path.join(this.root, e.name), e.name);
        continue;
      }
      if (!e.isDirectory() || e.name === mine) continue;
      const folder = path.join(this.root, e.name);
      let aliveAt = 0;
      try {
        aliveAt = (await stat(path.join(folder, ALIVE))).mtimeMs;
      } catch {
        // no heartbeat file: treat the folder as abandoned
      }
      if (Date.now() - aliveAt < this.opts.deadAfterMs) continue;
      let names: string[];
      try {
        names = await readdir(folder);
      } catch {
        continue;
      }
      for (const n of names) if (n.endsWith('.json') && !n.startsWith('.')) await this.claim(path.join(folder, n), n);
    }
  }

  private async claim(from: string, name: string): Promise<void> {
    if (this.events.has(name)) {
      // the same event queued here too (a node restarted under a new id): one copy is enough
      await unlink(from).catch((err: unknown) =>
        this.opts.log.warn({ err, eventId: name.slice(0, -5) }, 'a duplicate recording webhook could not be removed: it may be sent again'));
      return;
    }
    try {
      await rename(from, path.join(this.dir, name));
    } catch {
      return; // another node claimed it first
    }
    this.opts.log.info({ eventId: name.slice(0, -5), from: path.relative(this.root, from) }, 'took over a recording webhook of a node that is gone');
    this.track(name);
    if (this.started) this.schedule();
  }

  /** Start every due event (up to the concurrency), then sleep until the next one is due. */
  private schedule(): void {
    if (this.stopped || !this.started) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const now = Date.now();
    let next = Infinity;
    for (const [name, st] of this.events) {
      if (st.inFlight) continue;
      if (st.dueAt <= now) {
        if (this.inFlight.size >= this.opts.concurrency) break;
        this.send(name, st);
      } else if (st.dueAt < next) next = st.dueAt;
    }
    if (next !== Infinity) {
      this.timer = setTimeout(() => this.schedule(), Math.max(0, next - now));
      this.timer.unref();
    }
  }

  private send(name: string, st: EventState): void {
    st.inFlight = true;
    const ac = new AbortController();
    this.inFlight.set(name, ac);
    const p = this.deliver(name, st, ac).finally(() => {
      this.inFlight.delete(name);
      st.inFlight = false;
      this.posts.delete(p);
      this.schedule();
    });
    this.posts.add(p);
  }

  private async deliver(name: string, st: EventState, ac: AbortController): Promise<void> {
    const file = path.join(this.dir, name);
    let body: string;
    try {
      body = await readFile(file, 'utf8');
    } catch {
      this.events.delete(name); // removed by hand: nothing to send
      return;
    }
    crashPoint('webhook:claimed');
    const error = await this.post(body, ac);
    if (this.stopped) return;
    const eventId = name.slice(0, -5);
    if (error === null) {
      this.delivered++;
      await unlink(file).catch((err: unknown) =>
        this.opts.log.warn({ err, eventId }, 'a delivered recording webhook could not be removed: the next start sends it again'));
      this.events.delete(name);
      if (st.attempts >= this.opts.alarmAfter) this.opts.log.info({ eventId, attempts: st.attempts + 1 }, 'recording webhook delivered after failures');
      return;
    }
    st.attempts++;
    if (st.attempts === this.opts.alarmAfter) this.opts.onFailing?.(eventId, st.attempts, error);
    const delay = Math.min(this.opts.maxDelayMs, this.opts.baseDelayMs * 2 ** Math.min(st.attempts - 1, 30));
    st.dueAt = Date.now() + delay;
    this.opts.log.warn({ eventId, attempts: st.attempts, retryInMs: delay, err: error }, 'recording webhook not acknowledged; will retry');
  }

  /** null on a 2xx, else what went wrong. */
  private async post(body: string, ac: AbortController): Promise<string | null> {
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
      await res.arrayBuffer().catch(() => undefined); // drained only to free the connection: the status decides
      if (res.status >= 200 && res.status < 300) return null;
      if (res.status >= 300 && res.status < 400) return `HTTP ${res.status} (redirects are not followed)`;
      return `HTTP ${res.status}`;
    } catch (err) {
      return (err as Error).message;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stop delivering (what is queued stays on disk for the next start, or for another node). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const ac of this.inFlight.values()) ac.abort();
    await Promise.allSettled([...this.posts]);
  }
}
