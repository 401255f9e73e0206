// Benchmark: the same Twilio-like load against (a) the bare `ws` baseline and (b) the gateway,
// each server pinned to CPU 0 and the load generator pinned to CPU 1.
//
//   npm run bench -- --streams 300 --seconds 20 --tracks both --warmup 3
//   node --import tsx loadtest/bench.ts --streams 20 --seconds 5 --only baseline
//
// Options: --streams N (300)  --seconds S measured window (20)  --tracks both|inbound|outbound (both)
//          --warmup S (3)  --ramp S (streams/100, at least 1)  --only baseline|gateway (both)
//          --no-pin  --keep-recordings  --out DIR (bench-results)
//
// The ratio is measured the way ../shared/bench/perf-ratio.mjs measures it (the yardstick): CPU
// from /proc/<pid>/stat over the WHOLE run, 1.5 s before the load starts to 1.5 s after the load
// generator exited (connects, starts, ramp, stops, the gateway's segment publication), divided by
// the media messages sent; the generator paces on a 2 ms tick and opens streams over 5 s, like
// perf-ratio's loadgen. (This bench used to divide the CPU of a steady-state window after warm-up
// only, on a 10 ms tick: that left out every per-stream cost and read 1.21 where perf-ratio read
// 1.4-1.7 for the same code.) The steady-state window figure is still reported beside it.
//
// Figures: CPU µs per media message from /proc/<pid>/stat (utime+stime) over the measured window,
// event-loop delay p99 over the window (baseline: /stats; gateway: nodejs_eventloop_lag_p99_seconds,
// scraped once at window start to reset prom-client's histogram), RSS per stream, frames sent vs
// frames counted (gateway: its sidecars). Exit code 1 when something failed to run; targets
// (CPU ratio ≤ 1.3, 0 frames lost) only print PASS/MISS.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { Track } from './audio-fixtures.js';
import type { GenToParent, LoadGenConfig, LoadGenSummary, ParentToGen, Phase } from './load-generator.js';
import { freePort } from './free-port.js';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const TARGET_CPU_RATIO = 1.3;

type ServerKind = 'baseline' | 'gateway';

interface BenchOptions {
  streams: number;
  seconds: number;
  tracks: Track[];
  tracksArg: string;
  warmupS: number;
  rampS: number;
  servers: ServerKind[];
  pin: boolean;
  keepRecordings: boolean;
  outDir: string;
  cpuProf: boolean;
  rounds: number;
}

interface ServerResult {
  server: ServerKind;
  round?: number;
  ok: boolean;
  error?: string;
  pid?: number;
  command?: string;
  window?: {
    seconds: number;
    mediaCountedByServer: number | null;
    mediaSentByGenerator: number;
    mediaPerSecond: number;
    cpuUs: number;
    cpuUsPerMessage: number;
    /** perf-ratio.mjs's figure: whole-run CPU / media messages sent */
    wholeRunCpuUsPerMessage: number;
    cpuUtilPct: number;
    eventLoopDelayP99Ms: number | null;
    generatorCpuUtilPct: number;
  };
  memory?: { rssBeforeBytes: number; rssSteadyBytes: number; rssMaxBytes: number; rssPerStreamBytes: number };
  frames?: {
    sent: number;
    sentByTrack: Record<Track, number>;
    counted: number | null;
    countedBy: string;
    lost: number | null;
    metricsFramesReceived?: number | null;
    metricsFramesMissing?: number | null;
    sidecars?: SidecarSummary;
  };
  generator?: Omit<LoadGenSummary, 'streamSids'>;
  serverLogTail?: string[];
}

interface SidecarSummary {
  files: number;
  streams: number;
  expectedStreams: number;
  framesReceived: number;
  framesMissing: number;
  closeReasons: Record<string, number>;
  finalizeWaitMs: number;
}

// ---------------------------------------------------------------------------------------------
// helpers

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

class HelpRequested extends Error {}

const USAGE = `usage: npm run bench -- [options]
  --streams N         concurrent streams (300)
  --seconds S         measured steady-state window (20)
  --tracks T          both | inbound | outbound (both)
  --warmup S          after all streams are up, before measuring (3)
  --ramp S            streams are opened evenly over S seconds (5, as perf-ratio.mjs)
  --only SERVER       baseline | gateway (default: both, baseline first)
  --no-pin            do not pin with taskset (server CPU 0, generator CPU 1)
  --keep-recordings   keep the gateway's temporary RECORDINGS_DIR
  --out DIR           where bench-<date>.json goes (bench-results)
  --rounds N          alternate the servers N times (baseline, gateway, gateway, baseline …);
                      the ratio is the median of the per-round ratios (2)
  --cpu-prof          run the servers with node --cpu-prof (profiles in <out>/prof)`;

function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      streams: { type: 'string', default: '300' },
      seconds: { type: 'string', default: '20' },
      tracks: { type: 'string', default: 'both' },
      warmup: { type: 'string', default: '3' },
      ramp: { type: 'string' },
      only: { type: 'string' },
      'no-pin': { type: 'boolean', default: false },
      'keep-recordings': { type: 'boolean', default: false },
      out: { type: 'string', default: 'bench-results' },
      'cpu-prof': { type: 'boolean', default: false },
      rounds: { type: 'string', default: '2' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) throw new HelpRequested();
  const num = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} ${v}: expected a number ≥ ${min}`);
    return n;
  };
  const streams = Math.floor(num('streams', values.streams, 1));
  const trackMap: Record<string, Track[]> = { both: ['inbound', 'outbound'], inbound: ['inbound'], outbound: ['outbound'] };
  const tracks = trackMap[values.tracks];
  if (!tracks) throw new Error(`--tracks ${values.tracks}: expected both, inbound or outbound`);
  let servers: ServerKind[] = ['baseline', 'gateway'];
  if (values.only !== undefined) {
    if (values.only !== 'baseline' && values.only !== 'gateway') throw new Error(`--only ${values.only}: expected baseline or gateway`);
    servers = [values.only];
  }
  return {
    streams,
    seconds: num('seconds', values.seconds, 1),
    tracks,
    tracksArg: values.tracks,
    warmupS: num('warmup', values.warmup, 0),
    // perf-ratio.mjs: --ramp 5
    rampS: values.ramp !== undefined ? num('ramp', values.ramp, 0) : 5,
    servers,
    pin: !values['no-pin'],
    keepRecordings: values['keep-recordings'],
    outDir: resolve(ROOT, values.out),
    cpuProf: values['cpu-prof'],
    rounds: Math.floor(num('rounds', values.rounds, 1)),
  };
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime+stime of a process (all threads), µs */
function procCpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime = field 14, stime = field 15
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLK_TCK;
}

function procRssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}


function tasksetWorks(): boolean {
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
    execFileSync('taskset', ['-c', '1', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function pinned(cpu: number | null, args: string[]): [string, string[]] {
  return cpu === null ? [args[0]!, args.slice(1)] : ['taskset', ['-c', String(cpu), ...args]];
}

async function httpGet(url: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

/** sum of all samples of one metric in Prometheus text format; null when absent */
export function promValue(text: string, name: string): number | null {
  let sum: number | null = null;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const value = Number(rest.slice(rest.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) sum = (sum ?? 0) + value;
  }
  return sum;
}

function readSidecars(dir: string): { files: number; streamSids: Set<string>; framesReceived: number; framesMissing: number; closeReasons: Record<string, number> } {
  const out = { files: 0, streamSids: new Set<string>(), framesReceived: 0, framesMissing: 0, closeReasons: {} as Record<string, number> };
  const walk = (d: string) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name.endsWith('.json')) {
        try {
          const j = JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
          out.files++;
          if (typeof j.streamSid === 'string') out.streamSids.add(j.streamSid);
          if (typeof j.framesReceived === 'number') out.framesReceived += j.framesReceived;
          if (typeof j.framesMissing === 'number') out.framesMissing += j.framesMissing;
          const reason = typeof j.closeReason === 'string' ? j.closeReason : '?';
          out.closeReasons[reason] = (out.closeReasons[reason] ?? 0) + 1;
        } catch {
          /* a file being written: counted on the next poll */
        }
      }
    }
  };
  walk(dir);
  return out;
}

class LogTail {
  private readonly lines: string[] = [];
  private partial = '';
  constructor(private readonly max = 40) {}
  push(chunk: Buffer): void {
    const parts = (this.partial + chunk.toString('utf8')).split('\n');
    this.partial = parts.pop() ?? '';
    for (const l of parts) {
      this.lines.push(l);
      if (this.lines.length > this.max) this.lines.shift();
    }
  }
  get(): string[] {
    return this.partial ? [...this.lines, this.partial] : [...this.lines];
  }
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((r) => {
    const t = setTimeout(() => r(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      r(true);
    });
  });
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (!(await waitExit(child, 15_000))) {
    child.kill('SIGKILL');
    await waitExit(child, 5_000);
  }
}

const fmt = (n: number | null | undefined, digits = 1) =>
  n === null || n === undefined || !Number.isFinite(n) ? 'n/a' : n.toFixed(digits);
const mib = (b: number | undefined) => (b === undefined ? 'n/a' : (b / 1048576).toFixed(1));

// ---------------------------------------------------------------------------------------------
// one server

interface Snapshot {
  at: number;
  cpuUs: number;
  genCpuUs: number;
  counted: number | null;
  eldP99Ms: number | null;
  rss: number;
}

async function benchServer(kind: ServerKind, o: BenchOptions, pin: boolean): Promise<ServerResult> {
  const result: ServerResult = { server: kind, ok: false };
  const port = await freePort();
  const recordingsDir = kind === 'gateway' ? mkdtempSync(join(tmpdir(), 'bench-recordings-')) : null;
  const script = kind === 'baseline' ? 'loadtest/bare-ws-server.ts' : 'gateway/main.ts';
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), HOST: '127.0.0.1' };
  if (recordingsDir) Object.assign(env, { RECORDINGS_DIR: recordingsDir, LOG_LEVEL: 'warn' });
  const prof = o.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${join(o.outDir, 'prof')}`] : [];
  const [cmd, args] = pinned(pin ? 0 : null, [process.execPath, ...prof, '--import', 'tsx', script]);
  result.command = [cmd, ...args].join(' ');
  const tail = new LogTail();
  const server = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  server.stdout.on('data', (c: Buffer) => tail.push(c));
  server.stderr.on('data', (c: Buffer) => tail.push(c));
  let serverExited = false as boolean; // set by the exit handler: not narrowed to false
  server.once('exit', () => {
    serverExited = true;
  });
  const pid = server.pid;
  if (pid === undefined) throw new Error(`could not spawn ${script}`);
  result.pid = pid;
  const base = `http://127.0.0.1:${port}`;
  const readyPath = kind === 'baseline' ? '/stats' : '/readyz';
  let gen: ChildProcess | null = null;

  const count = async (): Promise<{ counted: number | null; eld: number | null; missing?: number | null }> => {
    if (kind === 'baseline') {
      const s = JSON.parse((await httpGet(`${base}/stats`)).body) as { mediaMessages: number; eventLoopDelayP99Ms: number };
      return { counted: s.mediaMessages, eld: s.eventLoopDelayP99Ms };
    }
    const text = (await httpGet(`${base}/metrics`)).body;
    const p99 = promValue(text, 'nodejs_eventloop_lag_p99_seconds');
    return {
      counted: promValue(text, 'gateway_frames_received_total'),
      eld: p99 === null ? null : p99 * 1000,
      missing: promValue(text, 'gateway_frames_missing_total'),
    };
  };

  try {
    // ---- wait until ready
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (serverExited) throw new Error(`${script} exited during start (code ${server.exitCode})`);
      try {
        if ((await httpGet(base + readyPath, 1000)).status === 200) break;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error(`${script} not ready on ${base}${readyPath} within 30 s`);
      await sleep(100);
    }
    await sleep(1000); // let start-up work settle
    const pre = await count();
    const rssBefore = procRssBytes(pid);
    await sleep(1500); // perf-ratio.mjs reads the CPU 1.5 s after the server listens
    const wholeStart = procCpuUs(pid);

    // ---- load generator
    const cfg: LoadGenConfig = {
      url: `ws://127.0.0.1:${port}/twilio/v1`,
      streams: o.streams,
      tracks: o.tracks,
      rampS: o.rampS,
      warmupS: o.warmupS,
      seconds: o.seconds,
      tickMs: 2, // perf-ratio.mjs's loadgen --tick 2
    };
    const [gcmd, gargs] = pinned(pin ? 1 : null, [process.execPath, '--import', 'tsx', 'loadtest/load-generator.ts']);
    const genTail = new LogTail();
    gen = spawn(gcmd, gargs, {
      cwd: ROOT,
      env: { ...process.env, LOADGEN_CONFIG: JSON.stringify(cfg) },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    gen.stdout?.on('data', (c: Buffer) => genTail.push(c));
    gen.stderr?.on('data', (c: Buffer) => genTail.push(c));
    const genPid = gen.pid;
    if (genPid === undefined) throw new Error('could not spawn the load generator');

    let start: Snapshot | null = null;
    let end: Snapshot | null = null;
    let rssMax = 0;
    let summary: LoadGenSummary | null = null;
    let lastProg = { at: performance.now(), cpu: procCpuUs(pid), gcpu: procCpuUs(genPid) };
    let pending: Promise<void> = Promise.resolve();
    const snapshot = async (): Promise<Snapshot> => {
      const at = performance.now();
      const cpuUs = procCpuUs(pid);
      const genCpuUs = procCpuUs(genPid);
      const rss = procRssBytes(pid);
      const c = await count();
      return { at, cpuUs, genCpuUs, counted: c.counted, eldP99Ms: c.eld, rss };
    };

    const progressRate = (() => {
      let prev: { t: number; sent: number } | null = null;
      return (m: { t: number; mediaSent: number }) => {
        const r = prev ? (m.mediaSent - prev.sent) / (m.t - prev.t) : m.mediaSent / m.t;
        prev = { t: m.t, sent: m.mediaSent };
        return r;
      };
    })();
    const genDone = new Promise<void>((resolveDone, rejectDone) => {
      gen!.on('message', (m: GenToParent) => {
        pending = pending.then(async () => {
          if (m.type === 'progress') {
            const now = performance.now();
            const dt = (now - lastProg.at) / 1000;
            let scpu = NaN;
            let gcpu = NaN;
            try {
              const c = procCpuUs(pid);
              const g = procCpuUs(genPid);
              scpu = (c - lastProg.cpu) / 1e4 / dt;
              gcpu = (g - lastProg.gcpu) / 1e4 / dt;
              lastProg = { at: now, cpu: c, gcpu: g };
              if (start && !end) rssMax = Math.max(rssMax, procRssBytes(pid));
            } catch {
              /* process gone: reported below */
            }
            console.log(
              `[${kind.padEnd(8)}] ${m.phase.padEnd(8)} t=${m.t.toFixed(0).padStart(3)}s streams ${m.streamsUp}/${o.streams}` +
                ` media sent ${m.mediaSent}  ${fmt(progressRate(m), 0)} msg/s  server cpu ${fmt(scpu, 0)}%  generator cpu ${fmt(gcpu, 0)}%` +
                (m.errors ? `  errors ${m.errors}` : '') +
                `  tick late max ${fmt(m.schedulerMaxLateMs, 0)} ms`,
            );
          } else if (m.type === 'phase') {
            if (m.phase === 'measure') {
              start = await snapshot();
              rssMax = start.rss;
            }
            logPhase(kind, m.phase, m.t);
          } else if (m.type === 'measure-end') {
            end = await snapshot();
            rssMax = Math.max(rssMax, end.rss);
            gen!.send({ type: 'continue' } satisfies ParentToGen);
          // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- an IPC message: checked at run time
          } else if (m.type === 'done') {
            summary = m.summary;
          }
        });
        pending.catch(rejectDone);
      });
      gen!.once('exit', (code, signal) => {
        void pending.then(() => {
          if (code === 0 && summary) resolveDone();
          else rejectDone(new Error(`load generator exited with ${code ?? signal}: ${genTail.get().slice(-10).join(' | ')}`));
        }, rejectDone);
      });
    });

    await genDone;
    const s = summary as LoadGenSummary | null;
    const a = start as Snapshot | null;
    const b = end as Snapshot | null;
    if (!s || !a || !b) throw new Error('load generator finished without a measured window');
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- the exit handler may have set it during the run
    if (serverExited) throw new Error(`${script} died during the run (code ${server.exitCode})`);
    const { streamSids, ...genRest } = s;
    result.generator = genRest;

    // ---- after the run: let the server finish (perf-ratio.mjs: 1.5 s), then count
    await sleep(1500);
    const wholeEnd = procCpuUs(pid);
    const sent = s.mediaSent;
    const frames: NonNullable<ServerResult['frames']> = {
      sent,
      sentByTrack: s.framesSent,
      counted: null,
      countedBy: '',
      lost: null,
    };
    const fin = await count();
    if (kind === 'baseline') {
      frames.counted = fin.counted === null || pre.counted === null ? null : fin.counted - pre.counted;
      frames.countedBy = 'baseline /stats mediaMessages';
    } else {
      frames.metricsFramesReceived = fin.counted === null ? null : fin.counted - (pre.counted ?? 0);
      frames.metricsFramesMissing = fin.missing ?? null;
      const waitStart = performance.now();
      let sc = readSidecars(recordingsDir!);
      while (sc.streamSids.size < streamSids.length && performance.now() - waitStart < 15_000) {
        await sleep(250);
        sc = readSidecars(recordingsDir!);
      }
      frames.sidecars = {
        files: sc.files,
        streams: sc.streamSids.size,
        expectedStreams: streamSids.length,
        framesReceived: sc.framesReceived,
        framesMissing: sc.framesMissing,
        closeReasons: sc.closeReasons,
        finalizeWaitMs: Math.round(1000 + performance.now() - waitStart),
      };
      if (sc.files > 0) {
        frames.counted = sc.framesReceived;
        frames.countedBy = 'gateway sidecars framesReceived';
      } else {
        frames.counted = frames.metricsFramesReceived;
        frames.countedBy = 'gateway_frames_received_total (no sidecars found)';
      }
    }
    frames.lost = frames.counted === null ? null : sent - frames.counted;
    result.frames = frames;

    const windowS = (b.at - a.at) / 1000;
    const cpuUs = b.cpuUs - a.cpuUs;
    const countedInWindow = a.counted !== null && b.counted !== null ? b.counted - a.counted : null;
    const msgs = countedInWindow ?? s.mediaSentInWindow;
    result.window = {
      seconds: windowS,
      mediaCountedByServer: countedInWindow,
      mediaSentByGenerator: s.mediaSentInWindow,
      mediaPerSecond: msgs / windowS,
      cpuUs,
      cpuUsPerMessage: msgs > 0 ? cpuUs / msgs : NaN,
      wholeRunCpuUsPerMessage: sent > 0 ? (wholeEnd - wholeStart) / sent : NaN,
      cpuUtilPct: cpuUs / 1e4 / windowS,
      eventLoopDelayP99Ms: b.eldP99Ms,
      generatorCpuUtilPct: (b.genCpuUs - a.genCpuUs) / 1e4 / windowS,
    };
    result.memory = {
      rssBeforeBytes: rssBefore,
      rssSteadyBytes: b.rss,
      rssMaxBytes: rssMax,
      rssPerStreamBytes: (b.rss - rssBefore) / o.streams,
    };
    result.ok = s.connectFailures === 0;
    if (!result.ok) result.error = `${s.connectFailures} of ${o.streams} streams failed to connect: ${s.errorSamples.slice(0, 3).join('; ')}`;
  } catch (err) {
    result.ok = false;
    result.error = err instanceof Error ? err.message : String(err);
    await waitExit(server, 200);
    if (serverExited) result.error += ` (${script} exited with ${server.exitCode ?? server.signalCode})`;
  } finally {
    if (gen) await stopProcess(gen);
    await stopProcess(server);
    result.serverLogTail = tail.get().slice(-20);
    if (recordingsDir && !o.keepRecordings) rmSync(recordingsDir, { recursive: true, force: true });
    else if (recordingsDir) console.log(`[${kind}] recordings kept in ${recordingsDir}`);
  }
  return result;
}

function logPhase(kind: ServerKind, phase: Phase, t: number): void {
  console.log(`[${kind.padEnd(8)}] --- ${phase} (t=${t.toFixed(1)}s)`);
}

// ---------------------------------------------------------------------------------------------
// report

function table(results: ServerResult[]): string {
  const col = (r: ServerResult, f: (r: ServerResult) => string) => (r.window ? f(r) : r.ok ? 'n/a' : 'FAILED');
  const rows: [string, (r: ServerResult) => string][] = [
    ['CPU µs per media message (whole run, as perf-ratio)', (r) => fmt(r.window!.wholeRunCpuUsPerMessage, 2)],
    ['CPU µs per media message (steady window)', (r) => fmt(r.window!.cpuUsPerMessage, 2)],
    ['server CPU (% of one core)', (r) => fmt(r.window!.cpuUtilPct, 1)],
    ['media msgs/s counted by server', (r) => fmt(r.window!.mediaPerSecond, 0)],
    ['event-loop delay p99 (ms)', (r) => fmt(r.window!.eventLoopDelayP99Ms, 1)],
    ['RSS before load (MiB)', (r) => mib(r.memory?.rssBeforeBytes)],
    ['RSS steady state (MiB)', (r) => mib(r.memory?.rssSteadyBytes)],
    ['RSS per stream (KiB)', (r) => fmt((r.memory?.rssPerStreamBytes ?? NaN) / 1024, 1)],
    ['frames sent', (r) => String(r.frames?.sent ?? 'n/a')],
    ['frames counted', (r) => `${r.frames?.counted ?? 'n/a'}`],
    ['frames lost (sent − counted)', (r) => `${r.frames?.lost ?? 'n/a'}`],
    ['frames missing (gap-filled)', (r) => (r.frames?.sidecars ? String(r.frames.sidecars.framesMissing) : '–')],
    ['sidecars / streams', (r) => (r.frames?.sidecars ? `${r.frames.sidecars.files} / ${r.frames.sidecars.streams} of ${r.frames.sidecars.expectedStreams}` : '–')],
    ['generator CPU (% of one core)', (r) => fmt(r.window!.generatorCpuUtilPct, 1)],
  ];
  const lines = [`| metric | ${results.map((r) => (r.round ? `${r.server} #${r.round}` : r.server)).join(' | ')} |`, `|---|${results.map(() => '---:').join('|')}|`];
  for (const [name, f] of rows) lines.push(`| ${name} | ${results.map((r) => col(r, f)).join(' | ')} |`);
  return lines.join('\n');
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let o: BenchOptions;
  try {
    o = parseOptions(argv);
  } catch (err) {
    if (err instanceof HelpRequested) {
      console.log(USAGE);
      return 0;
    }
    console.error(`bench: ${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    return 2;
  }
  let pin = o.pin;
  const cores = cpus().length;
  if (pin && cores < 2) {
    console.warn(`WARNING: only ${cores} CPU core(s): running without pinning; figures will be noisy`);
    pin = false;
  } else if (pin && !tasksetWorks()) {
    console.warn('WARNING: taskset is missing or cannot pin to CPUs 0 and 1: running without pinning; figures will be noisy');
    pin = false;
  }
  const command = `node --import tsx loadtest/bench.ts ${argv.join(' ')}`.trim();
  console.log(
    `bench: ${o.streams} streams × ${o.tracks.join('+')} (${o.streams * o.tracks.length * 50} media msg/s), ramp ${o.rampS}s, ` +
      `warmup ${o.warmupS}s, window ${o.seconds}s; servers ${o.servers.join(', ')}; ` +
      (pin ? 'server on CPU 0, generator on CPU 1' : 'no pinning'),
  );

  // Rounds alternate the order (A B, B A, …) so slow drift on a shared machine hits both.
  const results: ServerResult[] = [];
  const roundRatios: number[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    const order = round % 2 === 1 ? o.servers : [...o.servers].reverse();
    const inRound: ServerResult[] = [];
    for (const kind of order) {
      if (kind === 'gateway' && !existsSync(join(ROOT, 'gateway/main.ts'))) {
        inRound.push({ server: kind, ok: false, error: 'gateway/main.ts does not exist (use --only baseline)' });
        console.error(`[gateway ] FAILED: gateway/main.ts does not exist`);
        continue;
      }
      if (o.rounds > 1) console.log(`--- round ${round}/${o.rounds}: ${kind}`);
      const r = await benchServer(kind, o, pin);
      if (!r.ok) {
        console.error(`[${kind.padEnd(8)}] FAILED: ${r.error}`);
        if (r.serverLogTail?.length) console.error(`  server output (tail):\n    ${r.serverLogTail.join('\n    ')}`);
      }
      inRound.push(r);
    }
    const b = inRound.find((r) => r.server === 'baseline');
    const g = inRound.find((r) => r.server === 'gateway');
    if (b?.window && g?.window) roundRatios.push(g.window.wholeRunCpuUsPerMessage / b.window.wholeRunCpuUsPerMessage);
    if (o.rounds > 1) for (const r of inRound) r.round = round;
    results.push(...inRound.sort((x, y) => x.server.localeCompare(y.server)));
  }

  console.log('\n' + table(results) + '\n');
  const verdicts: Record<string, string> = {};
  let ratio: number | null = null;
  if (roundRatios.length > 0) {
    const sorted = [...roundRatios].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    ratio = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
    verdicts.cpuRatio = ratio <= TARGET_CPU_RATIO ? 'PASS' : 'MISS';
    const per = roundRatios.length > 1 ? ` (rounds: ${roundRatios.map((r) => fmt(r, 2)).join(', ')}; median)` : '';
    console.log(`CPU per message gateway/baseline = ${fmt(ratio, 2)}${per} (target ≤ ${TARGET_CPU_RATIO}): ${verdicts.cpuRatio}`);
  }
  for (const r of results) {
    if (r.frames?.lost === null || r.frames?.lost === undefined) continue;
    const v = r.frames.lost === 0 ? 'PASS' : 'MISS';
    verdicts[`${r.server}FramesLost`] = v;
    console.log(`${r.server}: frames lost ${r.frames.lost} of ${r.frames.sent} (target 0): ${v}`);
  }
  for (const r of results) {
    if (r.window && r.window.generatorCpuUtilPct > 90) {
      console.warn(`WARNING: the load generator used ${fmt(r.window.generatorCpuUtilPct, 0)}% of its core during the ${r.server} run: the load may be generator-bound`);
    }
  }

  const cpuinfo = (() => {
    try {
      return /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
    } catch {
      return 'unknown';
    }
  })();
  const date = new Date();
  const report = {
    date: date.toISOString(),
    command,
    npmCommand: `npm run bench -- ${argv.join(' ')}`.trim(),
    machine: { cpuModel: cpuinfo, cores, node: process.version, platform: `${process.platform} ${process.arch}`, clkTck: CLK_TCK, pinned: pin },
    options: { streams: o.streams, seconds: o.seconds, tracks: o.tracksArg, warmupS: o.warmupS, rampS: o.rampS, servers: o.servers, rounds: o.rounds },
    targets: { cpuRatioMax: TARGET_CPU_RATIO, framesLost: 0 },
    cpuRatio: ratio,
    roundRatios,
    verdicts,
    results,
  };
  mkdirSync(o.outDir, { recursive: true });
  const file = join(o.outDir, `bench-${date.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  console.log(`results written to ${file}`);
  return results.every((r) => r.ok) ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
