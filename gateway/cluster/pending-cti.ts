// CTI events for a call that has no stream anywhere in the cluster yet (contract section 5:
// events may arrive before the stream starts). They wait in Redis, so that whichever node gets
// the stream applies them. `pushUnlessOwned` is one Lua script: either the call already has a
// holder (returned, the caller forwards the event there) or the event is queued; a stream
// registering at the same moment registers first and takes after (NodeRegistry, then `take`),
// so an event racing the registration is either forwarded or queued and then taken. A `take`
// that fails (Redis away) leaves its events queued: they are taken when a later full sync
// registers the stream again, or expire with PENDING_CTI_TTL_MS (a warning is logged).
// Queues are per account and callSid, like every call key.
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
  /** who sent it (audit): `key:<id>`, `twilio:<AccountSid>`, `loopback` */
  actor?: string;
}

/** When an event happened: its `at`, else when it was received. */
export function eventTime(p: PendingCtiEvent): number {
  const at = typeof p.event.at === 'string' ? Date.parse(p.event.at) : NaN;
  return Number.isFinite(at) ? at : Date.parse(p.receivedAt);
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

  /** Queue an event for a call unconditionally. */
  async push(scope: string, callSid: string, e: PendingCtiEvent): Promise<void> {
    const key = this.keys.ctiPending(scope, callSid);
    await this.redis.multi().rpush(key, JSON.stringify(e)).ltrim(key, -MAX_PENDING_PER_CALL, -1).pexpire(key, PENDING_CTI_TTL_MS).exec();
  }

  /** Queue the event unless a node holds the call; returns the holders' node ids ([] = queued). */
  async pushUnlessOwned(scope: string, callSid: string, e: PendingCtiEvent): Promise<string[]> {
    const res = await this.redis.eval(PUSH_UNLESS_OWNED, 2, this.keys.call(scope, callSid), this.keys.ctiPending(scope, callSid),
      JSON.stringify(e), String(PENDING_CTI_TTL_MS), String(MAX_PENDING_PER_CALL));
    return res as string[];
  }

  /**
   * Remove and return every event waiting for a call, in the order they happened (`at`, else
   * when received; ties keep arrival order): events from several senders may arrive out of order.
   */
  async take(scope: string, callSid: string): Promise<PendingCtiEvent[]> {
    const key = this.keys.ctiPending(scope, callSid);
    const res = await this.redis.multi().lrange(key, 0, -1).del(key).exec();
    const list = (res?.[0]?.[1] as string[] | undefined) ?? [];
    const events: PendingCtiEvent[] = [];
    for (const j of list) {
      try {
        events.push(JSON.parse(j) as PendingCtiEvent);
      } catch {
        // not ours (or damaged): nothing to apply
      }
    }
    return events.map((e, i) => ({ e, i, t: eventTime(e) }))
      .sort((a, b) => (a.t - b.t) || (a.i - b.i))
      .map((x) => x.e);
  }
}
