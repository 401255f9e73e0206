// Kinesis agent events, put -> applied: a gateway (in process, default consumer timings) reads a
// 2-shard stream of kinesalite (in memory, in process) while this script puts TaskRouter
// CloudEvents at a fixed rate; each event's latency is from just before its PutRecords call to
// the gateway applying it. Both share this process and its CPU: figures are an upper bound.
//   node --import tsx loadtest/kinesis-bench.ts [--rate 1000] [--seconds 30] [--latency-rate 50]
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import kinesalite from 'kinesalite';
import { CreateStreamCommand, DescribeStreamSummaryCommand, KinesisClient, PutRecordsCommand } from '@aws-sdk/client-kinesis';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { loadConfig } from '../gateway/config.js';
import { buildGateway } from '../gateway/server.js';
import { randomSid } from './sids.js';

const { values } = parseArgs({ options: {
  rate: { type: 'string', default: '1000' }, seconds: { type: 'string', default: '30' },
  'latency-rate': { type: 'string', default: '50' }, 'latency-seconds': { type: 'string', default: '20' },
} });
const ACCOUNT = randomSid('AC');
const STREAM = 'twilio-events';

const server = kinesalite({ createStreamMs: 0, updateStreamMs: 0 });
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const client = new KinesisClient({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' }, requestHandler: new NodeHttpHandler() });
await client.send(new CreateStreamCommand({ StreamName: STREAM, ShardCount: 2 }));
while ((await client.send(new DescribeStreamSummaryCommand({ StreamName: STREAM }))).StreamDescriptionSummary?.StreamStatus !== 'ACTIVE') {
  await new Promise((r) => setTimeout(r, 20));
}

const sentAt = new Map<string, number>();
const latencies: number[] = [];
const dir = await mkdtemp(path.join(os.tmpdir(), 'kinesis-bench-'));
const gw = await buildGateway(loadConfig({
  PORT: '0', HOST: '127.0.0.1', RECORDINGS_DIR: dir, LOG_LEVEL: 'warn', TWILIO_ACCOUNT_SID: ACCOUNT,
  KINESIS_STREAM: STREAM, KINESIS_REGION: 'us-east-1', KINESIS_ENDPOINT: endpoint, KINESIS_START: 'LATEST',
  KINESIS_ACCESS_KEY_ID: 'bench', KINESIS_SECRET_ACCESS_KEY: 'bench',
}), {
  kinesis: {
    onApplied: (id) => {
      const t0 = sentAt.get(id);
      if (t0 !== undefined) latencies.push(performance.now() - t0);
    },
  },
});
await gw.listen();
// let the consumer take its shards (LATEST) before putting anything
await new Promise((r) => setTimeout(r, 3000));

let n = 0;
function event(): { id: string; data: Uint8Array; key: string } {
  const id = `NO${(++n).toString(16).padStart(32, '0')}`;
  const callSid = randomSid('CA');
  const now = new Date().toISOString();
  const payload = {
    eventtype: 'reservation.created', account_sid: ACCOUNT, timestamp: now, task_sid: 'WT1', worker_sid: 'WK1', worker_name: 'bench',
    task_attributes: JSON.stringify({ call_sid: callSid }), worker_attributes: '{}',
  };
  const ce = { specversion: '1.0', type: 'com.twilio.taskrouter.reservation.created', id, time: now, data: { account_sid: ACCOUNT, payload } };
  return { id, data: Buffer.from(JSON.stringify(ce)), key: callSid };
}

/** Put `rate` events per second for `seconds`, in batches every 100 ms. */
async function run(rate: number, seconds: number): Promise<{ put: number; applied: number; wallS: number }> {
  latencies.length = 0;
  const start = performance.now();
  const perTick = rate / 10;
  let put = 0;
  for (let tick = 0; tick < seconds * 10; tick++) {
    const due = start + tick * 100;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const count = Math.floor(perTick * (tick + 1)) - Math.floor(perTick * tick);
    const batch = Array.from({ length: count }, event);
    const t0 = performance.now();
    for (const e of batch) sentAt.set(e.id, t0);
    await client.send(new PutRecordsCommand({ StreamName: STREAM, Records: batch.map((e) => ({ PartitionKey: e.key, Data: e.data })) }));
    put += count;
  }
  const deadline = performance.now() + 30_000;
  while (latencies.length < put && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return { put, applied: latencies.length, wallS: (performance.now() - start) / 1000 };
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

function report(label: string, r: { put: number; applied: number; wallS: number }): void {
  const s = [...latencies].sort((a, b) => a - b);
  console.log(`${label}: put ${r.put}, applied ${r.applied} in ${r.wallS.toFixed(1)} s; put->applied ms p50 ${pct(s, 50).toFixed(0)} p99 ${pct(s, 99).toFixed(0)} max ${(s[s.length - 1] ?? NaN).toFixed(0)}`);
}

report(`latency (${values['latency-rate']} ev/s, 2 shards)`, await run(Number(values['latency-rate']), Number(values['latency-seconds'])));
report(`sustained (${values.rate} ev/s, 2 shards)`, await run(Number(values.rate), Number(values.seconds)));
await gw.close();
client.destroy();
server.close();
await rm(dir, { recursive: true, force: true });
