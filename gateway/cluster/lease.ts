// Periodic jobs that must run once per interval in the whole cluster (the long-call sweep).
// Each node tries every interval/4 to take `lease:<name>` with SET NX PX <interval>; the lease
// is never released early, so two runs anywhere are at least one interval apart and at most
// 1.25 intervals apart while some node is up. Without Redis nobody holds the lease: the job
// pauses rather than running on every node at once.
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Keys } from './keys.js';

export type LeaseRunner = (name: string, intervalMs: number, fn: () => Promise<void> | void) => () => void;

/** Single node: a plain interval. */
export function localLease(log: Logger): LeaseRunner {
  return (name, intervalMs, fn) => {
    const timer = setInterval(() => {
      void Promise.resolve().then(fn).catch((err: unknown) => log.warn({ lease: name, err }, 'periodic job failed'));
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  };
}

export function redisLease(redis: Redis, keys: Keys, nodeId: string, log: Logger, isReady: () => boolean): LeaseRunner {
  return (name, intervalMs, fn) => {
    let running = false;
    const tick = async () => {
      if (running || !isReady()) return;
      running = true;
      try {
        const got = await redis.set(keys.lease(name), nodeId, 'PX', intervalMs, 'NX');
        if (got !== 'OK') return;
        log.debug({ lease: name }, 'lease taken: running');
        await fn();
      } catch (err) {
        log.warn({ lease: name, err }, 'leased job failed');
      } finally {
        running = false;
      }
    };
    const timer = setInterval(() => void tick(), Math.max(50, Math.floor(intervalMs / 4)));
    timer.unref();
    return () => clearInterval(timer);
  };
}
