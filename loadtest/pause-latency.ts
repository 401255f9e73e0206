// How long POST /v1/calls/:callSid/pause and /resume take to answer, for one or more gateway
// source trees side by side in one run (the 200 now waits for the stream's pause record: one
// atomic write with two fsyncs). Each tree's gateway runs as its own `node` process on its own
// temp RECORDINGS_DIR with one live both_tracks stream at real pace; the trees take turns, one
// pause or resume each, so load on the machine hits them alike.
//   node --import tsx loadtest/pause-latency.ts --pairs 200 /work/main /work/wt-recovery
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TwilioStreamClient } from './twilio-stream-client.js';
import { frameFor } from './audio-fixtures.js';

interface Gw { tree: string; child: ChildProcess; http: string; dir: string; callSid: string; client: TwilioStreamClient; timer: NodeJS.Timeout; ms: number[] }

async function start(tree: string): Promise<Gw> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-pause-lat-'));
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(tree, 'gateway/main.ts')], {
    cwd: tree, env: { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', RECORDINGS_DIR: dir, LOG_LEVEL: 'warn', TWILIO_ENABLE_PAUSE_RESUME: 'true', NODE_ID: 'lat' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"port":(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (c) => reject(new Error(`${tree}: exited ${c}`)));
  });
  const http = `http://127.0.0.1:${port}`;
  const client = await TwilioStreamClient.connect(`ws://127.0.0.1:${port}/twilio/v1`, {});
  client.sendConnected();
  client.sendStart({ tracks: ['inbound', 'outbound'] });
  let k = 0;
  const t0 = Date.now();
  // real pace: the frames due by now, every 20 ms
  const timer = setInterval(() => {
    for (; k * 20 <= Date.now() - t0; k++) for (const tr of ['inbound', 'outbound'] as const) client.sendMedia(tr, frameFor(1, tr, k), k * 20);
  }, 20);
  const g: Gw = { tree, child, http, dir, callSid: client.callSid, client, timer, ms: [] };
  // ready: the stream is known to the gateway
  for (;;) {
    const r = await fetch(`${http}/v1/calls`);
    if (((await r.json()) as { items: unknown[] }).items.length > 0) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  return g;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const i = args.indexOf('--pairs');
  const pairs = i >= 0 ? Number(args.splice(i, 2)[1]) : 100;
  const trees = args.length > 0 ? args : [process.cwd()];
  const gws: Gw[] = [];
  for (const tree of trees) gws.push(await start(tree));
  for (let n = 0; n < pairs; n++) {
    for (const action of ['pause', 'resume']) {
      for (const g of gws) {
        const t = process.hrtime.bigint();
        const r = await fetch(`${g.http}/v1/calls/${g.callSid}/${action}`, { method: 'POST' });
        await r.arrayBuffer();
        if (r.status !== 200) throw new Error(`${g.tree}: ${action} answered ${r.status}`);
        g.ms.push(Number(process.hrtime.bigint() - t) / 1e6);
      }
      await new Promise((res) => setTimeout(res, 20));
    }
  }
  for (const g of gws) {
    console.log(`${g.tree}: ${g.ms.length} answers, p50 ${pct(g.ms, 50).toFixed(2)} ms, p90 ${pct(g.ms, 90).toFixed(2)} ms, p99 ${pct(g.ms, 99).toFixed(2)} ms, max ${Math.max(...g.ms).toFixed(2)} ms`);
    clearInterval(g.timer);
    await g.client.close();
    g.child.kill('SIGTERM');
    await new Promise((res) => g.child.on('exit', res));
    await rm(g.dir, { recursive: true, force: true });
  }
}

await main();
