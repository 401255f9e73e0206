// The Kinesis reader, a child process of the gateway (started by kinesis-consumer.ts, at a low
// CPU priority and off the CPUs the gateway is pinned to): everything about reading the streams
// runs here, out of the media path's process: the AWS SDK calls, records decoded and mapped,
// de-duplication, checkpoints, and in cluster mode the shard leases on its own Redis connection
// (they stay renewed however busy the media thread is). The gateway gets the mapped CTI events,
// one message per GetRecords over the IPC channel, and answers when they are applied; only then
// is the checkpoint moved (worker-protocol.ts). When the gateway goes (SIGKILL included) the
// channel closes and this process exits at once, leases unreleased, as a worker thread died
// with its process: another node takes the shards when the leases expire.
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

if (process.send === undefined) throw new Error('kinesis-worker.ts runs as a child process with an IPC channel (kinesis-consumer.ts)');
const send = process.send.bind(process);
let stopping = false;
// the gateway gone (SIGKILL, crash): nothing here may go on reading or holding leases
process.on('disconnect', () => { if (!stopping) process.exit(0); });
// the gateway's process group gets its SIGTERM / SIGINT too (a terminal, perf-ratio): the
// gateway stops this reader itself ('stop'), after its own last batch
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => undefined);
/** a message whose channel is gone is dropped: the gateway is gone and 'disconnect' exits */
const post = (m: FromWorker): void => { if (process.connected) send(m); };

// the settings (secrets included) come as a message, never in argv or the environment; asked
// for once this side listens (a message that comes before a listener is lost)
const init = await new Promise<WorkerInit>((resolve) => {
  const first = (m: ToWorker): void => {
    if (m.t === 'stop') process.exit(0); // stopped before it started: nothing read, nothing to write
    if (m.t !== 'init') return;
    process.off('message', first);
    resolve(m.init);
  };
  process.on('message', first);
  post({ t: 'hello' });
});

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
function sendBatch(source: number, batch: MappedBatch): Promise<BatchAck> {
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

// listening before the set-up's awaits: a message with no listener is lost (a 'stop' while
// Redis connects waits for the set-up, then stops what it started)
let setUp!: () => void;
const ready = new Promise<void>((resolve) => { setUp = resolve; });
process.on('message', (m: ToWorker) => {
  if (m.t === 'ack') {
    const resolve = pending.get(m.id);
    pending.delete(m.id);
    resolve?.({ done: m.done, applied: m.applied });
    if (init.crashAfterAcks !== undefined && ++acks >= init.crashAfterAcks) {
      throw new Error(`Kinesis worker: crashing after ${acks} acks (test)`);
    }
  } else if (m.t === 'stop' && !stopping) {
    stopping = true;
    void (async () => {
      await ready;
      clearInterval(cpuTimer);
      await Promise.all(sources.map((s) => s.stop()));
      metrics.flush();
      // leaving: a Redis that cannot take QUIT is disconnected below all the same
      await redis?.quit().catch(() => undefined);
      redis?.disconnect();
      // everything is written and released; an open socket of the SDK's would keep the process up
      if (!process.connected) process.exit(0);
      send({ t: 'stopped' }, () => process.exit(0));
    })();
  }
});
const redis = init.redis === null ? null : await connectRedis(init.redis.url);
const sources = init.sources.map((src, i) => {
  const slog = log.child({ component: 'kinesis', accountSid: src.accountSid, stream: src.settings.streamName });
  const store: KinesisStore = init.redis !== null && redis !== null
    ? new RedisStore(redis, init.redis.prefix, src.key, init.nodeId, init.leaseTtlMs)
    : new FileStore(FileStore.fileFor(init.recordingsDir, src.key), (err) => slog.error({ err }, 'Kinesis checkpoint file not written'));
  const applier = new RecordMapper({ accountSid: src.accountSid, store, metrics, log: slog, send: (batch) => sendBatch(i, batch) });
  const source = new KinesisSource({
    accountSid: src.accountSid, settings: src.settings, api: createKinesisApi(src.settings, init.nodeId), store, applier, metrics,
    log: slog, timing: init.timing,
    raiseUnreadable: (message, details) => post({ t: 'alarm', message, details }),
  });
  source.start();
  return source;
});

// what reading the streams costs this node, apart from the gateway's process
// (gateway_kinesis_worker_cpu_seconds_total): this process, every thread of it (user + system)
const CPU_MS = 5000;
const cpuTimer = setInterval(() => {
  const u = process.cpuUsage();
  post({ t: 'cpu', seconds: (u.user + u.system) / 1e6 });
}, CPU_MS);
cpuTimer.unref();
setUp();
