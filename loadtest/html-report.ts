// The self-contained HTML report: summary, SLO verdicts and one inline SVG line chart per series
// (no scripts, no external assets: it opens from a mail attachment or a CI artifact as is).
import type { LoadTestReport } from './report.js';

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

export interface Series {
  id: string;
  title: string;
  unit: string;
  points: [number, number][];
}

/** One line chart: x = seconds since start, y from 0 to the series' max (with labelled axes). */
export function svgChart(s: Series, width = 720, height = 220): string {
  const pad = { l: 60, r: 16, t: 28, b: 34 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const pts = s.points.filter(([, y]) => Number.isFinite(y));
  const xMax = Math.max(1, ...pts.map(([x]) => x));
  const yMax = niceMax(Math.max(0, ...pts.map(([, y]) => y)));
  const X = (x: number) => pad.l + (x / xMax) * w;
  const Y = (y: number) => pad.t + h - (y / yMax) * h;
  const grid: string[] = [];
  for (let k = 0; k <= 4; k++) {
    const v = (yMax * k) / 4;
    grid.push(`<line x1="${pad.l}" x2="${pad.l + w}" y1="${Y(v).toFixed(1)}" y2="${Y(v).toFixed(1)}" stroke="#ddd"/>` +
      `<text x="${pad.l - 6}" y="${(Y(v) + 4).toFixed(1)}" text-anchor="end" font-size="11">${fmt(v)}</text>`);
  }
  for (let k = 0; k <= 5; k++) {
    const v = (xMax * k) / 5;
    grid.push(`<text x="${X(v).toFixed(1)}" y="${pad.t + h + 16}" text-anchor="middle" font-size="11">${fmt(v)}</text>`);
  }
  const line = pts.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
  return `<svg id="chart-${esc(s.id)}" class="chart" xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(s.title)}">` +
    `<text x="${pad.l}" y="16" font-size="13" font-weight="bold">${esc(s.title)} (${esc(s.unit)})</text>` +
    grid.join('') +
    `<line x1="${pad.l}" x2="${pad.l}" y1="${pad.t}" y2="${pad.t + h}" stroke="#333"/>` +
    `<line x1="${pad.l}" x2="${pad.l + w}" y1="${pad.t + h}" y2="${pad.t + h}" stroke="#333"/>` +
    `<text x="${pad.l + w}" y="${height - 4}" text-anchor="end" font-size="11">seconds since start</text>` +
    (pts.length > 0 ? `<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="${line}"/>` : `<text x="${pad.l + 10}" y="${pad.t + 20}" font-size="12">no data</text>`) +
    `</svg>`;
}

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  if (v >= 1000) return `${Math.round(v / 100) / 10}k`;
  return String(Math.round(v * 10) / 10);
}

export function renderHtml(r: LoadTestReport): string {
  const series: Series[] = [
    { id: 'streams', title: 'Streams up', unit: 'streams', points: r.series.map((p) => [p.t, p.streamsUp]) },
    { id: 'messages', title: 'Media messages sent', unit: 'messages/s', points: r.series.map((p) => [p.t, p.mediaPerSecond]) },
    { id: 'eventloop', title: 'Gateway event-loop delay p99', unit: 'ms', points: r.scrapes.filter((p) => p.eventLoopP99Ms !== null).map((p) => [p.t, p.eventLoopP99Ms!]) },
    { id: 'disklag', title: 'Gateway frame-to-disk lag p99', unit: 'ms', points: r.scrapes.filter((p) => p.diskLagP99Ms !== null).map((p) => [p.t, p.diskLagP99Ms!]) },
  ];
  const rows = r.table.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('');
  const slos = r.slos.length === 0 ? '<p>No SLO given on the command line.</p>'
    : `<table><tr><th>SLO</th><th>limit</th><th>measured</th><th>verdict</th></tr>${r.slos.map((s) =>
      `<tr class="${s.ok ? 'pass' : 'miss'}"><td>${esc(s.name)}</td><td>${s.limit}</td><td>${s.measured === null ? 'n/a' : Math.round(s.measured * 10) / 10}</td><td>${s.ok ? 'PASS' : 'MISS'}</td></tr>`).join('')}</table>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Load test ${esc(r.startedAt)}</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f4f4f4}.pass td:last-child{color:#0a7d28;font-weight:bold}
.miss td:last-child{color:#c62828;font-weight:bold}.chart{display:block;margin:12px 0}code{background:#f4f4f4;padding:1px 4px}</style></head>
<body><h1>Twilio Media Streams load test: ${r.verdict === 'pass' ? 'PASS' : 'MISS'}</h1>
<p><code>${esc(r.command)}</code><br>started ${esc(r.startedAt)}, target ${esc(r.options.url)}</p>
<h2>SLOs</h2>${slos}
<h2>Summary</h2><table>${rows}</table>
<h2>Over time</h2>
${series.map((s) => svgChart(s)).join('\n')}
<p>Event-loop delay: prom-client's <code>nodejs_eventloop_lag_p99_seconds</code>, reset at every scrape, so each point is the p99 of the interval before it.
Frame-to-disk lag: <code>gateway_frame_to_disk_lag_seconds</code> bucket deltas per interval (upper bound of the bucket holding the 99th percentile).</p>
</body></html>
`;
}
