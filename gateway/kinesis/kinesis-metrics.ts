// Metrics of the Kinesis consumer, registered in the gateway's registry.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { EVENT_RESULTS, type EventResult } from './cloud-events.js';

export interface KinesisMetrics {
  result(account: string, result: EventResult, n?: number): void;
  behind(account: string, shard: string, ms: number): void;
  checkpointed(account: string, shard: string, atMs: number): void;
  /** the shard is no longer read here (finished, lost, stopped) */
  shardDone(account: string, shard: string): void;
  /** put -> applied, from the record's ApproximateArrivalTimestamp */
  applyLag(ms: number): void;
  /** CPU time of the reader process so far (s); a new process starts from 0 */
  workerCpu(seconds: number): void;
}

export function createKinesisMetrics(registry: Registry, accounts: readonly string[], now: () => number = Date.now): KinesisMetrics {
  const records = new Counter({
    name: 'gateway_kinesis_records_total',
    help: 'Kinesis agent events by result (not_json counts whole records): applied, duplicate (same CloudEvent id), ignored (unmapped or not a voice task), wrong_account, not_json, unknown_type, invalid, failed',
    labelNames: ['account', 'result'], registers: [registry],
  });
  for (const account of accounts) for (const result of EVENT_RESULTS) records.inc({ account, result }, 0);
  const behind = new Gauge({
    name: 'gateway_kinesis_millis_behind_latest', help: 'MillisBehindLatest of the last GetRecords, per shard read by this node',
    labelNames: ['account', 'shard'], registers: [registry],
  });
  const checkpoints = new Map<string, { account: string; shard: string; at: number }>();
  new Gauge({
    name: 'gateway_kinesis_checkpoint_age_seconds', help: 'time since the last checkpoint of each shard read by this node',
    labelNames: ['account', 'shard'], registers: [registry],
    collect() {
      this.reset();
      const t = now();
      for (const c of checkpoints.values()) this.set({ account: c.account, shard: c.shard }, Math.max(0, (t - c.at) / 1000));
    },
  });
  const lag = new Histogram({
    name: 'gateway_kinesis_apply_lag_seconds', help: 'from a record reaching Kinesis (ApproximateArrivalTimestamp) to its events being applied',
    buckets: [0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10, 30, 60],
    registers: [registry],
  });
  let cpuBase = 0;
  let cpuLast = 0;
  new Counter({
    name: 'gateway_kinesis_worker_cpu_seconds_total', help: 'CPU time of the Kinesis reader (a child process, every thread of it), across its restarts',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(cpuBase + cpuLast);
    },
  });
  return {
    workerCpu: (s) => {
      if (s < cpuLast) cpuBase += cpuLast; // a new worker
      cpuLast = s;
    },
    result: (account, result, n = 1) => records.inc({ account, result }, n),
    behind: (account, shard, ms) => behind.set({ account, shard }, ms),
    checkpointed: (account, shard, at) => { checkpoints.set(`${account}/${shard}`, { account, shard, at }); },
    shardDone: (account, shard) => {
      checkpoints.delete(`${account}/${shard}`);
      behind.remove({ account, shard });
    },
    applyLag: (ms) => { if (Number.isFinite(ms)) lag.observe(Math.max(0, ms) / 1000); },
  };
}
