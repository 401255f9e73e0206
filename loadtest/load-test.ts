// One load test run: ramps N paced streams up, keeps them for the duration, pauses/resumes and
// hangs up some of them, samples progress every second and the gateway's /metrics every scrape
// interval, then reads back what the gateway recorded and builds the report.
import { performance } from 'node:perf_hooks';
import { runStream, StreamScheduler, type RunCounters, type RunStreamResult } from './stream-runner.js';
import type { LoadTestOptions } from './cli-options.js';
import { histogramQuantile, scrape, type Histogram } from './metrics-scraper.js';
import { evaluateSlos, summaryTable, type LoadTestReport, type ScrapePoint, type SeriesPoint } from './report.js';

export interface Progress { t: number; streamsUp: number; mediaPerSecond: number; errors: number; phase: string }

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

interface StreamOutcome { result: RunStreamResult | null; paused: boolean; hungUp: boolean }

export async function runLoadTest(o: LoadTestOptions, command: string, onProgress: (p: Progress) => void): Promise<LoadTestReport> {
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const t = () => (performance.now() - t0) / 1000;
  const scheduler = new StreamScheduler({ tickMs: 10 });
  const counters: RunCounters = { mediaMessages: 0, messages: 0 };
  const abort = new AbortController();
  const authHeaders: Record<string, string> = o.apiKey ? { authorization: `Bearer ${o.apiKey}` } : {};
  let phase = 'ramp';
  let streamsUp = 0;
  let connectedEver = 0;
  let connectFailures = 0;
  let streamErrors = 0;
  const errorSamples: string[] = [];
  const note = (what: string, err: unknown) => {
    if (errorSamples.length < 10) errorSamples.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
  };
  const pauseStatuses: Record<string, number> = {};
  const resumeStatuses: Record<string, number> = {};
  const callApi = async (callSid: string, action: 'pause' | 'resume', into: Record<string, number>) => {
    let key: string;
    try {
      const res = await fetch(`${o.apiUrl}/v1/calls/${callSid}/${action}`, { method: 'POST', headers: authHeaders, signal: AbortSignal.timeout(5000) });
      await res.arrayBuffer();
      key = String(res.status);
    } catch {
      key = 'error';
    }
    into[key] = (into[key] ?? 0) + 1;
    return key;
  };

  // progress: one sample a second
  const series: SeriesPoint[] = [];
  let lastMedia = 0;
  let lastT = 0;
  const sampler = setInterval(() => {
    const now = t();
    const rate = (counters.mediaMessages - lastMedia) / Math.max(0.001, now - lastT);
    lastMedia = counters.mediaMessages;
    lastT = now;
    const p = { t: now, streamsUp, mediaPerSecond: rate, errors: connectFailures + streamErrors };
    series.push(p);
    onProgress({ ...p, phase });
  }, 1000);

  // gateway metrics: one scrape per interval (the first one resets the event-loop histogram)
  const scrapes: ScrapePoint[] = [];
  let scrapeErrors = 0;
  let firstHist: Histogram | null = null;
  let prevHist: Histogram | null = null;
  let lastHist = null as Histogram | null; // set in the scrape callback: not narrowed to null
  let rampEndT = Infinity;
  const doScrape = async () => {
    try {
      const s = await scrape(o.apiUrl);
      const when = t();
      if (s.diskLag && firstHist === null) firstHist = s.diskLag;
      const q = s.diskLag ? histogramQuantile(s.diskLag, prevHist, 0.99) : null;
      if (s.diskLag) { prevHist = s.diskLag; lastHist = s.diskLag; }
      scrapes.push({ t: when, eventLoopP99Ms: s.eventLoopP99Ms, diskLagP99Ms: q === null || !Number.isFinite(q) ? q : q * 1000, rssBytes: s.rssBytes });
    } catch {
      scrapeErrors++;
    }
  };
  await doScrape();
  let scraping = Promise.resolve();
  const scraper = setInterval(() => { scraping = scraping.then(doScrape); }, o.scrapeIntervalS * 1000);

  const outcomes: Promise<StreamOutcome>[] = [];
  const hangupEvery = o.hangupFraction > 0 ? 1 / o.hangupFraction : Infinity;
  const pauseEvery = o.pauseFraction > 0 ? 1 / o.pauseFraction : Infinity;
  // Spread the chosen streams evenly: stream k is picked when floor(k·f) steps up.
  const picked = (k: number, every: number) => Number.isFinite(every) && Math.floor((k + 1) / every) > Math.floor(k / every);
  for (let k = 0; k < o.streams; k++) {
    await sleep(t0 + (k * o.rampS * 1000) / o.streams - performance.now());
    const hungUp = picked(k, hangupEvery);
    const pause = picked(k, pauseEvery);
    const params: Record<string, string> = {};
    for (const [name, v] of Object.entries(o.params)) params[name] = v.replaceAll('{i}', String(k));
    let paused = false;
    const timers: NodeJS.Timeout[] = [];
    outcomes.push(runStream({
      url: o.url, authToken: o.authToken, signUrl: o.signUrl, accountSid: o.accountSid,
      tracks: o.tracks, seed: 1000 + k, frames: Infinity, realtime: true, scheduler, counters, signal: abort.signal,
      customParameters: params,
      sendStop: !hungUp,
      end: hungUp ? 'terminate' : 'close',
      onConnected: (client) => {
        streamsUp++;
        connectedEver++;
        if (pause) {
          timers.push(setTimeout(() => {
            void callApi(client.callSid, 'pause', pauseStatuses).then((s) => { if (s.startsWith('2')) paused = true; });
            timers.push(setTimeout(() => void callApi(client.callSid, 'resume', resumeStatuses), o.pauseForS * 1000));
          }, o.pauseAtS * 1000));
        }
      },
      onError: (err) => { streamErrors++; note(`stream ${k}`, err); },
    }).then(
      (result) => { streamsUp--; for (const tm of timers) clearTimeout(tm); return { result, paused, hungUp }; },
      (err: unknown) => { connectFailures++; note(`connect ${k}`, err); return { result: null, paused: false, hungUp }; },
    ));
  }
  // every stream has been started; the ramp ends when each one is up or has failed
  while (connectedEver + connectFailures < o.streams) await sleep(20);
  rampEndT = t();
  phase = 'steady';
  const steadyMediaStart = counters.mediaMessages;
  const steadyStart = performance.now();
  await sleep(o.durationS * 1000);
  const mediaPerSecondSteady = o.durationS > 0 ? (counters.mediaMessages - steadyMediaStart) / ((performance.now() - steadyStart) / 1000) : null;
  phase = 'stopping';
  abort.abort();
  const results = await Promise.all(outcomes);
  clearInterval(scraper);
  await scraping;
  await doScrape();
  clearInterval(sampler);

  // Read back what the gateway recorded: every stream's sidecars via the recordings API.
  phase = 'verifying';
  onProgress({ t: t(), streamsUp: 0, mediaPerSecond: 0, errors: connectFailures + streamErrors, phase });
  const counted = results.filter((r) => r.result !== null && !r.paused);
  let sent = 0;
  for (const r of counted) sent += r.result!.framesSent.inbound + r.result!.framesSent.outbound;
  const deadline = performance.now() + o.settleS * 1000;
  let recorded = 0;
  let missing = 0;
  let without = 0;
  for (;;) {
    recorded = 0; missing = 0; without = 0;
    const perStream = await Promise.all(counted.map((r) => recordedFrames(o.apiUrl, authHeaders, r.result!)));
    for (const p of perStream) {
      recorded += p.received;
      missing += p.missing;
      if (p.recordings === 0) without++;
    }
    if (recorded >= sent || performance.now() > deadline) break;
    await sleep(500);
  }

  const ev = scrapes.filter((s) => s.t > rampEndT && s.eventLoopP99Ms !== null).map((s) => s.eventLoopP99Ms!);
  const sorted = [...ev].sort((a, b) => a - b);
  const allLag = lastHist ? histogramQuantile(lastHist, firstHist, 0.99) : null;
  const rss = scrapes.map((s) => s.rssBytes).filter((v): v is number => v !== null);
  const base = {
    command, startedAt, options: o,
    streams: {
      planned: o.streams,
      connected: results.filter((r) => r.result !== null).length,
      connectFailures, streamErrors,
      closedEarly: results.filter((r) => r.result?.closedEarly).length,
      hungUp: results.filter((r) => r.result !== null && r.hungUp).length,
      paused: results.filter((r) => r.paused).length,
      errorSamples,
    },
    frames: { sent, recorded, lost: Math.max(0, sent - recorded), consideredStreams: counted.length, streamsWithoutRecording: without, framesMissing: missing },
    pauseResume: { pause: pauseStatuses, resume: resumeStatuses },
    gateway: {
      eventLoopP99MsWorst: sorted.length ? sorted[sorted.length - 1]! : null,
      eventLoopP99MsMedian: sorted.length ? sorted[Math.floor(sorted.length / 2)]! : null,
      diskLagP99Ms: allLag === null ? null : allLag * 1000,
      rssMaxBytes: rss.length ? Math.max(...rss) : null,
      scrapeErrors,
    },
    mediaPerSecondSteady,
    durationS: t(),
    series, scrapes,
  };
  const slos = evaluateSlos(o, base);
  const withSlos = { ...base, slos, verdict: slos.every((s) => s.ok) ? 'pass' as const : 'miss' as const };
  return { ...withSlos, table: summaryTable(withSlos) };
}

async function recordedFrames(apiUrl: string, headers: Record<string, string>, r: RunStreamResult): Promise<{ received: number; missing: number; recordings: number }> {
  let received = 0; let missing = 0; let recordings = 0;
  let cursor: string | null = null;
  try {
    do {
      const q: string = `callSid=${r.callSid}&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const res = await fetch(`${apiUrl}/v1/recordings?${q}`, { headers, signal: AbortSignal.timeout(10000) });
      if (res.status !== 200) return { received, missing, recordings };
      const body = (await res.json()) as { items: { streamSid: string; framesReceived: number; framesMissing: number }[]; nextCursor: string | null };
      for (const s of body.items) {
        if (s.streamSid !== r.streamSid) continue;
        received += s.framesReceived; missing += s.framesMissing; recordings++;
      }
      cursor = body.nextCursor;
    } while (cursor);
  } catch {
    // counted as not recorded; the settle loop asks again
  }
  return { received, missing, recordings };
}
