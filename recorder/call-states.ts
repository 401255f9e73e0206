// What the node knows of each call from CTI events, keyed by account and callSid together (a
// call of account A never shares state with a call of account B, contract section 7). Events may
// arrive before the stream starts or after it ended, so this state lives apart from the stream
// sessions and is forgotten after a quiet TTL (never while a stream of the call is live). The
// number of states is capped: events from a flood must not grow the heap without bound; the
// least recently touched call that has no live stream and no pause is forgotten first.

export const CTI_EVENT_TYPES = [
  'ringing', 'connected', 'not_responding', 'hold', 'unhold', 'consult', 'conference',
  'transfer', 'wrapup', 'agent_available', 'ended',
] as const;
export type CtiEventType = (typeof CTI_EVENT_TYPES)[number];

/** Default cap on the calls the node remembers (each state is a few hundred bytes). */
export const MAX_CALL_STATES = 50_000;
/** How far an eviction looks for a forgettable call before giving up (bounded work per event). */
const EVICT_SCAN = 1000;
/**
 * A full table forgets this share of the cap at once (at least one call): each eviction walks
 * the Map from its oldest entry, over the deleted entries the previous ones left until the next
 * rehash, which cost ~40 us per new call at 1000 new calls/s (BENCHMARKS.md, Kinesis agent events);
 * in bulk that walk is paid once per `max / EVICT_SHARE` new calls.
 */
const EVICT_SHARE = 100;

export interface CtiEvent {
  type: CtiEventType;
  callSid: string;
  ctiSessionId?: string;
  employeeId?: string;
  /** when it happened (ISO 8601); default: when it was received */
  at?: string;
  /** the account the event is for (signed TaskRouter account, the API key's source, or given) */
  accountSid?: string;
}

export interface CallState {
  /** the call's account scope (see CallControl.scopeOf); '' when no data source is configured */
  accountSid: string;
  callSid: string;
  ctiSessionId: string | null;
  employeeId: string | null;
  /** `connected` seen: the call's audio is kept whatever comes later */
  kept: boolean;
  /** `not_responding` before `connected`: the call's audio is deleted */
  discard: boolean;
  paused: boolean;
  /** wall ms the current hold began; null when not on hold */
  holdSince: number | null;
  /** long_hold already raised for the current hold */
  holdAlarmed: boolean;
  /** wall ms of the last change (TTL) */
  touchedAt: number;
}

/** Every remembered call is live or paused and the cap is reached: the event is refused. */
export class TooManyCallsError extends Error {
  override name = 'TooManyCallsError';
}

export function callKey(accountSid: string, callSid: string): string {
  return `${accountSid}:${callSid}`;
}

export class CallStates {
  /** insertion order = least recently touched first */
  private readonly states = new Map<string, CallState>();

  constructor(
    private readonly ttlMs: number,
    private readonly wallNow: () => Date,
    private readonly max = MAX_CALL_STATES,
  ) {}

  get(accountSid: string, callSid: string): CallState | undefined {
    return this.states.get(callKey(accountSid, callSid));
  }

  /** `isLive` tells whether a call has a live stream (such calls are never evicted). */
  getOrCreate(accountSid: string, callSid: string, isLive: (s: CallState) => boolean = () => false): CallState {
    const key = callKey(accountSid, callSid);
    let s = this.states.get(key);
    if (!s) {
      if (this.states.size >= this.max) this.evict(isLive, Math.max(1, Math.floor(this.max / EVICT_SHARE)));
      s = {
        accountSid, callSid, ctiSessionId: null, employeeId: null, kept: false, discard: false,
        paused: false, holdSince: null, holdAlarmed: false, touchedAt: this.wallNow().getTime(),
      };
      this.states.set(key, s);
    }
    return s;
  }

  /** Forget up to `n` of the least recently touched calls that have no live stream and no pause. */
  private evict(isLive: (s: CallState) => boolean, n: number): void {
    let skippedCount = 0;
    let evicted = 0;
    const skipped: [string, CallState][] = [];
    try {
      for (const [key, s] of this.states) {
        if (s.paused || isLive(s)) {
          if (skippedCount++ >= EVICT_SCAN) break;
          skipped.push([key, s]);
          continue;
        }
        this.states.delete(key);
        if (++evicted >= n) return;
      }
      if (evicted > 0) return;
    } finally {
      // move what must stay to the back, so the next eviction does not scan it again
      for (const [key, s] of skipped) {
        this.states.delete(key);
        this.states.set(key, s);
      }
    }
    throw new TooManyCallsError(`the node already remembers ${this.states.size} calls, all live or paused; refusing state for another`);
  }

  touch(s: CallState): void {
    s.touchedAt = this.wallNow().getTime();
    const key = callKey(s.accountSid, s.callSid);
    if (this.states.get(key) === s) {
      this.states.delete(key);
      this.states.set(key, s);
    }
  }

  all(): IterableIterator<CallState> {
    return this.states.values();
  }

  /** Forget calls untouched for the TTL that have no live stream. Returns how many. */
  expire(isLive: (s: CallState) => boolean): number {
    const cutoff = this.wallNow().getTime() - this.ttlMs;
    let n = 0;
    for (const [key, s] of this.states) {
      if (s.touchedAt < cutoff && !isLive(s)) {
        this.states.delete(key);
        n++;
      }
    }
    return n;
  }

  get size(): number {
    return this.states.size;
  }
}
