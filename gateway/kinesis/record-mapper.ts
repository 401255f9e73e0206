// The reader process (kinesis-worker.ts): the records of one GetRecords in, the CTI events to apply out. Decodes each
// record, skips what is not ours or not usable (counted), skips CloudEvent ids applied before,
// maps by the TaskRouter table, and hands the mapped events to the main thread in one batch
// (`send`); its answer says which were applied, and how far, for the checkpoint.
import type { Logger } from 'pino';
import { decodeRecord, mapCloudEvent, type Decoded } from './cloud-events.js';
import type { KinesisRecord } from './kinesis-api.js';
import type { KinesisStore } from './checkpoint-store.js';
import type { KinesisMetrics } from './kinesis-metrics.js';
import { emptyBatch, type MappedBatch } from './worker-protocol.js';

export interface Applied {
  /** ids of the events applied (to remember with the checkpoint) */
  ids: string[];
  /** sequence number of the last record fully handled; null: none */
  lastSeq: string | null;
  /** a record could not be applied now: read again after lastSeq */
  retry: boolean;
}

/** What ShardReader needs: a batch of records applied (or not yet), answered for the checkpoint. */
export interface BatchApplier {
  apply(records: readonly KinesisRecord[]): Promise<Applied>;
}

/** The main thread's answer to a batch (see ToWorker 'ack'). */
export interface BatchAck {
  done: number;
  applied: number[];
}

export interface MapperDeps {
  accountSid: string;
  store: KinesisStore;
  metrics: KinesisMetrics;
  log: Logger;
  /** the mapped events to the main thread; resolves with its answer */
  send: (batch: MappedBatch) => Promise<BatchAck>;
  now?: () => number;
}

const MAX_WORKERS = 10_000;

export class RecordMapper implements BatchApplier {
  /** worker -> its last call (worker.activity.update names no call) */
  private readonly lastCall = new Map<string, string>();
  private readonly now: () => number;
  private warnedNotJson = 0;

  constructor(private readonly d: MapperDeps) {
    this.now = d.now ?? Date.now;
  }

  async apply(records: readonly KinesisRecord[]): Promise<Applied> {
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
    const out = emptyBatch();
    /** per record: how many mapped events precede its end */
    const ends: number[] = [];
    for (const rec of decoded) {
      for (const ev of rec.events) {
        if (before.has(ev.id)) {
          metrics.result(accountSid, 'duplicate');
          continue;
        }
        before.add(ev.id); // the same id again in this batch is a duplicate
        const mapped = mapCloudEvent(ev, (w) => this.lastCall.get(w));
        if (mapped.kind === 'skip') {
          metrics.result(accountSid, mapped.result);
          this.d.log.debug({ id: ev.id, eventType: ev.eventType, reason: mapped.reason }, 'Kinesis event not applied');
          continue;
        }
        out.ids.push(ev.id);
        out.arrivals.push(rec.arrival);
        out.counts.push(mapped.events.length);
        for (const e of mapped.events) {
          out.types.push(e.type);
          out.callSids.push(e.callSid);
          out.ctiSessionIds.push(e.ctiSessionId);
          out.employeeIds.push(e.employeeId);
          out.at.push(e.at);
        }
        // remembered when mapped, not when applied: the next event of this batch may need it
        if (mapped.workerSid !== null && ev.eventType !== 'worker.activity.update') {
          this.lastCall.delete(mapped.workerSid);
          this.lastCall.set(mapped.workerSid, mapped.events[0]!.callSid); // a mapped task has its call's event first
          if (this.lastCall.size > MAX_WORKERS) this.lastCall.delete(this.lastCall.keys().next().value as string);
        }
      }
      ends.push(out.ids.length);
    }
    const last = decoded.at(-1)?.seq ?? null;
    if (out.ids.length === 0) return { ids: [], lastSeq: last, retry: false };
    const ack = await this.d.send(out);
    let lastSeq: string | null = null;
    for (let i = 0; i < decoded.length && ends[i]! <= ack.done; i++) lastSeq = decoded[i]!.seq;
    return { ids: ack.applied.map((i) => out.ids[i]!), lastSeq, retry: ack.done < out.ids.length };
  }
}
