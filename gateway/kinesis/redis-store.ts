// Cluster mode: a Kinesis source's progress lives in Redis, and each shard has one reader at a
// time (a lease with a TTL, renewed by its holder; a dead node's lease expires and another node
// takes the shard over). A checkpoint is written only while the writer still holds the lease,
// in one script with the applied event ids, so a node that lost its shard cannot move it back.
//
// | key                                   | type   | what                                           |
// |---------------------------------------|--------|------------------------------------------------|
// | <p>kinesis:<source>:ckpt              | hash   | shardId -> JSON ShardCheckpoint                |
// | <p>kinesis:<source>:lease:<shardId>   | string | holder node id, PX = LEASE_TTL_MS              |
// | <p>kinesis:<source>:ids               | zset   | applied CloudEvent ids (score = ms), capped    |
import type { Redis } from 'ioredis';
import { DEFAULT_RECENT_IDS, type KinesisStore, type ShardCheckpoint } from './checkpoint-store.js';

/** A dead reader's shard is free this long after its last renewal (takeover within 15 s). */
export const LEASE_TTL_MS = 8000;

const SAVE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
for i = 6, #ARGV do redis.call('ZADD', KEYS[3], ARGV[4], ARGV[i]) end
if #ARGV >= 6 then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[5]) + 1)) end
return 1`;
const ACQUIRE = `
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0`;
const RENEW = `
local r = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]); r[i] = 1 else r[i] = 0 end
end
return r`;
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export class RedisStore implements KinesisStore {
  private readonly base: string;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    sourceKey: string,
    private readonly nodeId: string,
    private readonly ttlMs = LEASE_TTL_MS,
    private readonly maxIds = DEFAULT_RECENT_IDS * 10,
  ) {
    this.base = `${prefix}kinesis:${sourceKey}:`;
  }

  private lease(shardId: string): string { return `${this.base}lease:${shardId}`; }

  async load(): Promise<Map<string, ShardCheckpoint>> {
    const all = await this.redis.hgetall(`${this.base}ckpt`);
    return new Map(Object.entries(all).map(([k, v]) => [k, JSON.parse(v) as ShardCheckpoint]));
  }

  async save(shardId: string, ck: ShardCheckpoint, appliedIds: readonly string[]): Promise<boolean> {
    const r = await this.redis.eval(SAVE, 3, this.lease(shardId), `${this.base}ckpt`, `${this.base}ids`,
      this.nodeId, shardId, JSON.stringify(ck), String(Date.now()), String(this.maxIds), ...appliedIds);
    return r === 1;
  }

  async seen(ids: readonly string[]): Promise<boolean[]> {
    if (ids.length === 0) return [];
    const scores = await this.redis.zmscore(`${this.base}ids`, ...ids);
    return scores.map((s) => s !== null);
  }

  async acquire(shardId: string): Promise<boolean> {
    return (await this.redis.eval(ACQUIRE, 1, this.lease(shardId), this.nodeId, String(this.ttlMs))) === 1;
  }

  async renew(shardIds: readonly string[]): Promise<string[]> {
    if (shardIds.length === 0) return [];
    const r = await this.redis.eval(RENEW, shardIds.length, ...shardIds.map((s) => this.lease(s)), this.nodeId, String(this.ttlMs)) as number[];
    return shardIds.filter((_, i) => r[i] !== 1);
  }

  async release(shardId: string): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.lease(shardId), this.nodeId);
  }

  async flush(): Promise<void> {}
}
