// Kinesis agent events, put -> applied, with each party in its own process: kinesalite (its own
// CLI, in memory), the gateway (`node`, default consumer timings, KINESIS_START=LATEST) and this
// script, which only puts TaskRouter CloudEvents at a fixed rate (PutRecords every 100 ms) and
// reads the gateway's /metrics. Latency is the gateway's gateway_kinesis_apply_lag_seconds: from
// the record's ApproximateArrivalTimestamp (kinesalite's clock when it took the PutRecords, the
// same machine) to the events being applied; the PutRecords round trip is reported beside it.
//
//   node --import tsx loadtest/kinesis-bench.ts [--rate 1000] [--seconds 30] [--latency-rate 50] [--latency-seconds 20]
//   node --import tsx loadtest/kinesis-bench.ts --load-only --rate 1000 --write-env FILE [--account AC...]
//       starts kinesalite, creates the 2-shard stream, writes the gateway's KINESIS_* settings to
//       FILE (shell `export` lines) and puts `--rate` events per second until SIGTERM: the
//       background load for perf-ratio.mjs runs (BENCHMARKS.md)
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CreateStreamCommand, DescribeStreamSummaryCommand, KinesisClient, PutRecordsCommand } from '@aws-sdk/client-kinesis';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { randomSid } from './sids.js';
import { freePort } from './free-port.js';

const { values } = parseArgs({ options: {
  rate: { type: 'string', default: '1000' }, seconds: { type: 'string', default: '30' },
  'latency-rate': { type: 'string', default: '50' }, 'latency-seconds': { type: 'string', default: '20' },
  'load-only': { type: 'boolean', default: false }, 'write-env': { type: 'string' }, account: { type: 'string' },
} });
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ACCOUNT = values.account ?? randomSid('AC');
const STREAM = 'twilio-events';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


async function waitHttp(url: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      await fetch(url, { method: 'POST' });
      return;
    } catch {
      if (Date.now() > end) throw new Error(`${url} never answered`);
      await sleep(100);
    }
  }
}

const children: ChildProcess[] = [];
function stopChildren(): void {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
}
process.on('exit', stopChildren);

/** kinesalite in its own process, a 2-shard stream on it, and an SDK client for putting. */
async function startKinesis(): Promise<{ endpoint: string; client: KinesisClient }> {
  const port = await freePort();
  const k = spawn(path.join(ROOT, 'node_modules/.bin/kinesalite'), ['--port', String(port), '--createStreamMs', '0', '--updateStreamMs', '0'], { stdio: 'ignore' });
  children.push(k);
  const endpoint = `http://127.0.0.1:${port}`;
  await waitHttp(endpoint, 20_000);
  const client = new KinesisClient({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' }, requestHandler: new NodeHttpHandler() });
  await client.send(new CreateStreamCommand({ StreamName: STREAM, ShardCount: 2 }));
  while ((await client.send(new DescribeStreamSummaryCommand({ StreamName: STREAM }))).StreamDescriptionSummary?.StreamStatus !== 'ACTIVE') await sleep(20);
  return { endpoint, client };
}

const gatewayEnv = (endpoint: string): Record<string, string> => ({
  TWILIO_ACCOUNT_SID: ACCOUNT, KINESIS_STREAM: STREAM, KINESIS_REGION: 'us-east-1', KINESIS_ENDPOINT: endpoint,
  KINESIS_START: 'LATEST', KINESIS_ACCESS_KEY_ID: 'bench', KINESIS_SECRET_ACCESS_KEY: 'bench', AWS_EC2_METADATA_DISABLED: 'true',
});

let n = 0;
function event(): { data: Uint8Array; key: string } {
  const id = `NO${(++n).toString(16).padStart(32, '0')}`;
  const callSid = randomSid('CA');
  const now = new Date().toISOString();
  const payload = {
    eventtype: 'reservation.created', account_sid: ACCOUNT, timestamp: now, task_sid: 'WT1', worker_sid: 'WK1', worker_name: 'bench',
    task_attributes: JSON.stringify({ call_sid: callSid }), worker_attributes: '{}',
  };
  const ce = { specversion: '1.0', type: 'com.twilio.taskrouter.reservation.created', id, time: now, data: { account_sid: ACCOUNT, payload } };
  return { data: Buffer.from(JSON.stringify(ce)), key: callSid };
}

/** Put `rate` events per second for `seconds` (Infinity: until stopped), a batch every 100 ms. */
async function put(client: KinesisClient, rate: number, seconds: number, stop: { now: boolean } = { now: false }): Promise<{ put: number; wallS: number; putMs: number[] }> {
  const start = performance.now();
  const perTick = rate / 10;
  const putMs: number[] = [];
  let count = 0;
  for (let tick = 0; tick < seconds * 10 && !stop.now; tick++) {
    const wait = start + tick * 100 - performance.now();
    if (wait > 0) await sleep(wait);
    const k = Math.floor(perTick * (tick + 1)) - Math.floor(perTick * tick);
    const batch = Array.from({ length: k }, event);
    const t0 = performance.now();
    const r = await client.send(new PutRecordsCommand({ StreamName: STREAM, Records: batch.map((e) => ({ PartitionKey: e.key, Data: e.data })) }));
    if (r.FailedRecordCount) throw new Error(`${r.FailedRecordCount} records not put`);
    putMs.push(performance.now() - t0);
    count += k;
  }
  return { put: count, wallS: (performance.now() - start) / 1000, putMs };
}

interface Scrape { applied: number; lag: Map<number, number>; lagCount: number }
async function scrape(port: number): Promise<Scrape> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let applied = 0;
  let lagCount = 0;
  const lag = new Map<number, number>();
  for (const line of text.split('\n')) {
    let m = /^gateway_kinesis_records_total\{[^}]*result="applied"[^}]*\} (\S+)$/.exec(line);
    if (m) applied += Number(m[1]);
    m = /^gateway_kinesis_apply_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$/.exec(line);
    if (m) lag.set(m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2]));
    m = /^gateway_kinesis_apply_lag_seconds_count (\S+)$/.exec(line);
    if (m) lagCount = Number(m[1]);
  }
  return { applied, lag, lagCount };
}

/** Quantile of the histogram difference b - a, linear inside its bucket (seconds). */
function quantile(a: Scrape, b: Scrape, q: number): number {
  const total = b.lagCount - a.lagCount;
  let prevLe = 0;
  let prevCum = 0;
  for (const [le, cum] of [...b.lag.entries()].sort((x, y) => x[0] - y[0])) {
    const c = cum - (a.lag.get(le) ?? 0);
    if (c >= q * total) {
      if (le === Infinity) return Infinity;
      return prevLe + ((le - prevLe) * (q * total - prevCum)) / Math.max(1, c - prevCum);
    }
    prevLe = le;
    prevCum = c;
  }
  return NaN;
}

const pct = (xs: number[], p: number) => [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;

async function phase(label: string, client: KinesisClient, port: number, rate: number, seconds: number): Promise<void> {
  const before = await scrape(port);
  const r = await put(client, rate, seconds);
  const putEnd = performance.now();
  let after = await scrape(port);
  const deadline = putEnd + 60_000;
  while (after.applied - before.applied < r.put && performance.now() < deadline) {
    await sleep(100);
    after = await scrape(port);
  }
  const applied = after.applied - before.applied;
  const drainS = (performance.now() - putEnd) / 1000;
  const within1s = ((after.lag.get(1) ?? 0) - (before.lag.get(1) ?? 0)) / Math.max(1, after.lagCount - before.lagCount);
  console.log(`| ${label} | ${r.put} in ${r.wallS.toFixed(1)} s (${(r.put / r.wallS).toFixed(0)} ev/s) | ${applied}, last ${drainS.toFixed(1)} s after the last put | `
    + `${(quantile(before, after, 0.5) * 1000).toFixed(0)} / ${(quantile(before, after, 0.99) * 1000).toFixed(0)} ms | ${(within1s * 100).toFixed(2)} % | ${pct(r.putMs, 50).toFixed(0)} / ${pct(r.putMs, 99).toFixed(0)} ms |`);
}

async function main(): Promise<void> {
  const { endpoint, client } = await startKinesis();
  if (values['load-only']) {
    const file = values['write-env'];
    if (!file) throw new Error('--load-only needs --write-env');
    await writeFile(file, Object.entries(gatewayEnv(endpoint)).map(([k, v]) => `export ${k}=${v}\n`).join(''));
    const stop = { now: false };
    process.on('SIGTERM', () => { stop.now = true; });
    const r = await put(client, Number(values.rate), Infinity, stop);
    console.log(`put ${r.put} events in ${r.wallS.toFixed(1)} s (${(r.put / r.wallS).toFixed(0)} ev/s); PutRecords p50 ${pct(r.putMs, 50).toFixed(0)} ms, p99 ${pct(r.putMs, 99).toFixed(0)} ms`);
    client.destroy();
    stopChildren();
    return;
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kinesis-bench-'));
  const port = await freePort();
  const gw = spawn(process.execPath, ['--import', 'tsx', 'gateway/main.ts'], {
    cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, ...gatewayEnv(endpoint), PORT: String(port), HOST: '127.0.0.1', RECORDINGS_DIR: dir, LOG_LEVEL: 'error' },
  });
  children.push(gw);
  try {
    const end = Date.now() + 60_000;
    for (;;) {
      try {
        // both shards taken (LATEST) before anything is put: the millis-behind gauge has them
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        if ((text.match(/^gateway_kinesis_millis_behind_latest\{/gm) ?? []).length >= 2) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > end) throw new Error('the gateway never read both shards');
      await sleep(200);
    }
    console.log('| run | put | applied | arrival -> applied p50 / p99 | applied within 1 s | PutRecords p50 / p99 |');
    console.log('|---|---|---|---|---|---|');
    await phase(`${values['latency-rate']} ev/s, 2 shards`, client, port, Number(values['latency-rate']), Number(values['latency-seconds']));
    await phase(`${values.rate} ev/s sustained, 2 shards`, client, port, Number(values.rate), Number(values.seconds));
  } finally {
    gw.kill('SIGTERM');
    await once(gw, 'exit');
    client.destroy();
    stopChildren();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  stopChildren();
  process.exit(1);
});
