// One data source's Kinesis stream: which shards exist (ListShards), which may be read now (a
// child only once every parent is finished), which this node reads (single node: all; cluster:
// those whose lease it holds), and whether the stream can be read at all (an alarm when it has
// not been readable for `alarmAfterMs`; recording and /readyz never depend on it).
import type { Logger } from 'pino';
import type { KinesisApi, Shard, ShardPosition } from './kinesis-api.js';
import type { KinesisStore, ShardCheckpoint } from './checkpoint-store.js';
import type { KinesisSettings } from './kinesis-config.js';
import type { BatchApplier } from './record-mapper.js';
import type { KinesisMetrics } from './kinesis-metrics.js';
import { ShardReader, THROTTLE_ERRORS, type ReaderTiming } from './shard-reader.js';

export interface SourceTiming extends ReaderTiming {
  /** ListShards this often (new shards after a reshard) */
  discoverMs: number;
  /** look for shards to read (parents finished, a dead node's lease expired) this often */
  claimMs: number;
  /** renew this node's shard leases this often (cluster) */
  renewMs: number;
  /** unreadable this long: alarm */
  alarmAfterMs: number;
}

export const DEFAULT_TIMING: SourceTiming = {
  pollMs: 500, minGapMs: 200, backoffMs: 250, maxBackoffMs: 5000, batchLimit: 1000,
  discoverMs: 10_000, claimMs: 2000, renewMs: 2000, alarmAfterMs: 30_000,
};

export interface SourceDeps {
  accountSid: string;
  settings: KinesisSettings;
  api: KinesisApi;
  store: KinesisStore;
  applier: BatchApplier;
  metrics: KinesisMetrics;
  log: Logger;
  timing: SourceTiming;
  raiseUnreadable: (message: string, details: Record<string, unknown>) => void;
  now?: () => number;
}

const parentsOf = (s: Shard): string[] => [s.ParentShardId, s.AdjacentParentShardId].filter((p): p is string => typeof p === 'string');
const isClosed = (s: Shard): boolean => s.SequenceNumberRange?.EndingSequenceNumber !== undefined;

export class KinesisSource {
  readonly readers = new Map<string, ShardReader>();
  private shards: Shard[] | null = null;
  private lastList = 0;
  /** decided at the first look at the store: no checkpoint at all -> KINESIS_START applies */
  private fresh: boolean | null = null;
  private readonly initial = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private ticking: Promise<void> | null = null;
  private stopping = false;
  private failingSince: number | null = null;
  private alarmed = false;
  private lastWarn = 0;
  private readonly now: () => number;

  constructor(private readonly d: SourceDeps) {
    this.now = d.now ?? Date.now;
  }

  start(): void {
    const { timing } = this.d;
    this.timers.push(setInterval(() => this.kick(), timing.claimMs));
    this.timers.push(setInterval(() => void this.renew(), timing.renewMs));
    for (const t of this.timers) t.unref();
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    await this.ticking;
    const held = [...this.readers.entries()];
    await Promise.all(held.map(([, r]) => r.stop()));
    await this.d.store.flush().catch((err: Error) => this.d.log.error({ err }, 'Kinesis checkpoint not written at stop'));
    // hand the shards over at once rather than after the lease expires
    await Promise.all(held.map(([id]) => this.d.store.release(id).catch((err: unknown) =>
      this.d.log.warn({ err, shardId: id }, 'Kinesis shard lease not released: another node takes the shard when it expires'))));
    this.readers.clear();
    this.d.api.close();
  }

  /** Run a tick unless one is under way. */
  kick(): void {
    if (this.stopping || this.ticking) return;
    this.ticking = this.tick().finally(() => { this.ticking = null; });
  }

  private readable(): void {
    if (this.failingSince === null) return;
    if (this.alarmed) this.d.log.info({ stream: this.d.settings.stream }, 'Kinesis stream readable again');
    this.failingSince = null;
    this.alarmed = false;
  }

  private unreadable(err: Error, op: string): void {
    const now = this.now();
    this.failingSince ??= now;
    const { stream, region } = this.d.settings;
    if (now - this.lastWarn > 30_000) {
      this.lastWarn = now;
      this.d.log.warn({ stream, region, op, err }, 'Kinesis stream cannot be read: retrying');
    }
    if (!this.alarmed && now - this.failingSince >= this.d.timing.alarmAfterMs) {
      this.alarmed = true;
      this.d.raiseUnreadable(
        `Kinesis stream ${stream} (${region}) of account ${this.d.accountSid} cannot be read for ${Math.round((now - this.failingSince) / 1000)} s: ${err.name}: ${err.message}; agent events from it are not applied until it can`,
        { accountSid: this.d.accountSid, stream, region, op, error: err.name },
      );
    }
  }

  private async tick(): Promise<void> {
    try {
      await this.claim();
    } catch (err) {
      const e = err as Error;
      if (THROTTLE_ERRORS.has(e.name)) this.d.log.debug({ err: e.name }, 'Kinesis ListShards throttled');
      else this.unreadable(e, 'ListShards');
    }
  }

  private async claim(): Promise<void> {
    const { api, store, timing, settings, log } = this.d;
    if (this.shards === null || this.now() - this.lastList >= timing.discoverMs) {
      this.shards = await api.listShards();
      this.lastList = this.now();
      this.readable();
    }
    const cks = await store.load();
    if (this.fresh === null) {
      this.fresh = cks.size === 0;
      for (const s of this.shards) this.initial.add(s.ShardId as string);
      if (this.fresh) log.info({ stream: settings.stream, start: settings.start }, 'Kinesis: no checkpoint yet, starting at KINESIS_START');
    }
    const known = new Set(this.shards.map((s) => s.ShardId as string));
    const finished = (id: string) => !known.has(id) || cks.get(id)?.finished === true;
    for (const shard of this.shards) {
      const id = shard.ShardId as string;
      if (this.stopping) return;
      if (this.readers.has(id) || cks.get(id)?.finished) continue;
      const startLatest = this.fresh && settings.start === 'LATEST' && this.initial.has(id) && !cks.has(id);
      // at LATEST on a first start, closed shards hold only the past: finished without reading
      if (startLatest && isClosed(shard)) {
        if (await store.acquire(id)) {
          const ck: ShardCheckpoint = { seq: null, finished: true, at: this.now() };
          if (await store.save(id, ck, [])) cks.set(id, ck);
          await store.release(id);
        }
        continue;
      }
      if (!startLatest && !parentsOf(shard).every(finished)) continue;
      if (!(await store.acquire(id))) continue;
      // the lease may have changed hands since load(): read the checkpoint its last holder left
      const ck = (await store.load()).get(id);
      if (ck?.finished) {
        await store.release(id);
        continue;
      }
      let start: ShardPosition;
      if (ck?.seq) start = { type: 'AFTER_SEQUENCE_NUMBER', seq: ck.seq };
      else if (ck?.startedAt !== undefined) start = { type: 'AT_TIMESTAMP', at: ck.startedAt };
      else if (startLatest) {
        const at = this.now();
        // remembered so that a restart before the first record resumes from here, not from LATEST again
        if (!(await store.save(id, { seq: null, finished: false, startedAt: at, at }, []))) continue;
        start = { type: 'LATEST' };
      } else start = { type: 'TRIM_HORIZON' };
      log.info({ shardId: id, start: start.type, seq: start.seq }, 'Kinesis shard: reading');
      this.startReader(id, start);
    }
  }

  private startReader(id: string, start: ShardPosition): void {
    const d = this.d;
    const reader = new ShardReader({
      accountSid: d.accountSid, shardId: id, start, api: d.api, store: d.store, applier: d.applier,
      metrics: d.metrics, log: d.log, timing: d.timing, now: d.now,
      onReadable: () => this.readable(),
      onUnreadable: (err, op) => this.unreadable(err, op),
      onFinished: () => {
        this.lastList = 0; // look for its children now
        this.kick();
      },
    });
    this.readers.set(id, reader);
    void reader.done.then(async () => {
      if (this.readers.get(id) === reader) this.readers.delete(id);
      // finished, or stopped on an error: free the shard now (a no-op when the lease was lost)
      if (!this.stopping) {
        await d.store.release(id).catch((err: unknown) =>
          d.log.warn({ err, shardId: id }, 'Kinesis shard lease not released: it is taken again when it expires'));
      }
    });
  }

  /** Cluster: keep this node's leases; a reader whose lease is gone stops at once. */
  private async renew(): Promise<void> {
    if (this.stopping || this.readers.size === 0) return;
    let lost: string[];
    try {
      lost = await this.d.store.renew([...this.readers.keys()]);
    } catch (err) {
      // Redis away: saves fail too, so the readers stop on their next batch
      this.d.log.warn({ err }, 'Kinesis shard leases not renewed');
      return;
    }
    for (const id of lost) {
      this.d.log.warn({ shardId: id }, 'Kinesis shard lease lost: stopping its reader');
      void this.readers.get(id)?.stop();
    }
  }
}
