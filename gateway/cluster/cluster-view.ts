// What the whole cluster holds, read from Redis: live streams by node (GET /v1/calls), who holds
// a call (command routing), and which nodes died. Every node watches every 2 s; the first to
// see a dead node's heartbeat gone marks it lost (SET NX), so `node_lost` is raised once in the
// cluster, 5..7 s after the death (heartbeat TTL + watch period), well inside the 15 s asked.
// A node that stays dead longer than FORGET_DEAD_NODE_MS is forgotten: its streams leave the
// `call:` keys and the lost list, so late commands for its calls are no longer answered
// `owner_lost` forever (a CTI event is queued, a pause finds no holder). If it comes back, its
// start-up recovery still finalises what it had on disk.
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { FORGET_DEAD_NODE_MS, type Keys, type ScopeOf, type StreamEntry } from './keys.js';
import type { RedisLink } from './redis-link.js';

export const WATCH_EVERY_MS = 2000;

export interface LostStream extends StreamEntry {
  /** when the holding node was first seen dead */
  lostSince: string;
}

export interface CallsSnapshot {
  items: StreamEntry[];
  lost: LostStream[];
}

export interface Owners {
  /** alive nodes holding at least one stream of the call */
  alive: string[];
  /** dead (lost) nodes holding streams of the call */
  dead: string[];
}

export interface ClusterViewOptions {
  link: RedisLink;
  keys: Keys;
  nodeId: string;
  log: Logger;
  onNodeLost: (nodeId: string, streams: StreamEntry[]) => void;
  scopeOf: ScopeOf;
  /** how long a dead node stays listed before it is forgotten; default FORGET_DEAD_NODE_MS */
  forgetDeadAfterMs?: number;
  wallNow?: () => number;
}

export class ClusterView {
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly o: ClusterViewOptions) {}

  private get redis(): Redis {
    return this.o.link.cmd;
  }

  start(): void {
    this.timer = setInterval(() => {
      void this.watch().catch((err: unknown) => this.o.log.warn({ err }, 'cluster: could not check for dead nodes'));
    }, WATCH_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Registered node ids with whether their heartbeat is alive. */
  async nodes(): Promise<Map<string, boolean>> {
    const k = this.o.keys;
    const ids = await this.redis.smembers(k.nodes());
    const out = new Map<string, boolean>();
    if (ids.length === 0) return out;
    const p = this.redis.pipeline();
    for (const id of ids) p.exists(k.alive(id));
    const res = (await p.exec()) ?? [];
    ids.forEach((id, i) => out.set(id, res[i]?.[1] === 1));
    return out;
  }

  /** Notice dead nodes: mark each lost once, raise the alarm, forget nodes with nothing left. */
  async watch(): Promise<void> {
    if (!this.o.link.ready) return;
    const k = this.o.keys;
    for (const [id, alive] of await this.nodes()) {
      if (alive || id === this.o.nodeId) continue;
      const streams = await this.streamsOf(id);
      if (streams.length === 0) {
        // died (or left) with nothing: nothing to list as lost
        await this.redis.multi().srem(k.nodes(), id).del(k.lost(id)).exec();
        continue;
      }
      const now = this.o.wallNow?.() ?? Date.now();
      const first = await this.redis.set(k.lost(id), new Date(now).toISOString(), 'NX');
      if (first === 'OK') {
        this.o.onNodeLost(id, streams);
        continue;
      }
      const since = Date.parse((await this.redis.get(k.lost(id))) ?? '');
      if (Number.isFinite(since) && now - since >= (this.o.forgetDeadAfterMs ?? FORGET_DEAD_NODE_MS)) await this.forget(id, streams);
    }
  }

  /** A node dead for good: its streams leave the call index; the lost list forgets it. */
  private async forget(id: string, streams: StreamEntry[]): Promise<void> {
    const k = this.o.keys;
    const m = this.redis.multi();
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- entries are JSON from Redis, written by any node version
    for (const e of streams) m.hdel(k.call(this.o.scopeOf(e.accountSid ?? ''), e.callSid), e.streamSid);
    await m.del(k.streams(id), k.lost(id)).srem(k.nodes(), id).exec();
    this.o.log.warn({ deadNodeId: id, streams: streams.length }, 'cluster: forgot a node that stayed dead; its calls are no longer listed as lost');
  }

  private async streamsOf(nodeId: string): Promise<StreamEntry[]> {
    const h = await this.redis.hvals(this.o.keys.streams(nodeId));
    return h.map((j) => JSON.parse(j) as StreamEntry);
  }

  /** Every stream in the cluster: held by live nodes (items) or by dead ones (lost). */
  async calls(): Promise<CallsSnapshot> {
    const k = this.o.keys;
    const nodes = await this.nodes();
    const ids = [...nodes.keys()];
    const p = this.redis.pipeline();
    for (const id of ids) p.hvals(k.streams(id)).get(k.lost(id));
    const res = (await p.exec()) ?? [];
    const items: StreamEntry[] = [];
    const lost: LostStream[] = [];
    ids.forEach((id, i) => {
      const entries = ((res[2 * i]?.[1] as string[] | undefined) ?? []).map((j) => JSON.parse(j) as StreamEntry);
      if (nodes.get(id)) {
        items.push(...entries);
      } else {
        const lostSince = (res[2 * i + 1]?.[1] as string | null) ?? new Date().toISOString();
        for (const e of entries) lost.push({ ...e, lostSince });
      }
    });
    const byStart = (a: StreamEntry, b: StreamEntry) => a.startedAt.localeCompare(b.startedAt) || a.streamSid.localeCompare(b.streamSid);
    return { items: items.sort(byStart), lost: lost.sort(byStart) };
  }

  /** Which nodes hold streams of a call. */
  async owners(scope: string, callSid: string): Promise<Owners> {
    return this.classify(Object.values(await this.redis.hgetall(this.o.keys.call(scope, callSid))));
  }

  async classify(nodeIds: string[]): Promise<Owners> {
    const unique = [...new Set(nodeIds)];
    const out: Owners = { alive: [], dead: [] };
    if (unique.length === 0) return out;
    const p = this.redis.pipeline();
    for (const id of unique) p.exists(this.o.keys.alive(id));
    const res = (await p.exec()) ?? [];
    // this node is alive by definition, even while its own heartbeat key is being re-created
    unique.forEach((id, i) => (res[i]?.[1] === 1 || id === this.o.nodeId ? out.alive : out.dead).push(id));
    return out;
  }
}
