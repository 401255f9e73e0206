// RETENTION_DAYS through a real gateway: recordings recorded over WebSocket, the wall clock moved
// on, the maintenance sweep run. Each recording past its source's period goes through the durable
// deletion path: unlisted, files removed, one audit line (reason retention) and a `deleted`
// webhook; others stay. An attribution arriving after the deletion does not bring it back.
import t from 'tap';
import http from 'node:http';
import { mkdtemp, rm, writeFile, access, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runStream } from '../loadtest/stream-runner.js';
import { randomSid } from '../loadtest/sids.js';
import { startTestGateway, waitForRecordings, getJson, audioPathOnDisk } from './fixtures/harness.js';
import { post, until } from './fixtures/calls.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { DELETIONS_DIR } from '../recorder/deletions.js';
import { captureLog } from './fixtures/capture-log.js';

const SID_A = 'AC' + 'a'.repeat(32);
const SID_B = 'AC' + 'b'.repeat(32);
const SECRET = 'retention-webhook-secret-0123';
const DAY = 24 * 3600 * 1000;


/** A webhook receiver that acknowledges everything. */
async function receiver(t: { teardown(fn: () => unknown): void }) {
  const got: Record<string, unknown>[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => { got.push(JSON.parse(body) as Record<string, unknown>); res.writeHead(204).end(); });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => { server.closeAllConnections(); server.close(r); }));
  return { got, url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook` };
}

const exists = (p: string) => access(p).then(() => true, () => false);

t.test('per-source RETENTION_DAYS: old recordings are deleted by the sweep, audited and announced', async (t) => {
  const rx = await receiver(t);
  const log = captureLog();
  const cfgDir = await mkdtemp(path.join(os.tmpdir(), 'gw-retention-cfg-'));
  t.teardown(() => rm(cfgDir, { recursive: true, force: true }));
  const cfg = path.join(cfgDir, 'gateway.json');
  await writeFile(cfg, JSON.stringify({
    RETENTION_DAYS: 30,
    dataSources: [
      { TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: null, RETENTION_DAYS: 7 },
      { TWILIO_ACCOUNT_SID: SID_B, TWILIO_AUTH_TOKEN: null },
    ],
  }));
  let wall = Date.parse('2024-06-01T10:00:00.000Z');
  const g = await startTestGateway(t, { GATEWAY_CONFIG: cfg, RECORDING_WEBHOOK_URL: rx.url, RECORDING_WEBHOOK_SECRET: SECRET },
    { wallNow: () => new Date(wall), logger: log.logger, webhookBaseDelayMs: 50 });

  const record = async (accountSid: string, seed: number) => {
    const callSid = randomSid('CA');
    await runStream({ url: g.wsUrl, accountSid, callSid, tracks: ['inbound'], seed, frames: 25, realtime: false });
    return (await waitForRecordings(g.http, callSid, 1))[0];
  };
  const a = await record(SID_A, 1);
  const b = await record(SID_B, 2);
  wall += 3 * DAY;
  const aNew = await record(SID_A, 3);

  t.equal(await g.gw.maintenance.runRetention(), 0, 'nothing is old yet');
  wall = Date.parse('2024-06-01T10:00:00.000Z') + 7 * DAY + 60_000;
  t.equal(await g.gw.maintenance.runRetention(), 1, 'A keeps 7 days: its first recording goes');

  t.equal((await getJson(`${g.http}/v1/recordings/${a.recordingId}`)).status, 404);
  t.notOk(await exists(audioPathOnDisk(g.dir, a)), 'its audio is gone');
  t.same(await readdir(path.join(g.dir, DELETIONS_DIR)).catch(() => []), [], 'the deletion record is done');
  t.equal((await getJson(`${g.http}/v1/recordings/${b.recordingId}`)).status, 200, 'B keeps 30 days (the global value)');
  t.equal((await getJson(`${g.http}/v1/recordings/${aNew.recordingId}`)).status, 200, 'A\'s newer one stays');

  const audit = log.lines().filter((l) => l.audit === true);
  t.equal(audit.length, 1, 'one audit line');
  t.match(audit[0], { recordingId: a.recordingId, accountSid: SID_A, callSid: a.callSid, cause: 'rule', reason: 'retention', actor: 'rule' });
  const deleted = await until(() => rx.got.find((w) => w.event === 'deleted'), 'deleted webhook');
  t.match(deleted, { event: 'deleted', recordingId: a.recordingId, deleteReason: 'retention', accountSid: SID_A });

  // an attribution for the deleted recording's call (CTI, TaskRouter, Kinesis) does not list it again
  const ev = await post(`${g.http}/v1/cti/events`, { type: 'connected', callSid: a.callSid, employeeId: 'late-agent', accountSid: SID_A });
  t.ok(ev.status < 500, `event answered ${ev.status}`);
  t.same((await getJson<{ items: RecordingSidecar[] }>(`${g.http}/v1/recordings?employeeId=late-agent`)).body.items, []);
  t.equal((await getJson(`${g.http}/v1/recordings/${a.recordingId}`)).status, 404, 'still deleted');
  // nor does a reconcile with the disk
  await g.gw.catalogSync.reconcile();
  t.equal((await getJson(`${g.http}/v1/recordings/${a.recordingId}`)).status, 404);

  wall = Date.parse('2024-06-01T10:00:00.000Z') + 31 * DAY;
  t.equal(await g.gw.maintenance.runRetention(), 2, 'B\'s after 30 days, A\'s newer one after 7');
  const list = await getJson<{ items: RecordingSidecar[] }>(`${g.http}/v1/recordings`);
  t.same(list.body.items, []);
  await until(() => rx.got.filter((w) => w.event === 'deleted').length === 3 || null, 'three deleted webhooks');
  t.same(log.lines().filter((l) => l.audit === true).map((l) => l.reason), ['retention', 'retention', 'retention']);
});

t.test('without RETENTION_DAYS nothing is ever deleted; the embedded default applies it to any account', async (t) => {
  let wall = Date.parse('2020-01-01T00:00:00.000Z');
  const keep = await startTestGateway(t, {}, { wallNow: () => new Date(wall) });
  const callSid = randomSid('CA');
  await runStream({ url: keep.wsUrl, callSid, tracks: ['inbound'], seed: 5, frames: 25, realtime: false });
  await waitForRecordings(keep.http, callSid, 1);
  wall += 3650 * DAY;
  t.equal(await keep.gw.maintenance.runRetention(), 0);
  t.equal((await waitForRecordings(keep.http, callSid, 1)).length, 1, 'kept');

  let wall2 = Date.parse('2020-01-01T00:00:00.000Z');
  const one = await startTestGateway(t, { RETENTION_DAYS: '1' }, { wallNow: () => new Date(wall2) });
  const c2 = randomSid('CA');
  await runStream({ url: one.wsUrl, callSid: c2, accountSid: SID_B, tracks: ['inbound'], seed: 6, frames: 25, realtime: false });
  const [r] = await waitForRecordings(one.http, c2, 1);
  wall2 += DAY - 60_000;
  t.equal(await one.gw.maintenance.runRetention(), 0, 'younger than a day');
  wall2 += 120_000;
  t.equal(await one.gw.maintenance.runRetention(), 1, 'older than a day');
  t.notOk(await exists(audioPathOnDisk(one.dir, r)));
});
