// Records of one source in, CTI events applied: decode, skip what is not ours or not usable
// (counted), skip CloudEvent ids applied before, map by the TaskRouter table, apply in order
// through the same entry point as the CTI API, with the source's account set.
import type { Logger } from 'pino';
import type { CtiEvent } from '../../recorder/call-states.js';
import { decodeRecord, mapCloudEvent, type Decoded } from './cloud-events.js';
import type { KinesisRecord } from './kinesis-api.js';
import type { KinesisStore } from './checkpoint-store.js';
import type { KinesisMetrics } from './kinesis-metrics.js';

/** Thrown by `dispatch` when the event could not be applied now but may be later (cluster busy). */
export class RetryLater extends Error {
  override name = 'RetryLater';
}

/** Thrown by `dispatch` when the event itself is refused (a 400): counted invalid, skipped. */
export class RefusedEvent extends Error {
  override name = 'RefusedEvent';
}

export interface ApplierDeps {
  accountSid: string;
  store: KinesisStore;
  dispatch: (ev: CtiEvent) => Promise<void>;
  metrics: KinesisMetrics;
  log: Logger;
  now?: () => number;
  /** benchmarks: each applied CloudEvent with its record's arrival time */
  onApplied?: (id: string, arrivalMs: number) => void;
}

export interface Applied {
  /** ids of the events applied (to remember with the checkpoint) */
  ids: string[];
  /** sequence number of the last record fully handled; null: none */
  lastSeq: string | null;
  /** a record could not be applied now: read again after lastSeq */
  retry: boolean;
}

const MAX_WORKERS = 10_000;
/** refused events are summed up in one warning at most this often (a stream read from
 * TRIM_HORIZON can hold days of events older than the 24 h an event may lie in the past) */
const REFUSED_WARN_MS = 60_000;

export class EventApplier {
  /** worker -> its last call (worker.activity.update names no call) */
  private readonly lastCall = new Map<string, string>();
  private readonly now: () => number;
  private warnedNotJson = 0;
  private refused = { count: 0, exampleId: '', example: '' };
  private warnedRefused = -Infinity;

  constructor(private readonly d: ApplierDeps) {
    this.now = d.now ?? Date.now;
  }

  async apply(records: readonly KinesisRecord[]): Promise<Applied> {
    try {
      return await this.applyBatch(records);
    } finally {
      this.warnRefused();
    }
  }

  /** One line for the refused events since the last one, at most every REFUSED_WARN_MS. */
  private warnRefused(): void {
    const { count, exampleId, example } = this.refused;
    if (count === 0 || this.now() - this.warnedRefused < REFUSED_WARN_MS) return;
    this.warnedRefused = this.now();
    this.refused = { count: 0, exampleId: '', example: '' };
    this.d.log.warn({ refused: count, exampleId, example }, 'Kinesis events refused: skipped (counted in gateway_kinesis_records_total as invalid)');
  }

  private async applyBatch(records: readonly KinesisRecord[]): Promise<Applied> {
    const { accountSid, metrics } = this.d;
    const decoded: { seq: string; arrival: number; events: Extract<Decoded, { kind: 'event' }>[] }[] = [];
    const ids: string[] = [];
    for (const r of records) {
      const events: Extract<Decoded, { kind: 'event' }>[] = [];
      const list = r.Data === undefined ? null : decodeRecord(r.Data);
      if (list === null) {
        metrics.result(accountSid, 'not_json');
        if (this.now() - this.warnedNotJson > 60_000) {
          this.warnedNotJson = this.now();
          this.d.log.warn({ seq: r.SequenceNumber }, 'Kinesis record is not JSON: skipped (counted in gateway_kinesis_records_total)');
        }
      } else {
        for (const d of list) {
          if (d.kind === 'skip') {
            metrics.result(accountSid, d.result);
            this.d.log.debug({ id: d.id, reason: d.reason }, 'Kinesis event skipped');
          } else if (d.accountSid !== accountSid) {
            metrics.result(accountSid, 'wrong_account');
          } else {
            events.push(d);
            ids.push(d.id);
          }
        }
      }
      decoded.push({ seq: r.SequenceNumber as string, arrival: r.ApproximateArrivalTimestamp?.getTime() ?? NaN, events });
    }
    const seen = await this.d.store.seen(ids);
    const before = new Set(ids.filter((_, i) => seen[i]));
    const applied: string[] = [];
    let lastSeq: string | null = null;
    for (const rec of decoded) {
      for (const ev of rec.events) {
        if (before.has(ev.id)) {
          metrics.result(accountSid, 'duplicate');
          continue;
        }
        const outcome = await this.applyOne(ev);
        if (outcome === 'retry') return { ids: applied, lastSeq, retry: true };
        metrics.result(accountSid, outcome);
        if (outcome === 'applied') {
          applied.push(ev.id);
          before.add(ev.id); // the same id again in this batch is a duplicate
          metrics.applyLag(this.now() - rec.arrival);
          this.d.onApplied?.(ev.id, rec.arrival);
        }
      }
      lastSeq = rec.seq;
    }
    return { ids: applied, lastSeq, retry: false };
  }

  private async applyOne(ev: Extract<Decoded, { kind: 'event' }>): Promise<'applied' | 'ignored' | 'invalid' | 'failed' | 'retry'> {
    const mapped = mapCloudEvent(ev, (w) => this.lastCall.get(w));
    if (mapped.kind === 'skip') {
      this.d.log.debug({ id: ev.id, eventType: ev.eventType, reason: mapped.reason }, 'Kinesis event not applied');
      return mapped.result;
    }
    try {
      for (const cti of mapped.events) await this.d.dispatch({ ...cti, accountSid: this.d.accountSid });
    } catch (err) {
      if (err instanceof RetryLater) {
        this.d.log.warn({ id: ev.id, err }, 'Kinesis event could not be applied now: will read it again');
        return 'retry';
      }
      if (err instanceof RefusedEvent) {
        // summed up per minute (warnRefused), not a line per event
        this.d.log.debug({ id: ev.id, err }, 'Kinesis event refused');
        if (this.refused.count++ === 0) this.refused = { count: 1, exampleId: ev.id, example: err.message };
        return 'invalid';
      }
      this.d.log.error({ id: ev.id, err }, 'Kinesis event failed');
      return 'failed';
    }
    if (mapped.workerSid !== null && ev.eventType !== 'worker.activity.update') {
      this.lastCall.delete(mapped.workerSid);
      this.lastCall.set(mapped.workerSid, mapped.events[0]!.callSid); // a mapped task has its call's event first
      if (this.lastCall.size > MAX_WORKERS) this.lastCall.delete(this.lastCall.keys().next().value as string);
    }
    return 'applied';
  }
}
