// Loaded with `node --import` by loadtest/capacity-shared-loadgen.sh only (never in production):
// the gateway's event-loop delay measured as its own metric measures it (monitorEventLoopDelay,
// 10 ms resolution), but with p99.9 and max, and every GC pause, over the window between two
// SIGUSR2 (the first resets, the second writes JSON to $LOOP_PROBE_OUT).
import { monitorEventLoopDelay, PerformanceObserver, constants } from 'node:perf_hooks';
import { writeFileSync } from 'node:fs';

const out = process.env.LOOP_PROBE_OUT;
const h = monitorEventLoopDelay({ resolution: 10 });
h.enable();
let gcs = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push({ kind: e.detail?.kind, ms: e.duration });
}).observe({ entryTypes: ['gc'] });
const ms = (ns) => Math.round(ns / 1e4) / 100;
const summary = (kind) => {
  const d = gcs.filter((g) => g.kind === kind).map((g) => g.ms).sort((a, b) => a - b);
  return { n: d.length, sumMs: Math.round(d.reduce((a, b) => a + b, 0)), maxMs: Math.round((d.at(-1) ?? 0) * 10) / 10 };
};
let signals = 0;
process.on('SIGUSR2', () => {
  if (signals++ === 0) {
    h.reset();
    gcs = [];
    return;
  }
  writeFileSync(out, JSON.stringify({
    p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), p999: ms(h.percentile(99.9)), max: ms(h.max), mean: ms(h.mean),
    scavenges: summary(constants.NODE_PERFORMANCE_GC_MINOR), markCompacts: summary(constants.NODE_PERFORMANCE_GC_MAJOR),
  }));
});
