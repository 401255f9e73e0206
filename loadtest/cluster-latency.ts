// Cross-node command latency: two gateway processes (loadtest/cluster-node.ts) on one Redis, a
// live stream on node B, N per-call commands sent to node A (which does not hold the call).
// For each: client send -> command running on B (B's clock, same machine), and client send ->
// HTTP answer from A. A answers only after B ran the command, so "effect after answer" is never
// positive; the send->effect figure is what a CTI system waits for.
//
//   node --import tsx loadtest/cluster-latency.ts [--tries 100] [--redis redis://127.0.0.1:6379]
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { startNode, type NodeProc } from '../test/fixtures/cluster-procs.js';
import { TwilioStreamClient } from './twilio-stream-client.js';
import { frameFor } from './audio-fixtures.js';

const { values } = parseArgs({
  options: {
    tries: { type: 'string', default: '100' },
    redis: { type: 'string', default: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' },
    command: { type: 'string', default: 'ping' },
  },
});
const tries = Number(values.tries);
const wallNowMs = () => performance.timeOrigin + performance.now();
const cleanups: (() => unknown)[] = [];
const teardown = { teardown: (fn: () => unknown) => { cleanups.push(fn); } };

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-latency-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const env = (id: string) => ({ NODE_ID: id, REDIS_URL: values.redis, REDIS_PREFIX: `lat:${randomBytes(3).toString('hex')}:`, RECORDINGS_DIR: dir, LOG_LEVEL: 'warn' });
  const prefixEnv = env('a').REDIS_PREFIX;
  const [a, b]: [NodeProc, NodeProc] = await Promise.all([
    startNode(teardown, { ...env('node-a'), REDIS_PREFIX: prefixEnv, LOG_LEVEL: 'info' }),
    startNode(teardown, { ...env('node-b'), REDIS_PREFIX: prefixEnv, LOG_LEVEL: 'info' }),
  ]);
  const c = await TwilioStreamClient.connect(`ws://127.0.0.1:${b.port}/twilio/v1`);
  c.sendConnected();
  c.sendStart({ tracks: ['inbound'] });
  let i = 0;
  const pump = setInterval(() => c.sendMedia('inbound', frameFor(1, 'inbound', i), 20 * i++), 20);
  await new Promise((r) => setTimeout(r, 500));

  const effect: number[] = [];
  const answer: number[] = [];
  const afterAnswer: number[] = [];
  for (let k = 0; k < tries + 5; k++) {
    const sent = wallNowMs();
    const res = await fetch(`${a.http}/v1/calls/${c.callSid}/${values.command}`, { method: 'POST' });
    const answered = wallNowMs();
    const body = (await res.json()) as { nodeId?: string; at?: number };
    if (res.status !== 200 || body.nodeId !== 'node-b' || typeof body.at !== 'number') throw new Error(`unexpected answer ${res.status} ${JSON.stringify(body)}`);
    if (k >= 5) { // the first few warm up connections and JIT
      effect.push(body.at - sent);
      answer.push(answered - sent);
      afterAnswer.push(body.at - answered);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  clearInterval(pump);
  c.sendStop();
  await c.close(1000);
  const f = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(2)} ms, p99 ${pct(xs, 99).toFixed(2)} ms, max ${Math.max(...xs).toFixed(2)} ms`;
  console.log(`${tries} commands sent to node-a for a call held by node-b (${values.command}):`);
  console.log(`  send -> running on node-b:  ${f(effect)}`);
  console.log(`  send -> HTTP answer (a):    ${f(answer)}`);
  console.log(`  answer -> effect: always before the answer (max ${Math.max(...afterAnswer).toFixed(2)} ms)`);
}

main().catch((err: Error) => { console.error(err.stack ?? err.message); process.exitCode = 1; })
  .finally(async () => { for (const fn of cleanups.reverse()) await fn(); });
