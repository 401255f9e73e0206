// This node in Redis: its heartbeat and the streams it holds. Stream start/end are written
// fire-and-forget (never awaited by the stream); if a write fails, or Redis was away, the node
// re-syncs as a whole at the next heartbeat: its streams hash is replaced by what the recorder
// really holds, and the call index entries of streams it no longer has (ended during the outage,
// or lost in a crash before a restart) are removed. A stream's registration also reads whether
// its call was paused in Redis (same MULTI, so a pause stored at the same moment is either seen
// here or sees this stream as a holder), and every sync reads it again for every live stream.
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import {
  CALL_KEY_TTL_MS, HEARTBEAT_EVERY_MS, HEARTBEAT_TTL_MS, STREAMS_TTL_MS, type Keys, type ScopeOf, type StreamEntry,
} from './keys.js';
import type { RedisLink } from './redis-link.js';

export interface NodeRegistryOptions {
  link: RedisLink;
  keys: Keys;
  nodeId: string;
  log: Logger;
  /** the streams live on this node right now */
  liveStreams: () => StreamEntry[];
  scopeOf: ScopeOf;
  /**
   * A stream is registered (at its start, or by a sync for streams whose start was not written):
   * `paused` is whether Redis holds a pause for its call.
   */
  onRegistered?: (e: StreamEntry, paused: boolean) => void;
  /** after every successful (re)sync, e.g. rescan the volume, flush queued alarms */
  afterSync?: () => Promise<void>;
}

export class NodeRegistry {
  private timer: NodeJS.Timeout | null = null;
  private needsSync = true;
  private syncing: Promise<void> | null = null;
  private lastOk = 0;
  private readonly startedAt = new Date().toISOString();

  constructor(private readonly o: NodeRegistryOptions) {}

  private get redis(): Redis {
    return this.o.link.cmd;
  }

  /** In Redis, heartbeat fresh and state synced: the node may take new streams. */
  get healthy(): boolean {
    return this.o.link.ready && !this.needsSync && performance.now() - this.lastOk < HEARTBEAT_TTL_MS - HEARTBEAT_EVERY_MS;
  }

  start(): void {
    this.o.link.onLost(() => { this.needsSync = true; });
    this.o.link.onReady(() => { this.needsSync = true; void this.beat(); });
    this.timer = setInterval(() => void this.beat(), HEARTBEAT_EVERY_MS);
    this.timer.unref();
  }

  /** Resolves once the node is synced (or after `timeoutMs`, whichever is first). */
  async whenSynced(timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (!this.healthy && performance.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    return this.healthy;
  }

  private async beat(): Promise<void> {
    if (!this.o.link.ready) return;
    if (this.needsSync) {
      this.syncing ??= this.sync().finally(() => { this.syncing = null; });
      return this.syncing;
    }
    try {
      const k = this.o.keys;
      await this.redis.multi()
        .set(k.alive(this.o.nodeId), this.info(), 'PX', HEARTBEAT_TTL_MS)
        .sadd(k.nodes(), this.o.nodeId)
        .pexpire(k.streams(this.o.nodeId), STREAMS_TTL_MS)
        .exec();
      this.lastOk = performance.now();
    } catch (err) {
      this.needsSync = true;
      this.o.log.warn({ err }, 'cluster heartbeat failed');
    }
  }

  private info(): string {
    return JSON.stringify({ startedAt: this.startedAt, pid: process.pid });
  }

  private async sync(): Promise<void> {
    const k = this.o.keys;
    const id = this.o.nodeId;
    try {
      this.needsSync = false;
      const old = await this.redis.hgetall(k.streams(id));
      const live = this.o.liveStreams();
      const liveSids = new Set(live.map((e) => e.streamSid));
      const m = this.redis.multi().del(k.streams(id));
      let dropped = 0;
      for (const [streamSid, json] of Object.entries(old)) {
        if (liveSids.has(streamSid)) continue;
        dropped++;
        m.hdel(this.callKey(JSON.parse(json) as StreamEntry), streamSid);
      }
      for (const e of live) {
        m.hset(k.streams(id), e.streamSid, JSON.stringify(e));
        m.hset(this.callKey(e), e.streamSid, id).pexpire(this.callKey(e), CALL_KEY_TTL_MS);
      }
      m.pexpire(k.streams(id), STREAMS_TTL_MS)
        .set(k.alive(id), this.info(), 'PX', HEARTBEAT_TTL_MS)
        .sadd(k.nodes(), id)
        .del(k.lost(id));
      for (const e of live) m.exists(this.pausedKey(e));
      const res = (await m.exec()) ?? [];
      this.lastOk = performance.now();
      this.o.log.info({ streams: live.length, dropped }, 'cluster: registered and synced');
      const first = res.length - live.length;
      live.forEach((e, i) => this.o.onRegistered?.(e, res[first + i]?.[1] === 1));
      await this.o.afterSync?.();
    } catch (err) {
      this.needsSync = true;
      this.o.log.warn({ err }, 'cluster sync failed; retrying');
    }
  }

  private callKey(e: Pick<StreamEntry, 'accountSid' | 'callSid'>): string {
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- entries may be JSON from Redis, written by any node version
    return this.o.keys.call(this.o.scopeOf(e.accountSid ?? ''), e.callSid);
  }

  private pausedKey(e: Pick<StreamEntry, 'accountSid' | 'callSid'>): string {
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- as above
    return this.o.keys.paused(this.o.scopeOf(e.accountSid ?? ''), e.callSid);
  }

  /**
   * A stream began here (never awaited by the stream; a failure re-syncs later, and the sync
   * registers it then). Tells `onRegistered` whether its call is paused in Redis.
   */
  streamStarted(e: StreamEntry): void {
    if (!this.o.link.ready || this.needsSync) {
      this.needsSync = true;
      return;
    }
    this.redis.multi()
      .hset(this.o.keys.streams(this.o.nodeId), e.streamSid, JSON.stringify(e))
      .hset(this.callKey(e), e.streamSid, this.o.nodeId)
      .pexpire(this.callKey(e), CALL_KEY_TTL_MS)
      .exists(this.pausedKey(e))
      .exec()
      .then((res) => {
        if (!res || res.some(([err]) => err !== null)) throw new Error('registration failed');
        this.o.onRegistered?.(e, res[3]?.[1] === 1);
      })
      .catch(() => { this.needsSync = true; });
  }

  /** A listed field (paused) changed. */
  streamChanged(e: StreamEntry): void {
    this.write((m) => m.hset(this.o.keys.streams(this.o.nodeId), e.streamSid, JSON.stringify(e)));
  }

  streamEnded(e: Pick<StreamEntry, 'accountSid' | 'callSid' | 'streamSid'>): void {
    this.write((m) => m.hdel(this.o.keys.streams(this.o.nodeId), e.streamSid).hdel(this.callKey(e), e.streamSid));
  }

  private write(build: (m: ReturnType<Redis['multi']>) => unknown): void {
    if (!this.o.link.ready || this.needsSync) {
      this.needsSync = true;
      return;
    }
    const m = this.redis.multi();
    build(m);
    m.exec().catch(() => { this.needsSync = true; });
  }

  /** Leave the cluster cleanly (after a drain: no streams left), so no one reports us lost. */
  async leave(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!this.o.link.ready) return;
    const k = this.o.keys;
    const id = this.o.nodeId;
    try {
      const old = await this.redis.hgetall(k.streams(id));
      const m = this.redis.multi();
      for (const [streamSid, json] of Object.entries(old)) m.hdel(this.callKey(JSON.parse(json) as StreamEntry), streamSid);
      await m.del(k.streams(id), k.alive(id), k.lost(id)).srem(k.nodes(), id).exec();
    } catch (err) {
      this.o.log.warn({ err }, 'cluster: could not deregister');
    }
  }
}
