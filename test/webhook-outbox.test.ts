// Issue 8 item 12: the webhook outbox. One event the receiver keeps refusing never delays the
// others; a redirect is a failed delivery (never a re-post of the signed body elsewhere); on a
// shared volume every event has one owner: left-over events are claimed by exactly one node, and
// a dead node's events are taken over while a live node's are left alone.
import t from 'tap';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runStream } from '../loadtest/stream-runner.js';
import { startTestGateway, waitForRecordings } from './fixtures/harness.js';
import { until } from './fixtures/calls.js';
import { WebhookReceiver } from './fixtures/webhook-receiver.js';

const SECRET = 'webhook-secret-for-tests';

t.test('one refused event does not hold back the others', async (t) => {
  let refused = '';
  const rx = await new WebhookReceiver((r) => ({ status: r.json.recordingId === refused ? 500 : 204 })).up();
  t.teardown(() => rx.down());
  const g = await startTestGateway(t, { RECORDING_WEBHOOK_URL: rx.url, RECORDING_WEBHOOK_SECRET: SECRET }, { webhookBaseDelayMs: 50, webhookMaxDelayMs: 200 });
  const a = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 1, frames: 10, realtime: false });
  refused = `${a.streamSid}-0000`;
  await waitForRecordings(g.http, a.callSid, 1);
  await until(() => rx.ofEvent(`${refused}.finished`).length >= 2, 'the refused event to be retried');
  const others = [];
  for (const seed of [2, 3]) others.push(await runStream({ url: g.wsUrl, tracks: ['inbound'], seed, frames: 10, realtime: false }));
  for (const o of others) {
    await until(() => rx.ofEvent(`${o.streamSid}-0000.finished`).length > 0, `the event of ${o.streamSid} while ${refused} is still refused`);
  }
  await until(() => g.gw.outbox!.pending === 1, 'only the refused event left');
  t.ok(rx.ofEvent(`${refused}.finished`).length >= 2);
  refused = '';
  await until(() => g.gw.outbox!.pending === 0, 'the refused event delivered once the receiver accepts it');
});

t.test('a 3xx is a failed delivery: retried to the configured URL, never re-posted to Location', async (t) => {
  let redirects = 3;
  const rx = await new WebhookReceiver((r) => {
    if (r.path === '/hook' && redirects > 0) {
      redirects--;
      return { status: 307, headers: { location: '/elsewhere' } };
    }
    return { status: 204 };
  }).up();
  t.teardown(() => rx.down());
  const g = await startTestGateway(t, { RECORDING_WEBHOOK_URL: rx.url, RECORDING_WEBHOOK_SECRET: SECRET }, { webhookBaseDelayMs: 50, webhookMaxDelayMs: 100 });
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 5, frames: 10, realtime: false });
  await waitForRecordings(g.http, res.callSid, 1);
  await until(() => g.gw.outbox!.pending === 0 && g.gw.outbox!.delivered === 1, 'delivery after the redirects stop');
  t.same(rx.got.map((r) => r.path), ['/hook', '/hook', '/hook', '/hook'], 'four attempts, all to the configured URL');
  t.same(new Set(rx.got.map((r) => r.body)).size, 1, 'the same body each time');
});

t.test('events left on a shared volume: one owner each; a dead node\'s are taken over, a live one\'s are not', async (t) => {
  const rx = await new WebhookReceiver().up();
  t.teardown(() => rx.down());
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-outbox-shared-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const outbox = path.join(dir, '.outbox');
  await mkdir(outbox, { recursive: true });
  const event = (id: string) => JSON.stringify({ eventId: id, event: 'finished', recordingId: id.split('.')[0] });
  // left directly in .outbox by an older version
  await writeFile(path.join(outbox, 'MZ00000000000000000000000000000001-0000.finished.json'), event('MZ00000000000000000000000000000001-0000.finished'));
  // a node that died 10 minutes ago, and one that is alive
  for (const [node, age] of [['gone-node', 600_000], ['live-node', 0]] as const) {
    await mkdir(path.join(outbox, node));
    const id = `MZ0000000000000000000000000000000${node === 'gone-node' ? 2 : 3}-0000.finished`;
    await writeFile(path.join(outbox, node, `${id}.json`), event(id));
    await writeFile(path.join(outbox, node, '.alive'), '');
    const at = new Date(Date.now() - age);
    await utimes(path.join(outbox, node, '.alive'), at, at);
  }
  const env = { RECORDINGS_DIR: dir, RECORDING_WEBHOOK_URL: rx.url, RECORDING_WEBHOOK_SECRET: SECRET };
  const [a, b] = await Promise.all([
    startTestGateway(t, { ...env, NODE_ID: 'node-a' }, { webhookBaseDelayMs: 50 }),
    startTestGateway(t, { ...env, NODE_ID: 'node-b' }, { webhookBaseDelayMs: 50 }),
  ]);
  const wanted = ['MZ00000000000000000000000000000001-0000.finished', 'MZ00000000000000000000000000000002-0000.finished'];
  await until(() => wanted.every((id) => rx.ofEvent(id).length > 0), 'the loose and the dead node\'s events');
  // the receiver has them; the nodes count a delivery once its answer is read and the file gone
  await until(() => a.gw.outbox!.delivered + b.gw.outbox!.delivered === 2, 'both deliveries settled');
  await a.gw.close();
  await b.gw.close();
  for (const id of wanted) t.equal(rx.ofEvent(id).length, 1, `${id}: delivered by one node only`);
  t.equal(a.gw.outbox!.delivered + b.gw.outbox!.delivered, 2);
  t.equal(rx.ofEvent('MZ00000000000000000000000000000003-0000.finished').length, 0, "the live node's event is left to it");
  t.same((await readdir(path.join(outbox, 'live-node'))).filter((n) => n.endsWith('.json')), ['MZ00000000000000000000000000000003-0000.finished.json']);
});
