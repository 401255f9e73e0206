// Agent events from Amazon Kinesis (contract section 9). The reading runs in a child process
// (kinesis-worker.ts), out of the media path's way: nice 10 and, when the gateway is pinned to
// some of the machine's CPUs, on the others (as the archive's ffmpeg); this side applies the CTI events the worker mapped
// (they touch the calls, which live here), answers each batch so that the worker checkpoints
// after the apply, and owns the metrics, log lines and alarms. A worker that dies is started
// again with back-off and raises an alarm; recording never depends on it. server.ts loads this
// module only when a source has a stream.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { DataSource } from '../config-types.js';
import type { CtiEvent } from '../../recorder/call-states.js';
import { LEASE_TTL_MS } from './redis-store.js';
import { createKinesisMetrics, type KinesisMetrics } from './kinesis-metrics.js';
import { EventApplier, RefusedEvent, RetryLater, type DispatchBatch } from './event-applier.js';
import { ApiError } from '../api/errors.js';
import { DEFAULT_TIMING, type SourceTiming } from './kinesis-source.js';
import type { KinesisSettings } from './kinesis-config.js';
import type { FromWorker, ToWorker, WorkerInit } from './worker-protocol.js';
import { backgroundLaunch } from '../../recorder/background-launch.js';

export interface KinesisOptions extends Partial<SourceTiming> {
  leaseTtlMs?: number;
  /** benchmarks: each applied CloudEvent id with its record's arrival time (ms) */
  onApplied?: (id: string, arrivalMs: number) => void;
  /** first wait before a dead worker is started again; doubles up to 60 s */
  restartMs?: number;
  /** tests: the first worker throws after this many batches were answered */
  crashAfterAcks?: number;
}

export interface KinesisDeps {
  sources: readonly DataSource[];
  nodeId: string;
  recordingsDir: string;
  log: Logger;
  registry: Registry;
  /** the CTI entry point (the same as POST /v1/cti/events) */
  dispatch: (ev: CtiEvent) => Promise<void>;
  /**
   * single node: the same for a batch of events (CallControl.applyInBatch), completed by
   * `finish` (one catalog query for the published recordings it re-attributes); absent in
   * cluster mode, where each event goes to its call's owner
   */
  batch?: () => DispatchBatch;
  raiseUnreadable: (message: string, details: Record<string, unknown>) => void;
  /** cluster mode: Redis (the worker opens its own connection) and the key prefix; null on a single node */
  redis: { url: string; prefix: string } | null;
}

export interface KinesisConsumer {
  /** worker starts so far (1 + restarts) */
  readonly starts: number;
  stop(): Promise<void>;
}

/** Names a source's progress: its account and stream (two accounts may share a stream). */
export function sourceKey(accountSid: string, k: KinesisSettings): string {
  const h = createHash('sha256').update(`${k.streamName}\n${k.region}\n${k.endpoint ?? ''}`).digest('hex').slice(0, 12);
  return `${accountSid}-${k.streamName.slice(0, 64)}-${h}`;
}

/** The CTI entry point's answers as the applier understands them. */
function classified(dispatch: (ev: CtiEvent) => Promise<void>): (ev: CtiEvent) => Promise<void> {
  return async (ev) => {
    try {
      await dispatch(ev);
    } catch (err) {
      if (err instanceof ApiError && err.status === 400) throw new RefusedEvent(err.message);
      // cluster: Redis away, the call's owner silent or lost for now: read the record again later
      if (err instanceof ApiError && err.status === 503) throw new RetryLater(err.message);
      throw err;
    }
  };
}

/**
 * The reader's priority: nice 10 (never above the gateway's own), normal class. Not SCHED_IDLE
 * as the archive's jobs: someone waits for these events (applied within 1 s), and a SCHED_IDLE
 * task gets almost nothing while other work wants its CPU (BENCHMARKS.md, "Out of the media
 * path's way": autogroups); at nice 10 it weighs about a tenth of the media thread where both
 * want one CPU, a few percent of one CPU being what it needs at 1 000 events/s.
 */
const READER_NICE = 10;

/**
 * The reader's process: `node` on kinesis-worker.js beside this file (compiled), or from the
 * sources (tests, tsx) on the .ts file with tsx; under `taskset -c` on the CPUs the gateway is
 * not pinned to when it is pinned to some of them only (backgroundLaunch: decided once, at start-up;
 * the launcher execs node in the same process). An IPC channel with `advanced` serialization (the
 * structured clone, as a worker thread's messages); its output goes to the gateway's.
 */
function spawnReader(): ChildProcess {
  const fromSource = import.meta.url.endsWith('.ts');
  const file = fileURLToPath(new URL(fromSource ? './kinesis-worker.ts' : './kinesis-worker.js', import.meta.url));
  // the gateway's node flags (--enable-source-maps, a --cpu-prof of a benchmark) but no debugger port
  const flags = fromSource ? ['--import', import.meta.resolve('tsx')] : process.execArgv.filter((a) => !a.startsWith('--inspect'));
  const { cpus } = backgroundLaunch();
  const argv = [...(cpus !== null ? ['taskset', '-c', cpus] : []), process.execPath, ...flags, file];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
  if (child.pid !== undefined) {
    try {
      os.setPriority(child.pid, Math.max(READER_NICE, os.getPriority()));
    } catch {
      // not allowed here: it runs at the gateway's priority
    }
  }
  return child;
}

const MAX_RESTART_MS = 60_000;
/** a worker that ran this long without dying starts the back-off over */
const HEALTHY_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

export function startKinesis(deps: KinesisDeps, opts: KinesisOptions = {}): KinesisConsumer | null {
  const dispatch = classified(deps.dispatch);
  const configured = deps.sources.filter((s): s is DataSource & { kinesis: KinesisSettings } => s.kinesis !== undefined);
  if (configured.length === 0) return null;
  const metrics = createKinesisMetrics(deps.registry, configured.map((s) => s.accountSid));
  const timing: SourceTiming = { ...DEFAULT_TIMING };
  for (const k of Object.keys(DEFAULT_TIMING) as (keyof SourceTiming)[]) if (opts[k] !== undefined) timing[k] = opts[k];
  const log = deps.log.child({ component: 'kinesis' });
  const batch = deps.batch && ((): DispatchBatch => {
    const b = deps.batch!();
    return { dispatch: classified(b.dispatch), finish: b.finish };
  });
  const appliers = configured.map((src) => new EventApplier({
    accountSid: src.accountSid, dispatch, batch, metrics, onApplied: opts.onApplied,
    log: deps.log.child({ component: 'kinesis', accountSid: src.accountSid, stream: src.kinesis.streamName }),
  }));
  for (const src of configured) {
    const k = src.kinesis;
    log.info({ accountSid: src.accountSid, stream: k.streamName, region: k.region, endpoint: k.endpoint, role: k.roleArn !== null, start: k.start, cluster: deps.redis !== null },
      'Kinesis agent events: reading');
  }
  const init: WorkerInit = {
    sources: configured.map((s) => ({ accountSid: s.accountSid, key: sourceKey(s.accountSid, s.kinesis), settings: s.kinesis })),
    nodeId: deps.nodeId, recordingsDir: deps.recordingsDir, timing, leaseTtlMs: opts.leaseTtlMs ?? LEASE_TTL_MS,
    logLevel: deps.log.level, redis: deps.redis,
  };
  const restartMs = opts.restartMs ?? 1000;

  let worker: ChildProcess | null = null;
  let starts = 0;
  let backoff = restartMs;
  let stopping = false;
  let restartTimer: NodeJS.Timeout | null = null;
  let stopped: (() => void) | null = null;

  const start = (): void => {
    restartTimer = null;
    if (stopping) return;
    const startedAt = Date.now();
    const w = spawnReader();
    const wInit = starts === 0 && opts.crashAfterAcks !== undefined ? { ...init, crashAfterAcks: opts.crashAfterAcks } : init;
    starts++;
    worker = w;
    const post = (m: ToWorker): void => { if (worker === w && w.connected) w.send(m); };
    w.on('message', (m: FromWorker) => {
      if (m.t === 'hello') post({ t: 'init', init: wInit });
      else onMessage(m, post);
    });
    let ended = false;
    const onEnd = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (ended) return;
      ended = true;
      if (worker === w) worker = null;
      if (stopping) {
        stopped?.();
        return;
      }
      if (Date.now() - startedAt >= HEALTHY_MS) backoff = restartMs;
      const wait = backoff;
      backoff = Math.min(MAX_RESTART_MS, backoff * 2);
      // events it had read but not checkpointed are read again by the next one (at least once)
      const how = signal !== null ? `signal ${signal}` : `exit code ${code}`;
      const message = `Kinesis reader (child process) stopped with ${how}: started again in ${wait} ms; agent events are not applied meanwhile`;
      log.error({ code, signal, restartInMs: wait }, 'Kinesis reader exited: starting it again');
      for (const src of configured) {
        deps.raiseUnreadable(message, { accountSid: src.accountSid, stream: src.kinesis.stream, region: src.kinesis.region, op: 'worker', exitCode: code });
      }
      restartTimer = setTimeout(start, wait);
      restartTimer.unref();
    };
    w.on('error', (err) => {
      log.error({ err }, 'Kinesis reader failed');
      if (w.pid === undefined) onEnd(null, null); // not started at all: no 'exit' comes
    });
    // 'close', not 'exit': after the last of its messages too
    w.on('close', onEnd);
  };

  function onMessage(m: FromWorker, post: (m: ToWorker) => void): void {
    switch (m.t) {
      case 'batch':
        void appliers[m.source]!.apply(m.batch).then(
          (ack) => post({ t: 'ack', id: m.id, done: ack.done, applied: ack.applied }),
          // apply() catches what dispatch throws: this is a bug; the batch is read again later
          (err: unknown) => {
            log.error({ err }, 'Kinesis batch not applied');
            post({ t: 'ack', id: m.id, done: 0, applied: [] });
          },
        );
        break;
      case 'metrics':
        relayMetrics(metrics, m);
        break;
      case 'log':
        relayLog(deps.log, m.line);
        break;
      case 'cpu':
        metrics.workerCpu(m.seconds);
        break;
      case 'alarm':
        deps.raiseUnreadable(m.message, m.details);
        break;
      case 'hello': // answered in start()
      case 'stopped': // everything is written and released: the reader exits by itself
        break;
    }
  }

  start();
  return {
    get starts() { return starts; },
    async stop() {
      stopping = true;
      if (restartTimer) clearTimeout(restartTimer);
      const w = worker;
      if (w === null) return;
      const exited = new Promise<void>((resolve) => { stopped = resolve; });
      // the reader stops its shard readers (checkpoints written, leases released) and exits
      if (w.connected) w.send({ t: 'stop' } satisfies ToWorker);
      else w.kill('SIGKILL');
      const timer = setTimeout(() => {
        log.warn('Kinesis reader did not stop in time: killing it');
        w.kill('SIGKILL');
      }, STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    },
  };
}

function relayMetrics(metrics: KinesisMetrics, m: Extract<FromWorker, { t: 'metrics' }>): void {
  for (const [account, result, n] of m.results) metrics.result(account, result, n);
  for (const op of m.gauges) {
    if (op[0] === 'behind') metrics.behind(op[1], op[2], op[3]);
    else if (op[0] === 'checkpointed') metrics.checkpointed(op[1], op[2], op[3]);
    else metrics.shardDone(op[1], op[2]);
  }
}

const LEVELS: Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal',
};

/** A pino line of the worker, logged again by the main logger (its level already applied there). */
function relayLog(log: Logger, line: string): void {
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return;
  }
  const { level, msg, ...rest } = obj;
  const name = LEVELS[typeof level === 'number' ? level : 30] ?? 'info';
  log[name](rest, typeof msg === 'string' ? msg : '');
}
