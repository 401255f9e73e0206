// The messages between the Kinesis reader (kinesis-worker.ts, a child process: AWS SDK calls,
// records decoded and mapped, de-duplication, checkpoints, shard leases; over its IPC channel,
// `serialization: 'advanced'`, the structured clone of a worker thread's messages) and the main thread
// (kinesis-consumer.ts: applies the mapped CTI events to the calls, owns metrics, logs and
// alarms). One `batch` per GetRecords that has something to apply, answered by one `ack`; the
// worker checkpoints a batch only after its ack (contract section 9: checkpoint after apply).
import type { CtiEventType } from '../../recorder/call-states.js';
import type { EventResult } from './cloud-events.js';
import type { KinesisSettings } from './kinesis-config.js';
import type { SourceTiming } from './kinesis-source.js';

/**
 * One GetRecords' mapped CloudEvents, column by column: CloudEvent i (ids[i], arrivals[i]) has
 * counts[i] CTI events, in order, the next ones in the per-CTI-event columns (the source's
 * account is set on main). Flat arrays of strings and numbers: their structured clone (the copy
 * into the main thread, paid on both threads) costs about a quarter of one of an object per
 * event (BENCHMARKS.md, Kinesis agent events).
 */
export interface MappedBatch {
  ids: string[];
  /** the record's ApproximateArrivalTimestamp, ms (NaN when absent) */
  arrivals: number[];
  counts: number[];
  types: CtiEventType[];
  callSids: string[];
  ctiSessionIds: (string | undefined)[];
  employeeIds: (string | undefined)[];
  at: (string | undefined)[];
}

export function emptyBatch(): MappedBatch {
  return { ids: [], arrivals: [], counts: [], types: [], callSids: [], ctiSessionIds: [], employeeIds: [], at: [] };
}

export interface WorkerSource {
  accountSid: string;
  /** names its progress (sourceKey) */
  key: string;
  settings: KinesisSettings;
}

/** The first message to the reader: plain values only (structured clone). Holds the sources' secrets: never logged. */
export interface WorkerInit {
  sources: WorkerSource[];
  nodeId: string;
  recordingsDir: string;
  timing: SourceTiming;
  leaseTtlMs: number;
  /** the main logger's level: lines below it are not even sent */
  logLevel: string;
  /** cluster mode: the worker's own Redis connection for checkpoints and leases */
  redis: { url: string; prefix: string } | null;
  /** tests: throw from the worker's message handler after this many acks (a worker bug) */
  crashAfterAcks?: number;
}

/** A gauge change, in order: MillisBehindLatest, a checkpoint written (wall ms), a shard no longer read here. */
export type GaugeOp =
  | ['behind', string, string, number]
  | ['checkpointed', string, string, number]
  | ['done', string, string];

export type FromWorker =
  /** first, once: listening; answered by `init` */
  | { t: 'hello' }
  | { t: 'batch'; id: number; source: number; batch: MappedBatch }
  /** what the worker decided since the last one (per account: events by result; gauges in order) */
  | { t: 'metrics'; results: [string, EventResult, number][]; gauges: GaugeOp[] }
  | { t: 'log'; line: string }
  /** CPU time of the reader process so far (s), all its threads (process.cpuUsage) */
  | { t: 'cpu'; seconds: number }
  | { t: 'alarm'; message: string; details: Record<string, unknown> }
  | { t: 'stopped' };

export type ToWorker =
  /** once, the answer to `hello`: what to read */
  | { t: 'init'; init: WorkerInit }
  /** `done`: events of the batch handled in order (fewer than sent: apply the rest later);
   * `applied`: indices of those applied (remembered as seen with the checkpoint) */
  | { t: 'ack'; id: number; done: number; applied: number[] }
  | { t: 'stop' };
