// The Kinesis worker thread (started by kinesis-consumer.ts): everything about reading the
// streams runs here, off the media thread: the AWS SDK calls, records decoded and mapped,
// de-duplication, checkpoints, and in cluster mode the shard leases on its own Redis connection
// (they stay renewed however busy the media thread is; a SIGKILLed node loses them with the
// process). The main thread gets the mapped CTI events, one message per GetRecords, and answers
// when they are applied; only then is the checkpoint moved (worker-protocol.ts).
import { readFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { Redis } from 'ioredis';
import pino from 'pino';
import { FileStore, type KinesisStore } from './checkpoint-store.js';
import { RedisStore } from './redis-store.js';
import { createKinesisApi } from './kinesis-api.js';
import { KinesisSource } from './kinesis-source.js';
import { RecordMapper, type BatchAck } from './record-mapper.js';
import type { KinesisMetrics } from './kinesis-metrics.js';
import type { EventResult } from './cloud-events.js';
import type { FromWorker, GaugeOp, MappedBatch, ToWorker, WorkerInit } from './worker-protocol.js';

const port = parentPort;
if (port === null) throw new Error('kinesis-worker.ts runs as a worker thread');
const init = workerData as WorkerInit;
const post = (m: FromWorker): void => port.postMessage(m);

// log lines go to the main thread's logger (its destination, its bindings)
const log = pino({ level: init.logLevel, base: null, timestamp: false }, { write: (line: string) => post({ t: 'log', line }) });

/** Metrics are the main thread's: counts and gauge changes are sent in one message every FLUSH_MS. */
const FLUSH_MS = 100;
class MetricsRelay implements KinesisMetrics {
  private results = new Map<string, number>();
  private gauges: GaugeOp[] = [];
  private timer: NodeJS.Timeout | null = null;
  result(account: string, result: EventResult, n = 1): void {
    const k = `${account} ${result}`;
    this.results.set(k, (this.results.get(k) ?? 0) + n);
    this.schedule();
  }
  behind(account: string, shard: string, ms: number): void { this.gauge(['behind', account, shard, ms]); }
  checkpointed(account: string, shard: string, at: number): void { this.gauge(['checkpointed', account, shard, at]); }
  shardDone(account: string, shard: string): void { this.gauge(['done', account, shard]); }
  applyLag(): void {} // measured where events are applied: the main thread
  workerCpu(): void {} // sent by the worker itself
  private gauge(op: GaugeOp): void {
    this.gauges.push(op);
    this.schedule();
  }
  private schedule(): void {
    this.timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.results.size === 0 && this.gauges.length === 0) return;
    const results = [...this.results].map(([k, n]): [string, EventResult, number] => {
      const [account, result] = k.split(' ') as [string, EventResult];
      return [account, result, n];
    });
    post({ t: 'metrics', results, gauges: this.gauges });
    this.results = new Map();
    this.gauges = [];
  }
}
const metrics = new MetricsRelay();

let nextBatch = 0;
const pending = new Map<number, (ack: BatchAck) => void>();
let acks = 0;
function send(source: number, batch: MappedBatch): Promise<BatchAck> {
  const id = nextBatch++;
  return new Promise((resolve) => {
    pending.set(id, resolve);
    post({ t: 'batch', id, source, batch });
  });
}

async function connectRedis(url: string): Promise<Redis> {
  // like the node's own connections: a command fails at once while Redis is away (the source
  // retries on its next tick) instead of queueing
  const redis = new Redis(url, {
    enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 1000, connectTimeout: 2000,
    retryStrategy: (times: number) => Math.min(100 * times, 1000), connectionName: 'gateway-kinesis',
  });
  redis.on('error', (err: Error) => log.debug({ err }, 'Kinesis worker: redis connection error'));
  // the first claims would fail while connecting: wait for it, a few seconds at most
  await new Promise<void>((resolve) => {
    const t = setTimeout(resolve, 5000);
    redis.once('ready', () => { clearTimeout(t); resolve(); });
  });
  return redis;
}

const redis = init.redis === null ? null : await connectRedis(init.redis.url);
const sources = init.sources.map((src, i) => {
  const slog = log.child({ component: 'kinesis', accountSid: src.accountSid, stream: src.settings.streamName });
  const store: KinesisStore = init.redis !== null && redis !== null
    ? new RedisStore(redis, init.redis.prefix, src.key, init.nodeId, init.leaseTtlMs)
    : new FileStore(FileStore.fileFor(init.recordingsDir, src.key), (err) => slog.error({ err }, 'Kinesis checkpoint file not written'));
  const applier = new RecordMapper({ accountSid: src.accountSid, store, metrics, log: slog, send: (batch) => send(i, batch) });
  const source = new KinesisSource({
    accountSid: src.accountSid, settings: src.settings, api: createKinesisApi(src.settings, init.nodeId), store, applier, metrics,
    log: slog, timing: init.timing,
    raiseUnreadable: (message, details) => post({ t: 'alarm', message, details }),
  });
  source.start();
  return source;
});

// what reading the streams costs this node, apart from the media thread
// (gateway_kinesis_worker_cpu_seconds_total); utime + stime in clock ticks (100 per second)
const CPU_MS = 5000;
const cpuTimer = setInterval(() => {
  let text: string;
  try {
    // synchronous on purpose: /proc/thread-self is the thread that reads it (a libuv pool thread
    // for an asynchronous read); a few hundred bytes from procfs, on this thread, not the media one
    text = readFileSync('/proc/thread-self/stat', 'utf8');
  } catch {
    clearInterval(cpuTimer); // not Linux: no such figure
    return;
  }
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  post({ t: 'cpu', seconds: (Number(f[11]) + Number(f[12])) / 100 });
}, CPU_MS);
cpuTimer.unref();

port.on('message', (m: ToWorker) => {
  if (m.t === 'ack') {
    const resolve = pending.get(m.id);
    pending.delete(m.id);
    resolve?.({ done: m.done, applied: m.applied });
    if (init.crashAfterAcks !== undefined && ++acks >= init.crashAfterAcks) {
      throw new Error(`Kinesis worker: crashing after ${acks} acks (test)`);
    }
  } else {
    void (async () => {
      clearInterval(cpuTimer);
      await Promise.all(sources.map((s) => s.stop()));
      metrics.flush();
      await redis?.quit().catch(() => undefined);
      redis?.disconnect();
      post({ t: 'stopped' });
      port.close();
    })();
  }
});
