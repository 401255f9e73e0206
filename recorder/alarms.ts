// Alarms (contract section 5): each is a structured log line (`alarm: true`, `kind`), a metric
// and an entry in GET /v1/alarms. One place raises them so the three never disagree.
import type { Logger } from 'pino';

export type AlarmKind =
  | 'long_call' | 'long_hold' | 'disk_write_failed' | 'disk_full' | 'segment_publish_failed'
  | 'recovery_failed' | 'webhook_failing' | 'node_lost' | 'redis_unavailable' | 'archive_failed';

export interface Alarm {
  id: number;
  kind: AlarmKind;
  at: string;
  message: string;
  nodeId: string;
  callSid?: string;
  streamSid?: string;
  recordingId?: string;
  details?: Record<string, unknown>;
}

export interface AlarmInput {
  message: string;
  callSid?: string;
  streamSid?: string;
  recordingId?: string;
  details?: Record<string, unknown>;
}

export class Alarms {
  private readonly list: Alarm[] = [];
  private nextId = 1;
  private readonly counts = new Map<AlarmKind, number>();
  private readonly listeners: ((a: Alarm) => void)[] = [];

  constructor(
    private readonly log: Logger,
    private readonly nodeId: string,
    /** how many recent alarms GET /v1/alarms keeps */
    private readonly keep = 1000,
    private readonly wallNow: () => Date = () => new Date(),
  ) {}

  raise(kind: AlarmKind, input: AlarmInput): Alarm {
    const alarm: Alarm = { id: this.nextId++, kind, at: this.wallNow().toISOString(), nodeId: this.nodeId, ...input };
    this.list.push(alarm);
    if (this.list.length > this.keep) this.list.splice(0, this.list.length - this.keep);
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    this.log.error({ alarm: true, kind, ...input }, input.message);
    for (const l of this.listeners) l(alarm);
    return alarm;
  }

  /** newest last */
  recent(): readonly Alarm[] {
    return this.list;
  }

  count(kind: AlarmKind): number {
    return this.counts.get(kind) ?? 0;
  }

  countsByKind(): ReadonlyMap<AlarmKind, number> {
    return this.counts;
  }

  /** e.g. cluster mode publishes alarms to the other nodes */
  onAlarm(listener: (a: Alarm) => void): void {
    this.listeners.push(listener);
  }
}
