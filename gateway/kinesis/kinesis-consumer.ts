// Agent events from Amazon Kinesis (contract section 9): one KinesisSource per data source with
// a `kinesis` setting. server.ts loads this module only when one is configured (the AWS SDK is
// not loaded otherwise).
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import type { DataSource } from '../config-types.js';
import type { CtiEvent } from '../../recorder/call-states.js';
import { FileStore, type KinesisStore } from './checkpoint-store.js';
import { RedisStore, LEASE_TTL_MS } from './redis-store.js';
import { createKinesisApi } from './kinesis-api.js';
import { createKinesisMetrics } from './kinesis-metrics.js';
import { EventApplier, RefusedEvent, RetryLater } from './event-applier.js';
import { ApiError } from '../api/errors.js';
import { DEFAULT_TIMING, KinesisSource, type SourceTiming } from './kinesis-source.js';
import type { KinesisSettings } from './kinesis-config.js';

export interface KinesisOptions extends Partial<SourceTiming> {
  leaseTtlMs?: number;
  /** benchmarks: each applied CloudEvent id with its record's arrival time (ms) */
  onApplied?: (id: string, arrivalMs: number) => void;
}

export interface KinesisDeps {
  sources: readonly DataSource[];
  nodeId: string;
  recordingsDir: string;
  log: Logger;
  registry: Registry;
  /** the CTI entry point (the same as POST /v1/cti/events) */
  dispatch: (ev: CtiEvent) => Promise<void>;
  raiseUnreadable: (message: string, details: Record<string, unknown>) => void;
  /** cluster mode: Redis and the key prefix; null on a single node */
  redis: { client: Redis; prefix: string } | null;
}

export interface KinesisConsumer {
  sources: KinesisSource[];
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

export function startKinesis(deps: KinesisDeps, opts: KinesisOptions = {}): KinesisConsumer {
  const dispatch = classified(deps.dispatch);
  const configured = deps.sources.filter((s): s is DataSource & { kinesis: KinesisSettings } => s.kinesis !== undefined);
  const metrics = createKinesisMetrics(deps.registry, configured.map((s) => s.accountSid));
  const timing: SourceTiming = { ...DEFAULT_TIMING };
  for (const k of Object.keys(DEFAULT_TIMING) as (keyof SourceTiming)[]) if (opts[k] !== undefined) timing[k] = opts[k];
  const sources = configured.map((src) => {
    const k = src.kinesis;
    const key = sourceKey(src.accountSid, k);
    const log = deps.log.child({ component: 'kinesis', accountSid: src.accountSid, stream: k.streamName });
    const store: KinesisStore = deps.redis
      ? new RedisStore(deps.redis.client, deps.redis.prefix, key, deps.nodeId, opts.leaseTtlMs ?? LEASE_TTL_MS)
      : new FileStore(FileStore.fileFor(deps.recordingsDir, key), (err) => log.error({ err }, 'Kinesis checkpoint file not written'));
    const applier = new EventApplier({ accountSid: src.accountSid, store, dispatch, metrics, log, onApplied: opts.onApplied });
    const source = new KinesisSource({
      accountSid: src.accountSid, settings: k, api: createKinesisApi(k, deps.nodeId), store, applier, metrics, log, timing,
      raiseUnreadable: deps.raiseUnreadable,
    });
    log.info({ region: k.region, endpoint: k.endpoint, role: k.roleArn !== null, start: k.start, cluster: deps.redis !== null },
      'Kinesis agent events: reading');
    source.start();
    return source;
  });
  return {
    sources,
    async stop() {
      await Promise.all(sources.map((s) => s.stop()));
    },
  };
}
