// Prometheus metrics. The recorder keeps plain counters on the hot path; prom-client reads them
// when scraped (collect), so a frame costs an integer increment, not a label lookup.
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';
import type { Recorder, RecorderCounters } from '../recorder/recorder.js';
import type { Alarms } from '../recorder/alarms.js';
import { PROTOCOL_ERROR_KINDS, type ProtocolErrorKind } from './twilio/twilio-protocol.js';

export interface GatewayMetrics {
  registry: Registry;
  protocolError: (kind: ProtocolErrorKind | 'unknown_event') => void; // passed around unbound
  observeWriteLag(lagMs: number): void;
  upgradeRefused(reason: string): void;
  /** a media frame refused for running ahead of its stream's age plus MAX_TIMESTAMP_LEAD_S */
  leadRefused: () => void;
}

/** A counter mirrored from a plain number the recorder increments. */
function mirroredCounter(registry: Registry, name: string, help: string, read: () => number): void {
  let last = 0;
  new Counter({
    name, help, registers: [registry],
    collect() {
      const now = read();
      if (now > last) this.inc(now - last);
      last = now;
    },
  });
}

export function createMetrics(recorder: () => Recorder | null, alarms: () => Alarms | null = () => null): GatewayMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const c = (k: keyof RecorderCounters) => () => recorder()?.counters[k] ?? 0;
  new Gauge({
    name: 'gateway_streams_active', help: 'Twilio streams being recorded on this node', registers: [registry],
    collect() { this.set(recorder()?.activeStreams ?? 0); },
  });
  mirroredCounter(registry, 'gateway_frames_received_total', 'media frames placed on a timeline (late ones included)', c('framesReceived'));
  mirroredCounter(registry, 'gateway_frames_missing_total', '20 ms frames that never arrived, written as silence (counted when a segment is published)', c('framesMissing'));
  mirroredCounter(registry, 'gateway_frames_duplicate_total', 'media frames dropped because their audio was already there', c('framesDuplicate'));
  mirroredCounter(registry, 'gateway_frames_late_total', 'media frames that arrived out of order and were put in place', c('framesLate'));
  // Two reasons a received frame is not kept: it came after its audio was written (too_late),
  // or the disk fell behind by more than the writer's queue cap (disk_backpressure, 20 ms units).
  // timestamp_lead: refused for running ahead of the stream's age (counted here, not by the recorder).
  const dropped: Record<string, number> = { too_late: 0, disk_backpressure: 0, timestamp_lead: 0 };
  let leadRefused = 0;
  new Counter({
    name: 'gateway_frames_dropped_total', help: 'media frames not kept, by reason: too_late (arrived after their audio was written), disk_backpressure (20 ms units dropped because the disk fell behind), timestamp_lead (stamped beyond the stream age plus MAX_TIMESTAMP_LEAD_S)',
    labelNames: ['reason'], registers: [registry],
    collect() {
      const now = { too_late: c('framesTooLate')(), disk_backpressure: c('framesDroppedBackpressure')(), timestamp_lead: leadRefused };
      for (const [reason, v] of Object.entries(now)) {
        this.inc({ reason }, Math.max(0, v - dropped[reason]!));
        dropped[reason] = v;
      }
    },
  });
  new Gauge({
    name: 'gateway_write_queue_bytes', help: 'audio bytes received but not yet written to disk (bounded per stream)', registers: [registry],
    collect() { this.set(recorder()?.queuedBytes ?? 0); },
  });
  mirroredCounter(registry, 'gateway_bytes_written_total', 'audio bytes written to disk', c('bytesWritten'));
  mirroredCounter(registry, 'gateway_recordings_published_total', 'segments published with their sidecar', c('recordingsPublished'));
  mirroredCounter(registry, 'gateway_segment_errors_total', 'segments that could not be published', c('segmentErrors'));
  const protocolErrors = new Counter({
    name: 'gateway_protocol_errors_total', help: 'malformed or out-of-place Twilio messages, by kind',
    labelNames: ['kind'], registers: [registry],
  });
  for (const kind of [...PROTOCOL_ERROR_KINDS, 'unknown_event']) protocolErrors.inc({ kind }, 0);
  const refused = new Counter({
    name: 'gateway_upgrades_refused_total', help: 'WebSocket upgrades refused before opening, by reason',
    labelNames: ['reason'], registers: [registry],
  });
  const alarmCounts = new Map<string, number>();
  new Counter({
    name: 'gateway_alarms_total', help: 'alarms raised, by kind', labelNames: ['kind'], registers: [registry],
    collect() {
      for (const [kind, n] of alarms()?.countsByKind() ?? []) {
        const last = alarmCounts.get(kind) ?? 0;
        if (n > last) this.inc({ kind }, n - last);
        alarmCounts.set(kind, n);
      }
    },
  });
  const lag = new Histogram({
    name: 'gateway_frame_to_disk_lag_seconds',
    help: 'time from the oldest frame of a write arriving to that write reaching the file',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30],
    registers: [registry],
  });
  return {
    registry,
    protocolError: (kind) => protocolErrors.inc({ kind }),
    observeWriteLag: (ms) => { if (!Number.isNaN(ms)) lag.observe(ms / 1000); },
    upgradeRefused: (reason) => refused.inc({ reason }),
    leadRefused: () => { leadRefused++; },
  };
}
