// What the node knows of each call from CTI events, by callSid. Events may arrive before the
// stream starts or after it ended, so this state lives apart from the stream sessions and is
// forgotten only after a quiet TTL (never while a stream of the call is live).

export const CTI_EVENT_TYPES = [
  'ringing', 'connected', 'not_responding', 'hold', 'unhold', 'consult', 'conference',
  'transfer', 'wrapup', 'agent_available', 'ended',
] as const;
export type CtiEventType = (typeof CTI_EVENT_TYPES)[number];

export interface CtiEvent {
  type: CtiEventType;
  callSid: string;
  ctiSessionId?: string;
  employeeId?: string;
  /** when it happened (ISO 8601); default: when it was received */
  at?: string;
  /** set by the TaskRouter mapping: the account the event came from */
  accountSid?: string;
}

export interface CallState {
  callSid: string;
  accountSid: string | null;
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

export class CallStates {
  private readonly states = new Map<string, CallState>();

  constructor(
    private readonly ttlMs: number,
    private readonly wallNow: () => Date,
  ) {}

  get(callSid: string): CallState | undefined {
    return this.states.get(callSid);
  }

  getOrCreate(callSid: string): CallState {
    let s = this.states.get(callSid);
    if (!s) {
      s = {
        callSid, accountSid: null, ctiSessionId: null, employeeId: null, kept: false, discard: false,
        paused: false, holdSince: null, holdAlarmed: false, touchedAt: this.wallNow().getTime(),
      };
      this.states.set(callSid, s);
    }
    return s;
  }

  touch(s: CallState): void {
    s.touchedAt = this.wallNow().getTime();
  }

  all(): IterableIterator<CallState> {
    return this.states.values();
  }

  /** Forget calls untouched for the TTL that have no live stream. Returns how many. */
  expire(isLive: (callSid: string) => boolean): number {
    const cutoff = this.wallNow().getTime() - this.ttlMs;
    let n = 0;
    for (const [sid, s] of this.states) {
      if (s.touchedAt < cutoff && !isLive(sid)) {
        this.states.delete(sid);
        n++;
      }
    }
    return n;
  }

  get size(): number {
    return this.states.size;
  }
}
