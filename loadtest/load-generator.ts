// Load generator process used by bench.ts (runs pinned to its own core): opens N Twilio-like
// streams with a linear ramp-up, paces them in real time with one shared scheduler, and reports
// progress and phases to the parent over IPC (or prints them when run on its own).
//
//   LOADGEN_CONFIG='{"url":"ws://127.0.0.1:8090/twilio/v1","streams":50,"tracks":["inbound","outbound"],
//                    "rampS":1,"warmupS":2,"seconds":5}' node --import tsx loadtest/load-generator.ts
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import type { Track } from './audio-fixtures.js';
import { runStream, StreamScheduler, type RunCounters, type RunStreamResult } from './stream-runner.js';

export interface LoadGenConfig {
  url: string;
  streams: number;
  tracks: Track[];
  rampS: number;
  warmupS: number;
  seconds: number;
  authToken?: string;
  signUrl?: string;
  tickMs?: number;
  seedBase?: number;
}

export type Phase = 'ramp' | 'warmup' | 'measure' | 'stopping' | 'done';

export type GenToParent =
  | {
      type: 'progress';
      phase: Phase;
      t: number;
      streamsUp: number;
      streamsStarted: number;
      mediaSent: number;
      messagesSent: number;
      errors: number;
      schedulerMaxLateMs: number;
    }
  | { type: 'phase'; phase: Phase; t: number; mediaSent: number }
  | { type: 'measure-end'; t: number; mediaSent: number; mediaSentInWindow: number; windowMs: number }
  | { type: 'done'; summary: LoadGenSummary };

export type ParentToGen = { type: 'continue' };

export interface LoadGenSummary {
  streams: number;
  connected: number;
  connectFailures: number;
  streamErrors: number;
  closedEarly: number;
  errorSamples: string[];
  framesSent: Record<Track, number>;
  mediaSent: number;
  mediaSentInWindow: number;
  windowMs: number;
  closeCodes: Record<string, number>;
  schedulerMaxLateMs: number;
  streamSids: string[];
  durationMs: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

export async function generateLoad(
  cfg: LoadGenConfig,
  emit: (m: GenToParent) => void,
  waitForParent: () => Promise<void>,
): Promise<LoadGenSummary> {
  const scheduler = new StreamScheduler({ tickMs: cfg.tickMs ?? 10 });
  const counters: RunCounters = { mediaMessages: 0, messages: 0 };
  const abort = new AbortController();
  const t0 = performance.now();
  const t = () => (performance.now() - t0) / 1000;
  let phase: Phase = 'ramp';
  let streamsUp = 0;
  let streamsStarted = 0;
  let connectFailures = 0;
  let streamErrors = 0;
  const errorSamples: string[] = [];
  const noteError = (what: string, err: unknown) => {
    if (errorSamples.length < 10) errorSamples.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
  };
  const setPhase = (p: Phase) => {
    phase = p;
    emit({ type: 'phase', phase: p, t: t(), mediaSent: counters.mediaMessages });
  };

  const progress = setInterval(() => {
    emit({
      type: 'progress',
      phase,
      t: t(),
      streamsUp,
      streamsStarted,
      mediaSent: counters.mediaMessages,
      messagesSent: counters.messages,
      errors: connectFailures + streamErrors,
      schedulerMaxLateMs: scheduler.maxLateMs,
    });
  }, 1000);

  setPhase('ramp');
  const rampMs = cfg.rampS * 1000;
  const runs: Promise<RunStreamResult | null>[] = [];
  for (let k = 0; k < cfg.streams; k++) {
    await sleep(t0 + (k * rampMs) / cfg.streams - performance.now());
    streamsStarted++;
    runs.push(
      runStream({
        url: cfg.url,
        authToken: cfg.authToken,
        signUrl: cfg.signUrl,
        tracks: cfg.tracks,
        seed: (cfg.seedBase ?? 1) + k,
        frames: Infinity,
        realtime: true,
        scheduler,
        counters,
        signal: abort.signal,
        customParameters: { ctiSessionId: `bench-${k}`, employeeId: `E${k % 100}` },
        onConnected: () => {
          streamsUp++;
        },
        onError: (err) => {
          streamErrors++;
          noteError(`stream ${k}`, err);
        },
      }).then(
        (r) => {
          streamsUp--;
          return r;
        },
        (err: unknown) => {
          connectFailures++;
          noteError(`connect ${k}`, err);
          return null;
        },
      ),
    );
  }
  // the ramp ends when every stream is up (or has failed)
  while (streamsUp + connectFailures < cfg.streams) await sleep(20);

  setPhase('warmup');
  await sleep(cfg.warmupS * 1000);

  setPhase('measure');
  const windowStart = performance.now();
  const mediaAtStart = counters.mediaMessages;
  scheduler.maxLateMs = 0;
  await sleep(cfg.seconds * 1000);
  const windowMs = performance.now() - windowStart;
  const mediaSentInWindow = counters.mediaMessages - mediaAtStart;
  emit({ type: 'measure-end', t: t(), mediaSent: counters.mediaMessages, mediaSentInWindow, windowMs });
  const schedulerMaxLateMs = scheduler.maxLateMs;
  await waitForParent();

  setPhase('stopping');
  abort.abort();
  const results = await Promise.all(runs);
  clearInterval(progress);

  const framesSent: Record<Track, number> = { inbound: 0, outbound: 0 };
  const closeCodes: Record<string, number> = {};
  const streamSids: string[] = [];
  let closedEarly = 0;
  for (const r of results) {
    if (!r) continue;
    framesSent.inbound += r.framesSent.inbound;
    framesSent.outbound += r.framesSent.outbound;
    closeCodes[r.closeCode] = (closeCodes[r.closeCode] ?? 0) + 1;
    if (r.closedEarly) closedEarly++;
    streamSids.push(r.streamSid);
  }
  const summary: LoadGenSummary = {
    streams: cfg.streams,
    connected: streamSids.length,
    connectFailures,
    streamErrors,
    closedEarly,
    errorSamples,
    framesSent,
    mediaSent: counters.mediaMessages,
    mediaSentInWindow,
    windowMs,
    closeCodes,
    schedulerMaxLateMs,
    streamSids,
    durationMs: performance.now() - t0,
  };
  setPhase('done');
  return summary;
}

async function main(): Promise<void> {
  const raw = process.env.LOADGEN_CONFIG;
  if (!raw) throw new Error('LOADGEN_CONFIG (JSON) is required');
  const cfg = JSON.parse(raw) as LoadGenConfig;
  const send = process.send?.bind(process);
  let continueResolve: (() => void) | null = null;
  process.on('message', (m: ParentToGen) => {
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- an IPC message: checked at run time
    if (m.type === 'continue' && continueResolve) continueResolve();
  });
  const emit = send
    ? (m: GenToParent) => {
        send(m);
      }
    : (m: GenToParent) => {
        if (m.type !== 'done') console.log(JSON.stringify(m));
      };
  const waitForParent = () =>
    send
      ? new Promise<void>((resolve) => {
          continueResolve = resolve;
          setTimeout(resolve, 3000); // do not hang if the parent is slow
        })
      : Promise.resolve();
  const summary = await generateLoad(cfg, emit, waitForParent);
  if (send) {
    await new Promise<void>((resolve) => send({ type: 'done', summary } satisfies GenToParent, () => resolve()));
    process.disconnect();
  } else {
    const { streamSids: _omit, ...rest } = summary;
    console.log(JSON.stringify(rest, null, 2));
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
