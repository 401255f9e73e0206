// The node's two Redis connections (commands, and pub/sub which blocks a connection) and whether
// Redis can be relied on right now. Commands never queue while Redis is away
// (enableOfflineQueue: false): they fail at once, so an API call answers 503 quickly and
// nothing on a stream's path ever waits for Redis. ioredis reconnects by itself; `onReady`
// listeners re-subscribe and re-sync each time it does.
import { Redis } from 'ioredis';
import type { Logger } from 'pino';

export interface RedisLinkOptions {
  url: string;
  log: Logger;
  /** a command slower than this fails (ms) */
  commandTimeoutMs?: number;
}

export class RedisLink {
  readonly cmd: Redis;
  readonly sub: Redis;
  private readonly readyListeners: (() => void)[] = [];
  private readonly lostListeners: (() => void)[] = [];
  private wasReady = false;
  private closing = false;

  constructor(opts: RedisLinkOptions) {
    const common = {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: opts.commandTimeoutMs ?? 1000,
      connectTimeout: 2000,
      // reconnect quickly: /readyz stays 503 until we are back
      retryStrategy: (times: number) => Math.min(100 * times, 1000),
      autoResubscribe: false,
      lazyConnect: true,
    } as const;
    this.cmd = new Redis(opts.url, { ...common, connectionName: 'gateway-cmd' });
    this.sub = new Redis(opts.url, { ...common, connectionName: 'gateway-sub' });
    for (const c of [this.cmd, this.sub]) {
      // ioredis logs unhandled 'error' events loudly; the state change is what matters here
      c.on('error', (err: Error) => opts.log.debug({ err }, 'redis connection error'));
      c.on('ready', () => this.changed());
      c.on('close', () => this.changed());
      c.on('end', () => this.changed());
    }
  }

  /** Both connections usable. */
  get ready(): boolean {
    return this.cmd.status === 'ready' && this.sub.status === 'ready';
  }

  onReady(l: () => void): void {
    this.readyListeners.push(l);
  }

  onLost(l: () => void): void {
    this.lostListeners.push(l);
  }

  connect(): void {
    // lazyConnect: listeners are attached before the first attempt. A failed attempt also comes
    // as an 'error' event (logged above) and ioredis retries: the promise adds nothing.
    this.cmd.connect().catch(() => undefined);
    this.sub.connect().catch(() => undefined);
  }

  private changed(): void {
    if (this.closing) return;
    const now = this.ready;
    if (now === this.wasReady) return;
    this.wasReady = now;
    for (const l of now ? this.readyListeners : this.lostListeners) l();
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([this.cmd.quit(), this.sub.quit()]);
    this.cmd.disconnect();
    this.sub.disconnect();
  }
}
