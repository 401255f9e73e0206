// Issue 9.10a: a webhook receiver answering 307 got the signed body re-posted to its Location.
// Redirects are never followed: a 3xx is a failed delivery, retried to the configured URL only.
import t from 'tap';
import http from 'node:http';
import { createHmac } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { runStream } from '../loadtest/stream-runner.js';
import { startTestGateway, waitForRecordings } from './fixtures/harness.js';
import { until } from './fixtures/calls.js';

const SECRET = 'webhook-secret-for-redirect-tests';

interface Hit { path: string; body: string; signature: string }

async function server(t: Tap, answer: (hits: number) => { status: number; location?: string }): Promise<{ url: string; hits: Hit[] }> {
  const hits: Hit[] = [];
  const s = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      hits.push({ path: req.url ?? '', body: Buffer.concat(chunks).toString('utf8'), signature: String(req.headers['x-gateway-signature']) });
      const a = answer(hits.length);
      res.writeHead(a.status, a.location ? { location: a.location } : {}).end();
    });
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => { s.closeAllConnections(); s.close(r); }));
  return { url: `http://127.0.0.1:${(s.address() as { port: number }).port}`, hits };
}

type Tap = { teardown(fn: () => unknown): void };

t.test('a 307/308 answer is a failure: retried to the configured URL, the body never goes to Location', async (t) => {
  const elsewhere = await server(t, () => ({ status: 204 }));
  // the first four deliveries are redirected (307, 308 alternately), then the receiver acknowledges
  const receiver = await server(t, (n) => (n <= 4 ? { status: n % 2 ? 307 : 308, location: `${elsewhere.url}/stolen` } : { status: 204 }));
  const g = await startTestGateway(t, { RECORDING_WEBHOOK_URL: `${receiver.url}/hook`, RECORDING_WEBHOOK_SECRET: SECRET },
    { webhookBaseDelayMs: 50, webhookMaxDelayMs: 200 });
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 3, frames: 25, realtime: false });
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);

  await until(() => receiver.hits.length >= 5, 'the fifth delivery (acknowledged)');
  const outbox = path.join(g.dir, '.outbox');
  await until(async () => (await readdir(outbox).catch(() => [])).filter((f) => f.endsWith('.json')).length === 0, 'outbox emptied after the 2xx');
  t.equal(elsewhere.hits.length, 0, 'nothing was posted to the Location');
  t.ok(receiver.hits.every((h) => h.path === '/hook'), 'every attempt went to the configured URL');
  const bodies = new Set(receiver.hits.map((h) => h.body));
  t.equal(bodies.size, 1, 'each retry carries the identical body');
  const [body] = bodies;
  t.match(JSON.parse(body!), { event: 'finished', eventId: `${rec.recordingId}.finished` });
  t.equal(receiver.hits[0]!.signature, `sha256=${createHmac('sha256', SECRET).update(body!).digest('hex')}`);
});
