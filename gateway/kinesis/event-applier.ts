// Main thread: the CTI events the Kinesis worker mapped, applied in order through the same
// entry point as the CTI API with the source's account set. Answers how far it got (a cluster
// that is busy now: the rest is read again later) and which events were applied. On a single
// node a batch is applied as one (`batch`): the published recordings of the calls it
// re-attributed are found with one catalog query at its end, not one per event.
import type { Logger } from 'pino';
import type { CtiEvent } from '../../recorder/call-states.js';
import type { KinesisMetrics } from './kinesis-metrics.js';
import type { BatchAck } from './record-mapper.js';
import type { MappedBatch } from './worker-protocol.js';

/** Thrown by `dispatch` when the event could not be applied now but may be later (cluster busy). */
export class RetryLater extends Error {
  override name = 'RetryLater';
}

/** Thrown by `dispatch` when the event itself is refused (a 400): counted invalid, skipped. */
export class RefusedEvent extends Error {
  override name = 'RefusedEvent';
}

/** The events of one batch, applied by `dispatch`; `finish` completes them (before the ack). */
export interface DispatchBatch {
  dispatch: (ev: CtiEvent) => Promise<void>;
  finish: () => Promise<void>;
}

export interface ApplierDeps {
  accountSid: string;
  dispatch: (ev: CtiEvent) => Promise<void>;
  /** single node: a batch's events applied together (CallControl.applyInBatch); absent: one `dispatch` each */
  batch?: () => DispatchBatch;
  metrics: KinesisMetrics;
  log: Logger;
  now?: () => number;
  /** benchmarks: each applied CloudEvent with its record's arrival time */
  onApplied?: (id: string, arrivalMs: number) => void;
}

/** refused events are summed up in one warning at most this often (a stream read from
 * TRIM_HORIZON can hold days of events older than the 24 h an event may lie in the past) */
const REFUSED_WARN_MS = 60_000;

export class EventApplier {
  private readonly now: () => number;
  private refused = { count: 0, exampleId: '', example: '' };
  private warnedRefused = -Infinity;

  constructor(private readonly d: ApplierDeps) {
    this.now = d.now ?? Date.now;
  }

  async apply(b: MappedBatch): Promise<BatchAck> {
    const { accountSid, metrics } = this.d;
    const applied: number[] = [];
    const batch = this.d.batch?.() ?? null;
    const dispatch = batch?.dispatch ?? this.d.dispatch;
    const n = b.ids.length;
    let done = 0;
    let invalid = 0;
    let failed = 0;
    try {
      // k: the first CTI event of CloudEvent `done`
      for (let k = 0; done < n; done++) {
        const count = b.counts[done]!;
        const outcome = await this.applyOne(b, done, k, count, dispatch);
        if (outcome === 'retry') break;
        k += count;
        if (outcome === 'applied') applied.push(done);
        else if (outcome === 'invalid') invalid++;
        else failed++;
      }
    } finally {
      if (batch !== null) {
        // what was applied is applied (its call states changed) whether or not this succeeds:
        // the events are not read again for it, as an event whose re-attribution failed was not
        await batch.finish().catch((err: unknown) => this.d.log.error({ err }, 'Kinesis batch: published recordings not re-attributed'));
      }
      // counted once the batch is complete: the lag is to the end of its apply
      if (applied.length > 0) metrics.result(accountSid, 'applied', applied.length);
      if (invalid > 0) metrics.result(accountSid, 'invalid', invalid);
      if (failed > 0) metrics.result(accountSid, 'failed', failed);
      const now = this.now();
      for (const i of applied) {
        metrics.applyLag(now - b.arrivals[i]!);
        this.d.onApplied?.(b.ids[i]!, b.arrivals[i]!);
      }
      this.warnRefused();
    }
    return { done, applied };
  }

  /** One line for the refused events since the last one, at most every REFUSED_WARN_MS. */
  private warnRefused(): void {
    const { count, exampleId, example } = this.refused;
    if (count === 0 || this.now() - this.warnedRefused < REFUSED_WARN_MS) return;
    this.warnedRefused = this.now();
    this.refused = { count: 0, exampleId: '', example: '' };
    this.d.log.warn({ refused: count, exampleId, example }, 'Kinesis events refused: skipped (counted in gateway_kinesis_records_total as invalid)');
  }

  private async applyOne(b: MappedBatch, i: number, first: number, count: number, dispatch: (ev: CtiEvent) => Promise<void>): Promise<'applied' | 'invalid' | 'failed' | 'retry'> {
    const id = b.ids[i]!;
    try {
      for (let k = first; k < first + count; k++) {
        await dispatch({
          type: b.types[k]!, callSid: b.callSids[k]!, ctiSessionId: b.ctiSessionIds[k], employeeId: b.employeeIds[k], at: b.at[k],
          accountSid: this.d.accountSid,
        });
      }
    } catch (err) {
      if (err instanceof RetryLater) {
        this.d.log.warn({ id, err }, 'Kinesis event could not be applied now: will read it again');
        return 'retry';
      }
      if (err instanceof RefusedEvent) {
        // summed up per minute (warnRefused), not a line per event
        this.d.log.debug({ id, err }, 'Kinesis event refused');
        if (this.refused.count++ === 0) this.refused = { count: 1, exampleId: id, example: err.message };
        return 'invalid';
      }
      this.d.log.error({ id, err }, 'Kinesis event failed');
      return 'failed';
    }
    return 'applied';
  }
}
