// Cluster-wide recordings and alarms. The volume is shared, so a recording published by any node
// is a file every node can serve: its sidecar is announced on `recordings` and every node adds
// it to its embedded catalog (and reconciles the catalog with the volume in the background after
// each (re)connect, for announcements missed meanwhile). With DATABASE_URL the catalog is shared:
// announcements change nothing there and no reconcile is needed. Alarms go to Redis as one entry per node, kind and subject (`<p>alarm-entries`,
// hash), at most ALARMS_PER_KIND per kind in the cluster (`<p>alarm-order:<kind>`, sorted set by
// time: the oldest entry of that kind goes), which GET /v1/alarms reads; alarms raised while Redis
// is away wait in memory (latest entry per key, bounded) and are pushed on reconnect.
import type { Logger } from 'pino';
import { ALARMS_PER_KIND, alarmKey, type Alarm } from '../../recorder/alarms.js';
import type { Catalog } from '../../recorder/catalog/catalog.js';
import type { RecordingSidecar } from '../../recorder/sidecar.js';
import { sidecarPathOf } from '../../recorder/storage-layout.js';
import type { Keys } from './keys.js';
import type { RedisLink } from './redis-link.js';

/** alarms waiting for Redis (one per node, kind and subject) */
const UNSENT_KEPT = 1000;

/**
 * KEYS: entries hash, order zset of the alarm's kind; ARGV: field, alarm JSON, time (ms), cap.
 * One script, so an entry and its place in the order never disagree and the trim is atomic.
 */
const PUT_ALARM = `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
end
return over
`;
/** beyond this many, a long outage's announcements are dropped: a node's rescan on its own reconnect still finds the files */
const ANNOUNCEMENTS_KEPT = 10000;

type Announcement =
  | { kind: 'published'; nodeId: string; sidecar: RecordingSidecar }
  | { kind: 'updated'; nodeId: string; sidecar: RecordingSidecar }
  | { kind: 'removed'; nodeId: string; recordingId: string };

export interface SharedStateOptions {
  link: RedisLink;
  keys: Keys;
  nodeId: string;
  log: Logger;
  index: Catalog;
  recordingsDir: string;
  reconcile: () => Promise<void>;
}

export class SharedState {
  /** field -> latest entry, raised while Redis was away */
  private unsent = new Map<string, Alarm>();
  private tick = 0;
  /** announcements made while Redis was away (or before the first connect: start-up recovery) */
  private unannounced: Announcement[] = [];

  constructor(private readonly o: SharedStateOptions) {}

  start(): void {
    const { link, keys } = this.o;
    link.onReady(() => {
      link.sub.subscribe(keys.recordingsChannel()).catch((err: unknown) =>
        this.o.log.warn({ err }, 'cluster: could not subscribe to recording announcements'));
    });
    link.sub.on('message', (channel: string, message: string) => {
      if (channel === keys.recordingsChannel()) this.onAnnouncement(message);
    });
  }

  private onAnnouncement(message: string): void {
    let a: Announcement;
    try {
      a = JSON.parse(message) as Announcement;
    } catch {
      return;
    }
    if (a.nodeId === this.o.nodeId || this.o.index.backend === 'postgres') return;
    // announcements from different nodes may arrive in any order: a `published` or `updated`
    // after the `removed` of the same recording must not list it again (tombstone; UPDATE only)
    const applied = a.kind === 'published' ? this.o.index.put(a.sidecar, sidecarPathOf(this.o.recordingsDir, a.sidecar))
      : a.kind === 'updated' ? this.o.index.update(a.sidecar)
        : this.o.index.remove(a.recordingId);
    applied.catch((err: Error) => this.o.log.warn({ err }, 'cluster: bad recording announcement ignored'));
  }

  private announce(a: Announcement): void {
    if (!this.o.link.ready) {
      // other nodes rescan only when *they* reconnect: tell them once we are back
      this.unannounced.push(a);
      if (this.unannounced.length > ANNOUNCEMENTS_KEPT) this.unannounced.splice(0, this.unannounced.length - ANNOUNCEMENTS_KEPT);
      return;
    }
    this.o.link.cmd.publish(this.o.keys.recordingsChannel(), JSON.stringify(a)).catch(() => this.unannounced.push(a));
  }

  recordingPublished(sidecar: RecordingSidecar): void {
    this.announce({ kind: 'published', nodeId: this.o.nodeId, sidecar });
  }

  recordingUpdated(sidecar: RecordingSidecar): void {
    this.announce({ kind: 'updated', nodeId: this.o.nodeId, sidecar });
  }

  recordingRemoved(recordingId: string): void {
    this.announce({ kind: 'removed', nodeId: this.o.nodeId, recordingId });
  }

  /**
   * After a (re)connect: what was published while we were away, what was deleted meanwhile (the
   * announcements of both were missed), and alarms not yet shared.
   */
  async resync(): Promise<void> {
    // in the background: the node answers meanwhile from what the catalog already lists
    if (this.o.index.backend !== 'postgres') {
      void this.o.reconcile().catch((err: Error) => this.o.log.error({ err }, 'cluster: catalog reconcile failed'));
    }
    const unsent = this.unsent;
    this.unsent = new Map();
    for (const a of unsent.values()) this.alarmRaised(a);
    const unannounced = this.unannounced;
    this.unannounced = [];
    for (const a of unannounced) this.announce(a);
  }

  private entriesKey(): string {
    return `${this.o.keys.prefix}alarm-entries`;
  }

  private orderKey(kind: string): string {
    return `${this.o.keys.prefix}alarm-order:${kind}`;
  }

  /** The local entry (count and times of this node) replaces this node's entry for that key. */
  alarmRaised(a: Alarm): void {
    if (!this.o.link.ready) {
      this.keep(a);
      return;
    }
    const field = `${a.nodeId}\u0000${alarmKey(a)}`;
    // ms × 1000 + a counter: alarms raised in the same millisecond still trim oldest first
    this.tick = (this.tick + 1) % 1000;
    const score = Date.parse(a.at) * 1000 + this.tick;
    this.o.link.cmd.eval(PUT_ALARM, 2, this.entriesKey(), this.orderKey(a.kind), field, JSON.stringify(a), score, ALARMS_PER_KIND)
      .catch(() => this.keep(a));
  }

  private keep(a: Alarm): void {
    const field = `${a.nodeId}\u0000${alarmKey(a)}`;
    this.unsent.delete(field);
    this.unsent.set(field, a);
    if (this.unsent.size > UNSENT_KEPT) this.unsent.delete(this.unsent.keys().next().value as string);
  }

  /** Every node's alarms, newest first (throws when Redis cannot be read). */
  async alarms(): Promise<Alarm[]> {
    const shared = await this.o.link.cmd.hgetall(this.entriesKey());
    const byField = new Map<string, Alarm>();
    for (const [field, json] of Object.entries(shared)) {
      try {
        byField.set(field, JSON.parse(json) as Alarm);
      } catch {
        // a damaged entry is skipped, not a failed listing
      }
    }
    // ours that did not reach Redis yet are part of the truth too (and newer than what Redis has)
    for (const [field, a] of this.unsent) byField.set(field, a);
    return [...byField.values()].sort((a, b) => b.at.localeCompare(a.at));
  }
}
