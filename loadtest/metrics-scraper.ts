// Reads the gateway's Prometheus text: the event-loop delay p99 (prom-client resets it on each
// scrape, so each reading covers the interval since the previous one) and the frame-to-disk
// lag histogram (cumulative: a p99 per interval comes from the bucket deltas).

export interface Histogram {
  /** upper bounds in seconds, ascending, +Inf last */
  le: number[];
  /** cumulative counts per bucket */
  counts: number[];
}

export interface Scrape {
  eventLoopP99Ms: number | null;
  diskLag: Histogram | null;
  rssBytes: number | null;
}

export function promValue(text: string, name: string): number | null {
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+|NaN)$`, 'm'));
  return m ? Number(m[1]) : null;
}

export function parseHistogram(text: string, name: string): Histogram | null {
  const re = new RegExp(`^${name}_bucket\\{(?:[^}]*,)?le="([^"]+)"[^}]*\\} ([0-9.eE+-]+)$`, 'gm');
  const rows: [number, number][] = [];
  for (const m of text.matchAll(re)) rows.push([m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])]);
  if (rows.length === 0) return null;
  rows.sort((a, b) => a[0] - b[0]);
  return { le: rows.map((r) => r[0]), counts: rows.map((r) => r[1]) };
}

/** Upper bound (seconds) of the bucket holding quantile q of what `now` adds to `before`; null when empty. */
export function histogramQuantile(now: Histogram, before: Histogram | null, q: number): number | null {
  const counts = now.counts.map((c, i) => c - (before?.counts[i] ?? 0));
  const total = counts[counts.length - 1] ?? 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  for (let i = 0; i < counts.length; i++) if (counts[i]! >= rank) return now.le[i]!; // le and counts pair up
  return Infinity;
}

export function parseScrape(text: string): Scrape {
  const p99 = promValue(text, 'nodejs_eventloop_lag_p99_seconds');
  return {
    eventLoopP99Ms: p99 === null || Number.isNaN(p99) ? null : p99 * 1000,
    diskLag: parseHistogram(text, 'gateway_frame_to_disk_lag_seconds'),
    rssBytes: promValue(text, 'process_resident_memory_bytes'),
  };
}

export async function scrape(apiUrl: string, timeoutMs = 5000): Promise<Scrape> {
  const res = await fetch(`${apiUrl}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
  if (res.status !== 200) throw new Error(`GET /metrics: HTTP ${res.status}`);
  return parseScrape(await res.text());
}
