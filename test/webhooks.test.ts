// Recording webhooks through a real HTTP receiver that is down for a while, then flaky, then
// up; and across a gateway restart (the outbox on disk). Each event arrives signed, and every
// delivery of one eventId carries the same body.
import t, { type Test } from 'tap';
import http from 'node:http';
import { createHmac } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runStream } from '../loadtest/stream-runner.js';
import { startTestGateway, waitForRecordings } from './fixtures/harness.js';
import { until } from './fixtures/calls.js';
import { captureLog } from './fixtures/capture-log.js';

const SECRET = 'webhook-secret-for-tests';

interface Received { body: string; json: Record<string, any>; signature: string }

/** A receiver on a fixed port that can be started and stopped; answers 500 to the first `flaky` posts. */
class Receiver {
  readonly got: Received[] = [];
  private server: http.Server | null = null;
  constructor(readonly port: number, private flaky = 0) {}
  static async freePort(): Promise<number> {
    const s = http.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as { port: number }).port;
    await new Promise((r) => s.close(r));
    return port;
  }
  get url(): string { return `http://127.0.0.1:${this.port}/hook`; }
  async up(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        if (this.flaky > 0) { this.flaky--; res.writeHead(500).end(); return; }
        this.got.push({ body, json: JSON.parse(body), signature: String(req.headers['x-gateway-signature']) });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => this.server!.listen(this.port, '127.0.0.1', r));
  }
  async down(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s) { s.closeAllConnections(); await new Promise((r) => s.close(r)); }
  }
  /** one entry per eventId; fails the test if one id came with two different bodies */
  byEventId(t: Test): Map<string, Received> {
    const m = new Map<string, Received>();
    for (const r of this.got) {
      const seen = m.get(r.json.eventId);
      if (seen) t.equal(r.body, seen.body, `a repeat of ${r.json.eventId} is identical`);
      else m.set(r.json.eventId, r);
    }
    return m;
  }
}

const sign = (body: string) => `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;

t.test('finished and deleted recordings reach a receiver that is down, then flaky, then up', async (t) => {
  const rx = new Receiver(await Receiver.freePort(), 2);
  t.teardown(() => rx.down());
  const log = captureLog('warn');
  const g = await startTestGateway(t, { RECORDING_WEBHOOK_URL: rx.url, RECORDING_WEBHOOK_SECRET: SECRET, MIN_SESSION_LENGTH_S: '1' },
    { webhookBaseDelayMs: 50, webhookMaxDelayMs: 400, logger: log.logger });
  const kept = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 1, frames: 60, realtime: false, customParameters: { ctiSessionId: 'S-w' } });
  const short = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 2, frames: 10, realtime: false });
  const [rec] = await waitForRecordings(g.http, kept.callSid, 1);
  await g.gw.recorder.settled();
  const outbox = g.gw.outbox!.dir;
  t.equal((await readdir(outbox)).filter((f) => f.endsWith('.json')).length, 2, 'both events wait on disk while the receiver is down');
  await until(() => log.lines().filter((l) => l.msg === 'recording webhook not acknowledged; will retry').length >= 4, 'two failed attempts per event');
  await rx.up();
  await until(() => rx.byEventId(t).size === 2, 'both events delivered');
  const events = rx.byEventId(t);
  const finished = events.get(`${rec.recordingId}.finished`);
  t.ok(finished, 'finished event, id = <recordingId>.finished');
  t.equal(finished!.signature, sign(finished!.body), 'X-Gateway-Signature = sha256=HMAC of the body');
  t.match(finished!.json, { event: 'finished', recordingId: rec.recordingId, ctiSessionId: 'S-w', sha256: rec.sha256, durationMs: 1200 });
  const deleted = events.get(`${short.streamSid}-0000.deleted`);
  t.match(deleted?.json, { event: 'deleted', deleteReason: 'min_session_length', callSid: short.callSid, durationMs: 200 });
  t.equal(deleted!.signature, sign(deleted!.body));
  await until(async () => (await readdir(outbox)).filter((f) => f.endsWith('.json')).length === 0, 'the outbox to empty');
});

t.test('the outbox survives a gateway restart: what was not acknowledged is sent by the next run', async (t) => {
  const rx = new Receiver(await Receiver.freePort());
  t.teardown(() => rx.down());
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-outbox-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = { RECORDINGS_DIR: dir, RECORDING_WEBHOOK_URL: rx.url, RECORDING_WEBHOOK_SECRET: SECRET };
  const first = await startTestGateway(t, env, { webhookBaseDelayMs: 50, webhookMaxDelayMs: 200 });
  const res = await runStream({ url: first.wsUrl, tracks: ['inbound', 'outbound'], seed: 3, frames: 25, realtime: false });
  const [rec] = await waitForRecordings(first.http, res.callSid, 1);
  await first.gw.close(); // receiver still down: the event stays in the outbox
  const events = (dir: string) => readdir(dir).then((n) => n.filter((f) => f.endsWith('.json')));
  t.same(await events(first.gw.outbox!.dir), [`${rec.recordingId}.finished.json`]);
  t.equal(rx.got.length, 0);

  await rx.up();
  const second = await startTestGateway(t, env, { webhookBaseDelayMs: 50 });
  await until(() => rx.got.length >= 1, 'the event from the previous run');
  t.same([...rx.byEventId(t).keys()], [`${rec.recordingId}.finished`], 'delivered once per event id');
  t.match(rx.got[0]!.json, { event: 'finished', recordingId: rec.recordingId, streamSid: res.streamSid });
  await until(async () => (await events(second.gw.outbox!.dir)).length === 0, 'the outbox to empty');
  await second.gw.close();
  t.equal(second.gw.outbox?.delivered, 1);
});
