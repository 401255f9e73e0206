// Where a Kinesis source keeps its progress: per shard the last applied sequence number (or
// "finished"), plus the ids of recently applied CloudEvents (delivery is at least once: the
// same event may come again, on another shard or after a restart). Single node: one JSON file
// per source under RECORDINGS_DIR/.kinesis, replaced atomically. Cluster mode: redis-store.ts.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../../recorder/atomic-file.js';

export interface ShardCheckpoint {
  /** last applied record; null while nothing was read yet */
  seq: string | null;
  /** read to the end of a closed shard: its children may be read */
  finished: boolean;
  /** started at LATEST with nothing read yet: resume AT_TIMESTAMP (ms) after a restart */
  startedAt?: number;
  /** wall ms of the write */
  at: number;
}

export interface KinesisStore {
  /** every shard's checkpoint (cluster mode: as written by any node) */
  load(): Promise<Map<string, ShardCheckpoint>>;
  /** false: this node no longer holds the shard (cluster mode), nothing was written */
  save(shardId: string, ck: ShardCheckpoint, appliedIds: readonly string[]): Promise<boolean>;
  /** for each id: applied before (by anyone, across restarts, within the bounded memory) */
  seen(ids: readonly string[]): Promise<boolean[]>;
  /** take the shard's reader lease; single node: always */
  acquire(shardId: string): Promise<boolean>;
  /** keep the leases of `shardIds`; returns those lost */
  renew(shardIds: readonly string[]): Promise<string[]>;
  release(shardId: string): Promise<void>;
  /** write what is pending */
  flush(): Promise<void>;
}

/** How many recent event ids a source remembers. */
export const DEFAULT_RECENT_IDS = 10_000;

interface FileDoc {
  version: 1;
  shards: Record<string, ShardCheckpoint>;
  /** oldest first */
  recentIds: string[];
}

/**
 * Single node. Writes are coalesced (one in flight, the newest state next, at most every
 * `minIntervalMs`): a crash re-reads at most that much, and those events are applied again
 * (at least once; CTI events are idempotent per call). flush() writes the latest state. Each
 * write carries the recent ids (10 000, ~350 KB of JSON): at 1000 events/s and five writes a
 * second the profile put ~7 us of the reading thread per event on them; one a second (BENCHMARKS.md).
 */
export class FileStore implements KinesisStore {
  private readonly shards = new Map<string, ShardCheckpoint>();
  /**
   * The recent ids: each with the number of its latest remember(); `ring` holds the last maxIds
   * remembered (slot n % maxIds), so the oldest is forgotten in constant time (a Set's oldest
   * entry, taken through a new iterator each time, costs a walk over the deleted ones before it)
   */
  private readonly ids = new Map<string, number>();
  private readonly ring: string[] = [];
  private remembered = 0;
  private loaded = false;
  private dirty = false;
  private writing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastWrite = 0;

  constructor(
    readonly file: string,
    private readonly onError: (err: Error) => void,
    private readonly maxIds = DEFAULT_RECENT_IDS,
    private readonly minIntervalMs = 1000,
  ) {}

  static fileFor(recordingsDir: string, key: string): string {
    return path.join(recordingsDir, '.kinesis', `${key}.json`);
  }

  async load(): Promise<Map<string, ShardCheckpoint>> {
    if (!this.loaded) {
      this.loaded = true;
      let text: string | null = null;
      try {
        text = await readFile(this.file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      if (text !== null) {
        const doc = JSON.parse(text) as Partial<FileDoc>; // from disk: any field may be missing
        for (const [id, ck] of Object.entries(doc.shards ?? {})) this.shards.set(id, ck);
        this.remember(doc.recentIds ?? []);
      }
    }
    return new Map(this.shards);
  }

  async save(shardId: string, ck: ShardCheckpoint, appliedIds: readonly string[]): Promise<boolean> {
    this.shards.set(shardId, ck);
    this.remember(appliedIds);
    this.dirty = true;
    this.schedule();
    return true;
  }

  async seen(ids: readonly string[]): Promise<boolean[]> {
    return ids.map((id) => this.ids.has(id));
  }

  async acquire(): Promise<boolean> { return true; }
  async renew(): Promise<string[]> { return []; }
  async release(): Promise<void> {}

  async flush(): Promise<void> {
    for (;;) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      if (this.writing) await this.writing;
      else if (this.dirty) await this.write();
      else return;
    }
  }

  private remember(ids: readonly string[]): void {
    const max = this.maxIds;
    for (const id of ids) {
      const n = this.remembered++;
      const slot = n % max;
      const old = this.ring[slot];
      // the id `max` remembers ago, unless remembered again since
      if (old !== undefined && this.ids.get(old) === n - max) this.ids.delete(old);
      this.ring[slot] = id;
      this.ids.set(id, n);
    }
  }

  /** the recent ids, oldest first */
  private recentIds(): string[] {
    const out: string[] = [];
    for (let n = Math.max(0, this.remembered - this.maxIds); n < this.remembered; n++) {
      const id = this.ring[n % this.maxIds]!;
      if (this.ids.get(id) === n) out.push(id);
    }
    return out;
  }

  private schedule(): void {
    if (this.writing || this.timer) return;
    const wait = Math.max(0, this.lastWrite + this.minIntervalMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.write();
    }, wait);
  }

  private write(): Promise<void> {
    this.dirty = false;
    const doc: FileDoc = { version: 1, shards: Object.fromEntries(this.shards), recentIds: this.recentIds() };
    this.writing = writeFileAtomic(this.file, JSON.stringify(doc)).catch((err: Error) => {
      this.dirty = true;
      this.onError(err);
    }).finally(() => {
      this.writing = null;
      this.lastWrite = Date.now();
      if (this.dirty) this.schedule();
    });
    return this.writing;
  }
}
