// The maintenance sweep (contract section 5): every MAINTENANCE_INTERVAL_S, close calls older
// than LONG_CALL_DURATION_MIN (alarm `long_call`, closeReason `long_call`), raise `long_hold`
// for holds running too long, and forget stale CTI call state. `runOnce` is a plain method:
// cluster mode runs it under a Redis lease so that one node sweeps per interval. `runRetention`
// (RETENTION_DAYS, retention.ts) runs on the lease holder only: the catalog lists the whole cluster.
import type { Alarms } from './alarms.js';
import type { CallControl } from './call-control.js';
import type { CallStates } from './call-states.js';
import type { Recorder } from './recorder.js';
import type { SourceSettings } from './source-settings.js';
import type { Retention } from './retention.js';

export interface MaintenanceDeps {
  recorder: Recorder;
  control: CallControl;
  states: CallStates;
  alarms: Alarms;
  settingsFor: (accountSid: string) => SourceSettings;
  /** wall clock: call age is measured from the stream's startedAt */
  wallNow: () => Date;
  retention?: Retention;
}

export interface SweepResult {
  longCalls: string[];
  expiredStates: number;
}

export class Maintenance {
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly deps: MaintenanceDeps) {}

  runOnce(): SweepResult {
    const now = this.deps.wallNow().getTime();
    const longCalls: string[] = [];
    for (const { session, owner } of this.deps.recorder.liveStreams()) {
      const limitMin = this.deps.settingsFor(session.id.accountSid).longCallDurationMin;
      const ageMs = now - session.startedAt.getTime();
      if (ageMs <= limitMin * 60_000) continue;
      longCalls.push(session.id.streamSid);
      this.deps.alarms.raise('long_call', {
        message: `stream ${session.id.streamSid} of call ${session.id.callSid} has run ${Math.round(ageMs / 60_000)} min ` +
          `(LONG_CALL_DURATION_MIN ${limitMin}): closing it`,
        accountSid: session.id.accountSid,
        callSid: session.id.callSid,
        streamSid: session.id.streamSid,
        details: { startedAt: session.startedAt.toISOString(), ageMs, limitMin },
      });
      owner.endByServer('long_call');
    }
    for (const s of this.deps.states.all()) this.deps.control.checkHold(s, now);
    const expiredStates = this.deps.states.expire((s) => this.deps.control.streamsOf(s.accountSid, s.callSid).length > 0);
    return { longCalls, expiredStates };
  }

  /** Deletes recordings past RETENTION_DAYS; resolves with how many were handed to deletion. */
  async runRetention(): Promise<number> {
    return (await this.deps.retention?.runOnce()) ?? 0;
  }

  start(intervalMs: number): void {
    this.stop();
    this.timer = setInterval(() => this.runOnce(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
