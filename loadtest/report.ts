// What a load test run found: the JSON report's shape, the SLO verdicts and the summary table
// (the same rows print on the terminal and go into the HTML report).
import type { LoadTestOptions } from './cli-options.js';

export interface SeriesPoint { t: number; streamsUp: number; mediaPerSecond: number; errors: number }
export interface ScrapePoint { t: number; eventLoopP99Ms: number | null; diskLagP99Ms: number | null; rssBytes: number | null }
export interface SloResult { name: string; limit: number; measured: number | null; ok: boolean }

export interface LoadTestReport {
  command: string;
  startedAt: string;
  options: LoadTestOptions;
  verdict: 'pass' | 'miss';
  streams: {
    planned: number; connected: number; connectFailures: number; streamErrors: number; closedEarly: number;
    hungUp: number; paused: number; errorSamples: string[];
  };
  frames: {
    sent: number; recorded: number; lost: number; consideredStreams: number;
    streamsWithoutRecording: number; framesMissing: number;
  };
  pauseResume: { pause: Record<string, number>; resume: Record<string, number> };
  gateway: {
    eventLoopP99MsWorst: number | null; eventLoopP99MsMedian: number | null;
    diskLagP99Ms: number | null; rssMaxBytes: number | null; scrapeErrors: number;
  };
  mediaPerSecondSteady: number | null;
  durationS: number;
  slos: SloResult[];
  table: [string, string][];
  series: SeriesPoint[];
  scrapes: ScrapePoint[];
}

export function evaluateSlos(o: LoadTestOptions, r: Pick<LoadTestReport, 'frames' | 'streams' | 'gateway'>): SloResult[] {
  const out: SloResult[] = [];
  const check = (name: string, limit: number | undefined, measured: number | null) => {
    if (limit === undefined) return;
    out.push({ name, limit, measured, ok: measured !== null && measured <= limit });
  };
  check('lost frames', o.maxLostFrames, r.frames.lost);
  check('connect failures', o.maxConnectFailures, r.streams.connectFailures);
  check('event-loop delay p99 (ms)', o.maxLagP99Ms, r.gateway.eventLoopP99MsWorst);
  check('frame-to-disk lag p99 (ms)', o.maxDiskLagP99Ms, r.gateway.diskLagP99Ms);
  return out;
}

const n = (v: number | null, digits = 0) => (v === null ? 'n/a' : v.toFixed(digits));

export function summaryTable(r: Omit<LoadTestReport, 'table'>): [string, string][] {
  const statuses = (m: Record<string, number>) => Object.entries(m).map(([k, v]) => `${k}×${v}`).join(' ') || '–';
  return [
    ['streams connected / planned', `${r.streams.connected} / ${r.streams.planned}`],
    ['connect failures', String(r.streams.connectFailures)],
    ['stream errors / closed early by the gateway', `${r.streams.streamErrors} / ${r.streams.closedEarly}`],
    ['hung up without stop', String(r.streams.hungUp)],
    ['paused streams (pause / resume HTTP statuses)', `${r.streams.paused} (${statuses(r.pauseResume.pause)} / ${statuses(r.pauseResume.resume)})`],
    ['media messages/s (steady)', n(r.mediaPerSecondSteady)],
    ['frames sent (counted streams)', String(r.frames.sent)],
    ['frames recorded (sidecars framesReceived)', String(r.frames.recorded)],
    ['frames lost', String(r.frames.lost)],
    ['streams without a recording', String(r.frames.streamsWithoutRecording)],
    ['frames missing (gap-filled by the gateway)', String(r.frames.framesMissing)],
    ['event-loop delay p99, worst interval (ms)', n(r.gateway.eventLoopP99MsWorst, 1)],
    ['event-loop delay p99, median interval (ms)', n(r.gateway.eventLoopP99MsMedian, 1)],
    ['frame-to-disk lag p99 (ms)', n(r.gateway.diskLagP99Ms)],
    ['gateway RSS max (MiB)', r.gateway.rssMaxBytes === null ? 'n/a' : (r.gateway.rssMaxBytes / 1048576).toFixed(1)],
    ['run time (s)', r.durationS.toFixed(1)],
    ...r.slos.map((s): [string, string] => [`SLO ${s.name} ≤ ${s.limit}`, `${s.ok ? 'PASS' : 'MISS'} (${s.measured === null ? 'n/a' : Math.round(s.measured * 10) / 10})`]),
  ];
}

export function formatTable(rows: [string, string][]): string {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}
