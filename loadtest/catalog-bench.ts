// npm run bench:catalog [-- --counts 100000,1000000 --pg --queries 300 --data DIR --steps first,second,rebuild,pg]
//
// Catalog figures (BENCHMARKS.md, issue 10). For each count N: N synthetic recordings (a real
// sidecar, recorded here through a gateway, cloned with new SIDs over 28 days) are written to a
// fresh RECORDINGS_DIR; then, with real processes (`node dist/gateway/main.js`, the compiled code
// `npm start` runs, built first with `tsc -b tsconfig.build.json`):
// - first start on that directory: time to the first /healthz 200, the background import's
//   rate (sidecars/s, read from disk), the time until /readyz says ready, the slowest /healthz
//   answer during the import (is the event loop free?), RSS and the JS heap after import;
// - list/search latency over HTTP, one request at a time, p50/p99 per filter (callSid,
//   ctiSessionId, employeeId, a day's range, an account; combined filters; count=true);
// - second start on the filled catalog: /healthz time, the reconcile's time, RSS;
// - npm run catalog:rebuild (every sidecar read again): its rate;
// - with --pg: the same node on DATABASE_URL (the local PostgreSQL, a scratch database dropped
//   at the end; PGURL overrides): import rate, the same queries, catalog:rebuild.
// `--data DIR` keeps the generated recordings in DIR/<N> (and the template in DIR/template.json)
// and reuses them on the next run: generating a million takes minutes. The catalog files are
// removed before each run, so every run imports from scratch.
// Run it under `flock /work/bench.lock` on a shared machine; it prints `uptime` before and after.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { loadConfig } from '../gateway/config.js';
import { buildGateway } from '../gateway/server.js';
import { runStream } from './stream-runner.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { sidecarPathOf } from '../recorder/storage-layout.js';
import { syntheticSidecar, writeSyntheticRecordings, type SyntheticOptions } from './synthetic-recordings.js';
import { freePort } from './free-port.js';

const run = promisify(execFile);
/** `--project DIR`: the checkout whose compiled node and rebuild are measured (before/after in one session) */
const ROOT = process.argv.includes('--project')
  ? path.resolve(process.argv[process.argv.indexOf('--project') + 1] ?? '.')
  : fileURLToPath(new URL('..', import.meta.url));
const MAIN = path.join(ROOT, 'dist/gateway/main.js');
const REBUILD = path.join(ROOT, 'dist/gateway/catalog-rebuild-cli.js');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return (i >= 0 ? process.argv[i + 1] : undefined) ?? def;
}
const COUNTS = arg('counts', '100000').split(',').map(Number);
const QUERIES = Number(arg('queries', '300'));
const WITH_PG = process.argv.includes('--pg');
const PGURL = process.env.PGURL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ACCOUNTS = ['AC' + 'a'.repeat(32), 'AC' + 'b'.repeat(32), 'AC' + 'c'.repeat(32), 'AC' + 'd'.repeat(32)];

const DATA = process.argv.includes('--data') ? path.resolve(arg('data', '')) : null;
/** with --data: write the recordings and stop (no figures) */
const GENERATE_ONLY = process.argv.includes('--generate-only');
/**
 * `--steps first,second,rebuild,pg` (default all): a subset of the measurements, so that a 1 M run
 * fits in several short holds of the bench lock. `first` starts from an empty catalog (its files
 * removed); `second` and `rebuild` use the SQLite catalog the `first` step of an earlier run left
 * in `--data`.
 */
const STEPS = new Set(arg('steps', 'first,second,rebuild,pg').split(','));

const say = (s: string) => process.stdout.write(`${s}\n`);


/** One real recording through an in-process gateway: the sidecar every synthetic one clones. */
async function realSidecar(): Promise<RecordingSidecar> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'catbench-tpl-'));
  const gw = await buildGateway(loadConfig({ PORT: '0', HOST: '127.0.0.1', RECORDINGS_DIR: dir, LOG_LEVEL: 'silent' }));
  const port = await gw.listen();
  const r = await runStream({ url: `ws://127.0.0.1:${port}/twilio/v1`, tracks: ['inbound', 'outbound'], seed: 1, frames: 250, realtime: false, customParameters: { ctiSessionId: 'tpl', employeeId: 'tpl' } });
  await gw.recorder.settled();
  let s: RecordingSidecar | undefined;
  for (let i = 0; i < 100 && !s; i++) {
    s = (await gw.index.query({ callSid: r.callSid, limit: 1 })).items[0];
    if (!s) await new Promise((res) => setTimeout(res, 50));
  }
  await gw.close();
  const text = await readFile(sidecarPathOf(dir, s!), 'utf8');
  await rm(dir, { recursive: true, force: true });
  return JSON.parse(text) as RecordingSidecar;
}

interface Node { child: ChildProcess; http: string; spawnedAt: number; out: () => string }

function rssMb(pid: number): { rss: number; hwm: number } {
  const st = execFileSync('cat', [`/proc/${pid}/status`]).toString();
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(st)?.[1] ?? 0);
  return { rss: Math.round(kb('VmRSS') / 1024), hwm: Math.round(kb('VmHWM') / 1024) };
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
/**
 * CPU seconds the node has used (all its threads: user + system), from /proc/<pid>/stat: what an
 * import costs whatever else the machine runs, where its rate and loop delay depend on the load.
 */
function cpuSeconds(pid: number): number {
  const stat = execFileSync('cat', [`/proc/${pid}/stat`]).toString();
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd (state) on
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime, stime: the 14th and 15th fields
}
const cpuOf = (n: Node, found: number | undefined) => {
  const s = cpuSeconds(n.child.pid!);
  return `node CPU ${s.toFixed(1)} s since spawn (${found ? ((s * 1e6) / found).toFixed(0) : '?'} µs per sidecar)`;
};

async function startNode(env: Record<string, string>): Promise<Node> {
  const port = await freePort();
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, [MAIN], {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); if (out.length > 1e6) out = out.slice(-5e5); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  return { child, http: `http://127.0.0.1:${port}`, spawnedAt, out: () => out };
}

async function untilOk(url: string, timeoutMs: number, everyMs = 10): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const ok = await fetch(url).then((r) => r.status === 200, () => false);
    if (ok) return performance.now();
    if (performance.now() > deadline) throw new Error(`${url} not 200 within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

async function stopNode(n: Node): Promise<void> {
  if (n.child.exitCode !== null) return;
  const exited = new Promise((r) => n.child.once('exit', r));
  n.child.kill('SIGTERM');
  await exited;
}

const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

/**
 * Waits for the import, printing its progress; returns ms from spawn to ready and the slowest
 * /healthz answer meanwhile (polled every 100 ms: a blocked event loop shows here).
 */
/**
 * The node's event-loop delay, from its /metrics (prom-client's monitorEventLoopDelay, 10 ms
 * resolution, reset at every scrape): scraped every second, the first window (start-up) left out.
 * p99: the highest of the windows' p99s; max: the highest delay seen. Both include the 10 ms timer
 * period (an idle loop shows about 10 ms).
 */
class LoopLag {
  p99 = 0;
  max = 0;
  windows = 0;
  #last = 0;
  async sample(n: Node): Promise<string> {
    if (performance.now() - this.#last < 1000) return '';
    this.#last = performance.now();
    const m = await fetch(`${n.http}/metrics`).then((r) => r.text(), () => '');
    if (this.windows++ > 0) {
      this.p99 = Math.max(this.p99, metric(m, 'nodejs_eventloop_lag_p99_seconds') * 1000);
      this.max = Math.max(this.max, metric(m, 'nodejs_eventloop_lag_max_seconds') * 1000);
    }
    return m;
  }
  describe(): string {
    return `event-loop delay (10 ms timer) p99 ${this.p99.toFixed(1)} ms, max ${this.max.toFixed(1)} ms over ${this.windows - 1} one-second windows`;
  }
}

async function waitImported(n: Node, total: number): Promise<{ readyMs: number; healthzMaxMs: number; lag: LoopLag }> {
  let last = 0;
  let healthzMaxMs = 0;
  const lag = new LoopLag();
  for (;;) {
    const t0 = performance.now();
    await fetch(`${n.http}/healthz`).then((r) => r.arrayBuffer(), () => undefined);
    healthzMaxMs = Math.max(healthzMaxMs, performance.now() - t0);
    const ready = await fetch(`${n.http}/readyz`).then((r) => r.status === 200, () => false);
    if (ready) return { readyMs: performance.now() - n.spawnedAt, healthzMaxMs, lag };
    const m = await lag.sample(n);
    if (m !== '' && performance.now() - last > 5000) {
      last = performance.now();
      const done = metric(m, 'gateway_catalog_import_done');
      say(`    import: ${done}/${total} sidecars after ${((performance.now() - n.spawnedAt) / 1000).toFixed(1)} s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The node's summary line of its (first) catalog run. */
function reconciled(n: Node): { found: number; seconds: number } | null {
  const line = n.out().split('\n').find((l) => l.includes('"catalog reconciled with RECORDINGS_DIR"'));
  return line ? JSON.parse(line) as { found: number; seconds: number } : null;
}

const rate = (d: { found: number; seconds: number } | null) => (d ? Math.round(d.found / d.seconds) : '?');

/** Polls /healthz until the reconcile's summary is logged; returns the slowest /healthz answer. */
async function waitReconciled(n: Node): Promise<{ slowest: number; lag: LoopLag }> {
  let slowest = 0;
  const lag = new LoopLag();
  while (reconciled(n) === null) {
    const t0 = performance.now();
    await fetch(`${n.http}/healthz`).then((r) => r.arrayBuffer(), () => undefined);
    slowest = Math.max(slowest, performance.now() - t0);
    await lag.sample(n);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { slowest, lag };
}

/** RSS (and its peak) from /proc, the JS heap and external memory from the node's /metrics. */
async function memory(n: Node): Promise<string> {
  const m = await fetch(`${n.http}/metrics`).then((r) => r.text(), () => '');
  const mb = (name: string) => Math.round(metric(m, name) / 1048576);
  const r = rssMb(n.child.pid!);
  return `RSS ${r.rss} MB (peak ${r.hwm} MB), JS heap used ${mb('nodejs_heap_size_used_bytes')} of ${mb('nodejs_heap_size_total_bytes')} MB, external ${mb('nodejs_external_memory_bytes')} MB`;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

/** p50/p99 ms of `QUERIES` requests per filter, one at a time. */
async function queryFigures(http: string, synth: SyntheticOptions): Promise<Record<string, { p50: number; p99: number; items: number }>> {
  const n = synth.count;
  const pick = (k: number) => syntheticSidecar(synth, (k * 104729) % n);
  const day = 24 * 3600 * 1000;
  const endMs = (synth.end ?? new Date('2026-01-01T00:00:00Z')).getTime();
  const dayRange = (k: number) => {
    const from = endMs - ((k % 27) + 1) * day;
    return `from=${new Date(from).toISOString()}&to=${new Date(from + day).toISOString()}`;
  };
  const filters: Record<string, (k: number) => string> = {
    callSid: (k) => `callSid=${pick(k).callSid}`,
    ctiSessionId: (k) => `ctiSessionId=${pick(k).ctiSessionId}`,
    employeeId: (k) => `employeeId=${pick(k).employeeId}`,
    'day range': (k) => {
      const from = endMs - ((k % 27) + 1) * day;
      return `from=${new Date(from).toISOString()}&to=${new Date(from + day).toISOString()}`;
    },
    account: (k) => `accountSid=${ACCOUNTS[k % ACCOUNTS.length]}`,
    'account + closeReason + minDurationMs': (k) => `accountSid=${ACCOUNTS[k % ACCOUNTS.length]}&closeReason=hangup&minDurationMs=300000`,
    'employeeId + a day': (k) => `employeeId=${pick(k).employeeId}&${dayRange(k)}`,
    'account + a day': (k) => `accountSid=${ACCOUNTS[k % ACCOUNTS.length]}&${dayRange(k)}`,
    'closeReason + minDurationMs': (k) => `closeReason=${['hangup', 'idle', 'rotate'][k % 3]}&minDurationMs=${300_000 + (k % 10) * 30_000}`,
    'day range, count=true': (k) => `${dayRange(k)}&count=true`,
    'account, count=true': (k) => `accountSid=${ACCOUNTS[k % ACCOUNTS.length]}&count=true`,
    'no filter, count=true': () => 'count=true',
    'account + a day, count=true': (k) => `accountSid=${ACCOUNTS[k % ACCOUNTS.length]}&${dayRange(k)}&count=true`,
  };
  const out: Record<string, { p50: number; p99: number; items: number }> = {};
  for (const [name, qs] of Object.entries(filters)) {
    for (let k = 0; k < 20; k++) await fetch(`${http}/v1/recordings?${qs(k)}`).then((r) => r.arrayBuffer()); // warm-up
    const times: number[] = [];
    let items = 0;
    for (let k = 0; k < QUERIES; k++) {
      const t0 = performance.now();
      const body = (await (await fetch(`${http}/v1/recordings?${qs(k + 1000)}`)).json()) as { items: unknown[] };
      times.push(performance.now() - t0);
      items += body.items.length;
    }
    times.sort((a, b) => a - b);
    out[name] = { p50: +pct(times, 50).toFixed(2), p99: +pct(times, 99).toFixed(2), items: Math.round(items / QUERIES) };
  }
  return out;
}

function printQueries(q: Record<string, { p50: number; p99: number; items: number }>): void {
  for (const [name, f] of Object.entries(q)) say(`    ${name.padEnd(40)} p50 ${String(f.p50).padStart(6)} ms  p99 ${String(f.p99).padStart(6)} ms  (${f.items} items/page)`);
}

const exists = (p: string) => access(p).then(() => true, () => false);

/** With --data: the template kept from the run that generated the data. */
async function template(): Promise<RecordingSidecar> {
  const file = DATA === null ? null : path.join(DATA, 'template.json');
  if (file !== null && await exists(file)) return JSON.parse(await readFile(file, 'utf8')) as RecordingSidecar;
  const t = await realSidecar();
  if (file !== null) {
    await mkdir(DATA!, { recursive: true }); // file !== null only when DATA is set
    await writeFile(file, JSON.stringify(t));
  }
  return t;
}

async function benchCount(template: RecordingSidecar, count: number): Promise<void> {
  say(`\n== ${count} recordings`);
  const dir = DATA === null ? await mkdtemp(path.join(os.tmpdir(), 'catbench-')) : path.join(DATA, String(count));
  try {
    const wav = path.join(dir, '.template.wav');
    const synth: SyntheticOptions = { recordingsDir: dir, count, template, days: 28, accounts: ACCOUNTS, employees: 1000, linkAudioTo: wav, concurrency: 64 };
    const marker = path.join(dir, '.generated');
    if (await exists(marker)) {
      say(`  reusing the ${count} recordings in ${dir}`);
      if (STEPS.has('first')) {
        for (const f of ['.catalog.sqlite', '.catalog.sqlite-wal', '.catalog.sqlite-shm', '.catalog']) await rm(path.join(dir, f), { recursive: true, force: true });
      }
    } else {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      const g0 = performance.now();
      await writeSyntheticRecordings({ ...synth, onProgress: (w) => { if (w % 100_000 === 0) say(`    written ${w}/${count}`); } });
      await writeFile(marker, '');
      say(`  generated ${count} sidecars (+ hard-linked WAVs) in ${((performance.now() - g0) / 1000).toFixed(1)} s`);
    }
    if (GENERATE_ONLY) return;

    if (STEPS.has('first')) {
      // first start: empty catalog, every sidecar imported in the background
      const n1 = await startNode({ RECORDINGS_DIR: dir, NODE_ID: 'bench' });
      const healthz1 = (await untilOk(`${n1.http}/healthz`, 60_000)) - n1.spawnedAt;
      const imp = await waitImported(n1, count);
      const done = reconciled(n1);
      const cpu1 = cpuOf(n1, done?.found);
      const mem1 = await memory(n1);
      say(`  first start: /healthz after ${healthz1.toFixed(0)} ms; import of ${done?.found} sidecars in ${done?.seconds} s = ${rate(done)} sidecars/s; ${cpu1}; ready after ${(imp.readyMs / 1000).toFixed(1)} s; slowest /healthz during the import ${imp.healthzMaxMs.toFixed(0)} ms; ${imp.lag.describe()}; ${mem1}`);
      const q = await queryFigures(n1.http, synth);
      say(`  SQLite, list/search over HTTP (${QUERIES} requests per filter, one at a time):`);
      printQueries(q);
      say(`  after queries: ${await memory(n1)}`);
      await stopNode(n1);
    }

    if (STEPS.has('second')) {
      // second start on the filled catalog: ready at once, the reconcile runs behind
      const n2 = await startNode({ RECORDINGS_DIR: dir, NODE_ID: 'bench' });
      const healthz2 = (await untilOk(`${n2.http}/healthz`, 60_000)) - n2.spawnedAt;
      const ready2 = (await untilOk(`${n2.http}/readyz`, 600_000, 50)) - n2.spawnedAt;
      const rec = await waitReconciled(n2);
      const d2 = reconciled(n2);
      const cpu2 = cpuOf(n2, d2?.found);
      const mem2 = await memory(n2);
      say(`  second start (catalog filled): /healthz after ${healthz2.toFixed(0)} ms, ready after ${ready2.toFixed(0)} ms; reconcile of ${d2?.found} sidecars (${(d2 as { imported?: number } | null)?.imported} of them imported) in ${d2?.seconds} s, ${cpu2}, slowest /healthz meanwhile ${rec.slowest.toFixed(0)} ms, ${rec.lag.describe()}; ${mem2}`);
      const q2 = await queryFigures(n2.http, { ...synth });
      // without the first step (its catalog filled by an earlier run), these are the SQLite query figures
      if (!STEPS.has('first')) {
        say(`  SQLite, list/search over HTTP after the second start:`);
        printQueries(q2);
      }
      say(`  second start, after queries: ${await memory(n2)}`);
      await stopNode(n2);
    }

    if (STEPS.has('rebuild')) {
      // npm run catalog:rebuild: every sidecar read again
      const rb = await run(process.execPath, [REBUILD], {
        env: { PATH: process.env.PATH ?? '', RECORDINGS_DIR: dir }, maxBuffer: 64 * 1024 * 1024,
      });
      say(`  catalog:rebuild: ${rb.stdout.trim()}`);
    }

    if (WITH_PG && STEPS.has('pg')) {
      const admin = new pg.Client({ connectionString: PGURL });
      await admin.connect();
      const db = `catbench_${process.pid}_${count}`;
      await admin.query(`CREATE DATABASE ${db}`);
      const url = new URL(PGURL);
      url.pathname = `/${db}`;
      try {
        const n3 = await startNode({ RECORDINGS_DIR: dir, NODE_ID: 'bench-pg', DATABASE_URL: url.toString() });
        const healthz3 = (await untilOk(`${n3.http}/healthz`, 60_000)) - n3.spawnedAt;
        const imp3 = await waitImported(n3, count);
        const d3 = reconciled(n3);
        say(`  PostgreSQL: /healthz after ${healthz3.toFixed(0)} ms; import ${d3?.found} sidecars in ${d3?.seconds} s = ${rate(d3)} sidecars/s; ${cpuOf(n3, d3?.found)}; slowest /healthz during the import ${imp3.healthzMaxMs.toFixed(0)} ms; ${imp3.lag.describe()}; ${await memory(n3)}`);
        const qp = await queryFigures(n3.http, synth);
        say(`  PostgreSQL, list/search over HTTP:`);
        printQueries(qp);
        say(`  after queries: ${await memory(n3)}`);
        await stopNode(n3);
        const rbp = await run(process.execPath, [REBUILD], {
          env: { PATH: process.env.PATH ?? '', RECORDINGS_DIR: dir, DATABASE_URL: url.toString() }, maxBuffer: 64 * 1024 * 1024,
        });
        say(`  PostgreSQL catalog:rebuild: ${rbp.stdout.trim()}`);
      } finally {
        await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
        await admin.end();
      }
    }
  } finally {
    if (DATA === null) await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  say(`catalog bench: counts ${COUNTS.join(', ')}; ${os.cpus().length} cores; node ${process.version}; project ${ROOT} (${(await run('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])).stdout.trim()})`);
  say(`uptime before: ${(await run('uptime')).stdout.trim()}`);
  // the processes run the compiled code, as `npm start` and `npm run catalog:rebuild` do
  await run(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-b', path.join(ROOT, 'tsconfig.build.json')]);
  const t = await template();
  say(`template: a real sidecar of ${JSON.stringify(t).length} bytes`);
  for (const n of COUNTS) await benchCount(t, n);
  say(`uptime after: ${(await run('uptime')).stdout.trim()}`);
}

main().catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err.message}\n`);
  process.exit(1);
});
