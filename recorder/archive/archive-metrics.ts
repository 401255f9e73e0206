// Prometheus view of the archive pool, read when scraped (no per-job label lookups).
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Archiver } from './archiver.js';

export function registerArchiveMetrics(registry: Registry, archiver: () => Archiver | null): void {
  new Gauge({
    name: 'gateway_archive_queue_length', help: 'recordings waiting for or being given their compressed archive', registers: [registry],
    collect() { this.set(archiver()?.queueLength ?? 0); },
  });
  const mirrored = (name: string, help: string, read: (a: Archiver) => number) => {
    let last = 0;
    new Counter({
      name, help, registers: [registry],
      collect() {
        const a = archiver();
        const now = a ? read(a) : 0;
        if (now > last) this.inc(now - last);
        last = now;
      },
    });
  };
  mirrored('gateway_archive_audio_seconds_total', 'seconds of audio archived (compressed, verified, recorded in the sidecar)', (a) => a.counters.audioSeconds);
  mirrored('gateway_archive_recordings_total', 'recordings archived', (a) => a.counters.archived);
  mirrored('gateway_archive_failures_total', 'archives that could not be made or verified (each also raises archive_failed)', (a) => a.counters.failures);
}
