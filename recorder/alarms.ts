// Alarms (contract section 5): each is a structured log line (`alarm: true`, `kind`), a metric
// and an entry in GET /v1/alarms. One place raises them so the three never disagree. The list
// holds one entry per kind and subject (raised again: `count` and `at` move on) and at most
// ALARMS_PER_KIND entries of each kind, so a flood of one kind cannot push the others out.
import type { Logger } from 'pino';

export type AlarmKind =
  | 'long_call' | 'long_hold' | 'disk_write_failed' | 'disk_full' | 'segment_publish_failed'
  | 'recovery_failed' | 'webhook_failing' | 'node_lost' | 'redis_unavailable'
  | 'kinesis_unreadable'
  /** audio that reached the node was not kept (details.reason: too_late, timestamp_lead, disk_backpressure, refused media) */
  | 'audio_dropped'
  | 'delete_failed'
  | 'archive_failed';

export interface Alarm {
  id: number;
  kind: AlarmKind;
  /** the latest time it was raised */
  at: string;
  /** the first time it was raised */
  firstAt: string;
  /** how many times it was raised (an alarm raised again updates its entry) */
  count: number;
  message: string;
  nodeId: string;
  /** the data source the alarm concerns (per-source API keys see only their own) */
  accountSid?: string;
  callSid?: string;
  streamSid?: string;
  recordingId?: string;
  /** what the alarm is about when it is not a call or recording (e.g. a lost node) */
  subject?: string;
  details?: Record<string, unknown>;
}

export interface AlarmInput {
  message: string;
  accountSid?: string;
  callSid?: string;
  streamSid?: string;
  recordingId?: string;
  subject?: string;
  details?: Record<string, unknown>;
}

/** Entries kept per kind: one kind raised in bulk never evicts the others. */
export const ALARMS_PER_KIND = 100;

/**
 * One entry per kind and subject: the call, else the recording, stream or named subject, within
 * the account (calls are keyed by account and callSid: another tenant's events never merge in).
 */
export function alarmKey(a: { kind: AlarmKind } & AlarmInput): string {
  return `${a.kind}\u0000${a.accountSid ?? ''}\u0000${a.callSid ?? a.recordingId ?? a.streamSid ?? a.subject ?? ''}`;
}

export class Alarms {
  /** per kind, per key; a Map iterates in insertion order, and a raised entry is moved last */
  private readonly byKind = new Map<AlarmKind, Map<string, Alarm>>();
  private nextId = 1;
  /** raise order, for newest-first listing (times may tie within a millisecond) */
  private readonly seqOf = new WeakMap<Alarm, number>();
  private seq = 0;
  private readonly counts = new Map<AlarmKind, number>();
  private readonly listeners: ((a: Alarm) => void)[] = [];

  constructor(
    private readonly log: Logger,
    private readonly nodeId: string,
    /** how many entries of each kind GET /v1/alarms keeps */
    private readonly keepPerKind = ALARMS_PER_KIND,
    private readonly wallNow: () => Date = () => new Date(),
  ) {}

  raise(kind: AlarmKind, input: AlarmInput): Alarm {
    const at = this.wallNow().toISOString();
    const key = alarmKey({ kind, ...input });
    let entries = this.byKind.get(kind);
    if (!entries) this.byKind.set(kind, (entries = new Map<string, Alarm>()));
    const prev = entries.get(key);
    const alarm: Alarm = prev
      ? { ...input, id: prev.id, kind, at, firstAt: prev.firstAt, count: prev.count + 1, nodeId: this.nodeId }
      : { ...input, id: this.nextId++, kind, at, firstAt: at, count: 1, nodeId: this.nodeId };
    entries.delete(key);
    entries.set(key, alarm);
    this.seqOf.set(alarm, this.seq++);
    if (entries.size > this.keepPerKind) entries.delete(entries.keys().next().value as string);
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    this.log.error({ alarm: true, kind, ...input }, input.message);
    for (const l of this.listeners) l(alarm);
    return alarm;
  }

  /** newest (latest raised) last */
  recent(): readonly Alarm[] {
    const all: Alarm[] = [];
    for (const entries of this.byKind.values()) all.push(...entries.values());
    return all.sort((a, b) => (this.seqOf.get(a) ?? 0) - (this.seqOf.get(b) ?? 0));
  }

  /** raises of a kind (each raise counts, as the metric does) */
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
