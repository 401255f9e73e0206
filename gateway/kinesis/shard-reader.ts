// Reads one shard: GetRecords in a loop from the checkpoint on, events applied, then the
// checkpoint moved past them. Throttling and expired iterators are retried with back-off; other
// errors are reported (the source turns a lasting one into an alarm) and retried. A closed shard
// read to its end is checkpointed as finished so its children may start.
import type { Logger } from 'pino';
import type { KinesisApi, ShardPosition } from './kinesis-api.js';
import type { KinesisStore, ShardCheckpoint } from './checkpoint-store.js';
import type { BatchApplier } from './record-mapper.js';
import type { KinesisMetrics } from './kinesis-metrics.js';

export const THROTTLE_ERRORS = new Set([
  'ProvisionedThroughputExceededException', 'LimitExceededException', 'ThrottlingException', 'KMSThrottlingException',
]);

export interface ReaderTiming {
  /** wait after an empty GetRecords */
  pollMs: number;
  /** least time between two GetRecords of a shard (Kinesis allows 5 per second) */
  minGapMs: number;
  /** first back-off after an error; doubles up to maxBackoffMs */
  backoffMs: number;
  maxBackoffMs: number;
  batchLimit: number;
}

export interface ReaderDeps {
  accountSid: string;
  shardId: string;
  start: ShardPosition;
  api: KinesisApi;
  store: KinesisStore;
  applier: BatchApplier;
  metrics: KinesisMetrics;
  log: Logger;
  timing: ReaderTiming;
  /** a call to Kinesis succeeded / failed (not throttling) */
  onReadable: () => void;
  onUnreadable: (err: Error, op: string) => void;
  /** the shard was read to its end (closed) */
  onFinished: (shardId: string) => void;
  now?: () => number;
}

export class ShardReader {
  private stopped = false;
  private wake: (() => void) | null = null;
  private lastSeq: string | null;
  readonly done: Promise<void>;
  private readonly now: () => number;

  constructor(private readonly d: ReaderDeps) {
    this.now = d.now ?? Date.now;
    this.lastSeq = d.start.type === 'AFTER_SEQUENCE_NUMBER' ? (d.start.seq ?? null) : null;
    this.done = this.run().catch((err: Error) => {
      d.log.error({ err, shardId: d.shardId }, 'Kinesis shard reader stopped on an error');
    }).finally(() => d.metrics.shardDone(d.accountSid, d.shardId));
  }

  /** Stop after the call under way (events already applied are checkpointed first). */
  stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    return this.done;
  }

  get running(): boolean { return !this.stopped; }

  private sleep(ms: number): Promise<void> {
    if (this.stopped || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() { clearTimeout(t); resolve(); }
      this.wake = () => { this.wake = null; done(); };
    });
  }

  private position(): ShardPosition {
    return this.lastSeq === null ? this.d.start : { type: 'AFTER_SEQUENCE_NUMBER', seq: this.lastSeq };
  }

  private async save(ck: Omit<ShardCheckpoint, 'at'>, ids: readonly string[]): Promise<boolean> {
    const at = this.now();
    let ok: boolean;
    try {
      ok = await this.d.store.save(this.d.shardId, { ...ck, at }, ids);
    } catch (err) {
      this.d.log.warn({ shardId: this.d.shardId, err }, 'Kinesis checkpoint not saved: leaving the shard');
      return false;
    }
    if (!ok) {
      this.d.log.info({ shardId: this.d.shardId }, 'Kinesis shard taken over by another node: leaving it');
      return false;
    }
    this.d.metrics.checkpointed(this.d.accountSid, this.d.shardId, at);
    return true;
  }

  private async run(): Promise<void> {
    const { api, timing, shardId, log } = this.d;
    let iterator: string | null = null;
    let backoff = timing.backoffMs;
    let lastCall = 0;
    const failed = async (err: Error, op: string) => {
      if (THROTTLE_ERRORS.has(err.name)) {
        log.debug({ shardId, op, err: err.name }, 'Kinesis throttled: backing off');
      } else if (err.name === 'ExpiredIteratorException') {
        log.info({ shardId }, 'Kinesis iterator expired: asking for a new one');
        iterator = null;
        return; // a fresh iterator at once: nothing is wrong with the stream
      } else {
        this.d.onUnreadable(err, op);
        iterator = null;
      }
      await this.sleep(backoff);
      backoff = Math.min(timing.maxBackoffMs, backoff * 2);
    };
    while (!this.stopped) {
      if (iterator === null) {
        try {
          iterator = await api.iterator(shardId, this.position());
        } catch (err) {
          await failed(err as Error, 'GetShardIterator');
          continue;
        }
        if (iterator === null) break; // nothing more to read in a closed shard
      }
      await this.sleep(lastCall + timing.minGapMs - this.now());
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- stop() may have run during the await
      if (this.stopped) break;
      lastCall = this.now();
      let res;
      try {
        res = await api.records(iterator, timing.batchLimit);
      } catch (err) {
        await failed(err as Error, 'GetRecords');
        continue;
      }
      backoff = timing.backoffMs;
      this.d.onReadable();
      if (res.millisBehind !== null) this.d.metrics.behind(this.d.accountSid, shardId, res.millisBehind);
      if (res.records.length > 0) {
        const applied = await this.d.applier.apply(res.records);
        if (applied.lastSeq !== null) this.lastSeq = applied.lastSeq;
        if ((applied.lastSeq !== null || applied.ids.length > 0)
          && !(await this.save({ seq: this.lastSeq, finished: false }, applied.ids))) return;
        if (applied.retry) {
          iterator = null; // read again after the last record fully applied
          await this.sleep(timing.maxBackoffMs);
          continue;
        }
      }
      if (res.next === null) {
        if (await this.save({ seq: this.lastSeq, finished: true }, [])) {
          log.info({ shardId }, 'Kinesis shard closed and read to its end');
          this.d.onFinished(shardId);
        }
        return;
      }
      iterator = res.next;
      if (res.records.length === 0) await this.sleep(timing.pollMs);
    }
    // stopped: what was applied is already checkpointed (save after every batch)
  }
}
