// Main thread: the CTI events the Kinesis worker mapped, applied in order through the same
// entry point as the CTI API with the source's account set. Answers how far it got (a cluster
// that is busy now: the rest is read again later) and which events were applied.
import type { Logger } from 'pino';
import type { CtiEvent } from '../../recorder/call-states.js';
import type { KinesisMetrics } from './kinesis-metrics.js';
import type { BatchAck } from './record-mapper.js';
import type { MappedEvent } from './worker-protocol.js';

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
  dispatch: (ev: CtiEvent) => Promise<void>;
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

  async apply(events: readonly MappedEvent[]): Promise<BatchAck> {
    const { accountSid, metrics } = this.d;
    const applied: number[] = [];
    let done = 0;
    try {
      for (; done < events.length; done++) {
        const ev = events[done]!;
        const outcome = await this.applyOne(ev);
        if (outcome === 'retry') break;
        metrics.result(accountSid, outcome);
        if (outcome === 'applied') {
          applied.push(done);
          metrics.applyLag(this.now() - ev.arrival);
          this.d.onApplied?.(ev.id, ev.arrival);
        }
      }
    } finally {
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

  private async applyOne(ev: MappedEvent): Promise<'applied' | 'invalid' | 'failed' | 'retry'> {
    try {
      for (const cti of ev.events) await this.d.dispatch({ ...cti, accountSid: this.d.accountSid });
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
    return 'applied';
  }
}
