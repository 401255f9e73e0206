// Cluster-wide recordings and alarms. The volume is shared, so a recording published by any node
// is a file every node can serve: its sidecar is announced on `recordings` and every node adds
// it to its index (and rescans the volume after each (re)connect, for announcements missed
// meanwhile). Alarms go to a capped Redis list that GET /v1/alarms reads; alarms raised while
// Redis is away wait in memory (bounded) and are pushed on reconnect.
import { access } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Alarm } from '../../recorder/alarms.js';
import type { RecordingIndex } from '../../recorder/recording-index.js';
import type { RecordingSidecar } from '../../recorder/sidecar.js';
import { sidecarPathOf } from '../../recorder/storage-layout.js';
import type { Keys } from './keys.js';
import type { RedisLink } from './redis-link.js';

export const ALARMS_KEPT = 1000;
/** sidecars checked at once by the rescan */
const RESCAN_BATCH = 64;
/** beyond this many, a long outage's announcements are dropped: a node's rescan on its own reconnect still finds the files */
const ANNOUNCEMENTS_KEPT = 10000;

type Announcement =
  | { kind: 'published'; nodeId: string; sidecar: RecordingSidecar }
  | { kind: 'removed'; nodeId: string; recordingId: string };

export interface SharedStateOptions {
  link: RedisLink;
  keys: Keys;
  nodeId: string;
  log: Logger;
  index: RecordingIndex;
  recordingsDir: string;
}

export class SharedState {
  private unsent: Alarm[] = [];
  /** announcements made while Redis was away (or before the first connect: start-up recovery) */
  private unannounced: Announcement[] = [];

  constructor(private readonly o: SharedStateOptions) {}

  start(): void {
    const { link, keys } = this.o;
    link.onReady(() => {
      link.sub.subscribe(keys.recordingsChannel()).catch(() => undefined);
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
    if (a.nodeId === this.o.nodeId) return;
    try {
      if (a.kind === 'published') this.o.index.add(a.sidecar, sidecarPathOf(this.o.recordingsDir, a.sidecar));
      else this.o.index.remove(a.recordingId);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'cluster: bad recording announcement ignored');
    }
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

  recordingRemoved(recordingId: string): void {
    this.announce({ kind: 'removed', nodeId: this.o.nodeId, recordingId });
  }

  /**
   * After a (re)connect: what was published while we were away, what was deleted meanwhile (the
   * announcements of both were missed), and alarms not yet shared.
   */
  async resync(): Promise<void> {
    await this.o.index.load((file, err) => this.o.log.warn({ file, err: err.message }, 'skipping unreadable sidecar'));
    await this.dropDeleted();
    const unsent = this.unsent;
    this.unsent = [];
    for (const a of unsent) this.alarmRaised(a);
    const unannounced = this.unannounced;
    this.unannounced = [];
    for (const a of unannounced) this.announce(a);
  }

  /** Index entries whose sidecar left the shared volume (deleted by another node while we were away). */
  private async dropDeleted(): Promise<number> {
    const { items } = this.o.index.query({ limit: Number.MAX_SAFE_INTEGER });
    let dropped = 0;
    for (let i = 0; i < items.length; i += RESCAN_BATCH) {
      const batch = items.slice(i, i + RESCAN_BATCH);
      const gone = await Promise.all(batch.map(async (s) => {
        const rec = this.o.index.get(s.recordingId);
        if (!rec) return false;
        try {
          await access(rec.sidecarPath);
          return false;
        } catch (err) {
          return (err as NodeJS.ErrnoException).code === 'ENOENT';
        }
      }));
      batch.forEach((s, j) => {
        if (gone[j] && this.o.index.remove(s.recordingId)) dropped++;
      });
    }
    if (dropped > 0) this.o.log.info({ dropped }, 'cluster: rescan removed recordings deleted while this node was away');
    return dropped;
  }

  alarmRaised(a: Alarm): void {
    const key = this.o.keys.alarms();
    if (!this.o.link.ready) {
      this.keep(a);
      return;
    }
    this.o.link.cmd.multi().lpush(key, JSON.stringify(a)).ltrim(key, 0, ALARMS_KEPT - 1).exec()
      .catch(() => this.keep(a));
  }

  private keep(a: Alarm): void {
    this.unsent.push(a);
    if (this.unsent.length > ALARMS_KEPT) this.unsent.splice(0, this.unsent.length - ALARMS_KEPT);
  }

  /** Every node's recent alarms, newest first (throws when Redis cannot be read). */
  async alarms(): Promise<Alarm[]> {
    const list = await this.o.link.cmd.lrange(this.o.keys.alarms(), 0, ALARMS_KEPT - 1);
    const shared = list.map((j) => JSON.parse(j) as Alarm);
    // ours that did not reach Redis yet are part of the truth too
    return [...[...this.unsent].reverse(), ...shared].sort((a, b) => b.at.localeCompare(a.at));
  }
}
