// CTI events for a call that has no stream anywhere in the cluster yet (contract section 5:
// events may arrive before the stream starts). They wait in Redis, so that whichever node gets
// the stream applies them. `pushUnlessOwned` is one Lua script: either the call already has a
// holder (returned, the caller forwards the event there) or the event is queued; a stream
// registering at the same moment registers first and takes after (NodeRegistry, then `take`),
// so no event falls between the two.
import type { Redis } from 'ioredis';
import type { Keys } from './keys.js';

/** How long an event waits for its stream (a call rings for minutes, not hours). */
export const PENDING_CTI_TTL_MS = 3600 * 1000;
/** A runaway producer must not grow one list without bound. */
const MAX_PENDING_PER_CALL = 200;

export interface PendingCtiEvent {
  /** the event as the API received it (JSON body of POST /v1/cti/events) */
  event: Record<string, unknown>;
  /** node that received it, ISO time it was received */
  receivedBy: string;
  receivedAt: string;
}

const PUSH_UNLESS_OWNED = `
local owners = redis.call('HVALS', KEYS[1])
if #owners > 0 then return owners end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {}
`;

export class PendingCti {
  constructor(private readonly redis: Redis, private readonly keys: Keys) {}

  /** Queue an event for `callSid` unconditionally. */
  async push(callSid: string, e: PendingCtiEvent): Promise<void> {
    const key = this.keys.ctiPending(callSid);
    await this.redis.multi().rpush(key, JSON.stringify(e)).ltrim(key, -MAX_PENDING_PER_CALL, -1).pexpire(key, PENDING_CTI_TTL_MS).exec();
  }

  /** Queue the event unless a node holds the call; returns the holders' node ids ([] = queued). */
  async pushUnlessOwned(callSid: string, e: PendingCtiEvent): Promise<string[]> {
    const res = await this.redis.eval(PUSH_UNLESS_OWNED, 2, this.keys.call(callSid), this.keys.ctiPending(callSid),
      JSON.stringify(e), String(PENDING_CTI_TTL_MS), String(MAX_PENDING_PER_CALL));
    return res as string[];
  }

  /** Remove and return every event waiting for `callSid`, oldest first. */
  async take(callSid: string): Promise<PendingCtiEvent[]> {
    const key = this.keys.ctiPending(callSid);
    const res = await this.redis.multi().lrange(key, 0, -1).del(key).exec();
    const list = (res?.[0]?.[1] as string[] | undefined) ?? [];
    return list.map((j) => JSON.parse(j) as PendingCtiEvent);
  }
}
