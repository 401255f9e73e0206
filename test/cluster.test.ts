// Cluster mode in one process: two real gateways on the machine's real Redis (127.0.0.1:6379),
// isolated by a key prefix per run. Registry, GET /v1/calls from any node, command routing to
// the owner (and 404/503 when there is none), queued CTI events, shared recordings and alarms,
// the lease. Process-level failures (SIGKILL, Redis restart, HAProxy) are in cluster-e2e.test.ts.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { startTestGateway, waitForRecordings, getJson, type TestGateway } from './fixtures/harness.js';
import { captureLog } from './fixtures/capture-log.js';
import { TwilioStreamClient } from '../loadtest/twilio-stream-client.js';
import { frameFor } from '../loadtest/audio-fixtures.js';
import { ApiError } from '../gateway/api/errors.js';
import type { StreamEntry } from '../gateway/cluster/keys.js';

const REDIS_URL = 'redis://127.0.0.1:6379';
const prefix = `gwtest:${randomBytes(4).toString('hex')}:`;
const redis = new Redis(REDIS_URL);
t.teardown(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

/** ping: the probe command (see loadtest/cluster-node.ts); pause will be the same shape */
function addPing(g: TestGateway): void {
  // in the /v1 scope, after the gateway's own routes and hooks (its auth and cluster routing apply)
  g.gw.addV1Routes((v1) => {
    v1.post('/calls/:callSid/ping', async (req) => {
      const { callSid } = req.params as { callSid: string };
      if (g.gw.recorder.streamsOfCall(callSid).length === 0) throw new ApiError(404, 'not_found', `no live stream of ${callSid}`);
      return { nodeId: g.gw.config.nodeId };
    });
    // Observe the real CTI route where it runs (a forwarded event is answered by the router's
    // preHandler on the receiving node, so this later hook sees only where it is applied).
    v1.addHook('preHandler', async (req) => {
      if (req.method !== 'POST' || req.url !== '/v1/cti/events') return;
      const body = req.body as { callSid: string };
      ctiSeen.push({ nodeId: g.gw.config.nodeId, body, live: g.gw.recorder.streamsOfCall(body.callSid).length > 0 });
    });
  });
}
const ctiSeen: { nodeId: string; body: unknown; live: boolean }[] = [];

async function node(t: Tap, nodeId: string): Promise<TestGateway> {
  // routes must exist before listen: build, add the probe, then listen
  const { loadConfig } = await import('../gateway/config.js');
  const { buildGateway } = await import('../gateway/server.js');
  const { mkdtemp, rm } = await import('node:fs/promises');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = shared ??= await mkdtemp(path.join(os.tmpdir(), 'gw-cluster-'));
  const config = loadConfig({ PORT: '0', HOST: '127.0.0.1', RECORDINGS_DIR: dir, LOG_LEVEL: 'silent', REDIS_URL, NODE_ID: nodeId, MAINTENANCE_INTERVAL_S: '1' });
  const gw = await buildGateway(config, { redisPrefix: prefix });
  const g = { gw, dir, port: 0, wsUrl: '', http: '' };
  addPing(g);
  g.port = await gw.listen();
  g.wsUrl = `ws://127.0.0.1:${g.port}/twilio/v1`;
  g.http = `http://127.0.0.1:${g.port}`;
  t.teardown(async () => {
    await gw.close();
    if (--open === 0) await rm(dir, { recursive: true, force: true });
  });
  open++;
  return g;
}
let shared: string | undefined;
let open = 0;
type Tap = { teardown(fn: () => unknown): void };


async function post(url: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 10000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function openStream(url: string, frames = 10): Promise<TwilioStreamClient> {
  const c = await TwilioStreamClient.connect(url);
  c.sendConnected();
  c.sendStart({ tracks: ['inbound'] });
  for (let i = 0; i < frames; i++) c.sendMedia('inbound', frameFor(1, 'inbound', i), i * 20);
  return c;
}

t.test('two nodes: registry, calls from any node, routing, CTI queue, recordings, alarms, lease', async (t) => {
  const a = await node(t, 'node-a');
  const b = await node(t, 'node-b');
  t.equal((await fetch(`${a.http}/readyz`)).status, 200, 'a ready');
  t.equal((await fetch(`${b.http}/readyz`)).status, 200, 'b ready');

  // a CTI event before any stream exists waits in Redis
  const c = await TwilioStreamClient.connect(b.wsUrl);
  const early = await post(`${a.http}/v1/cti/events`, { type: 'connected', callSid: c.callSid, ctiSessionId: 'S-1' });
  t.equal(early.status, 200, 'accepted by the local route');
  t.equal(await redis.llen(`${prefix}cti-pending::${c.callSid}`), 1, 'queued in Redis for whichever node gets the stream');

  c.sendConnected();
  c.sendStart({ tracks: ['inbound'] });
  for (let i = 0; i < 10; i++) c.sendMedia('inbound', frameFor(1, 'inbound', i), i * 20);

  const listed = await until('stream listed on a', async () => {
    const { body } = await getJson<{ items: StreamEntry[]; lost: StreamEntry[] }>(`${a.http}/v1/calls`);
    return body.items.find((e) => e.streamSid === c.streamSid);
  });
  t.match(listed, { callSid: c.callSid, nodeId: 'node-b', paused: false }, 'node a lists the stream held by b');
  t.ok(Date.parse(listed.startedAt) > 0);

  const replayed = await until('queued CTI event replayed on b', async () => ctiSeen.find((e) => e.nodeId === 'node-b' && e.live));
  t.match(replayed.body, { type: 'connected', callSid: c.callSid, ctiSessionId: 'S-1' }, 'b replays the queued event through its own route');
  t.ok((replayed.body as { at?: string }).at, 'with the time it was first received');
  t.equal(await redis.exists(`${prefix}cti-pending::${c.callSid}`), 0, 'taken off the queue');

  // a command sent to a (which does not hold the call) runs on b
  const ping = await post(`${a.http}/v1/calls/${c.callSid}/ping`);
  t.equal(ping.status, 200);
  t.equal(ping.body.nodeId, 'node-b', 'executed by the owner');
  const direct = await post(`${b.http}/v1/calls/${c.callSid}/ping`);
  t.equal(direct.body.nodeId, 'node-b', 'the owner runs it locally');
  const cti = await post(`${a.http}/v1/cti/events`, { type: 'hold', callSid: c.callSid });
  t.equal(cti.status, 200);
  t.ok(ctiSeen.some((e) => e.nodeId === 'node-b' && (e.body as { type: string }).type === 'hold'), 'a CTI event for a live call reaches its owner');
  t.notOk(ctiSeen.some((e) => e.nodeId === 'node-a' && (e.body as { type: string }).type === 'hold'), 'and is not applied on a');

  // a second fork of the call on a node that is alive but not listening for commands (a node in
  // its restart): 503, and the answer says the command was applied by b, which holds it too
  const muteFork = `MZ${'2'.repeat(32)}`;
  await redis.hset(`${prefix}call::${c.callSid}`, muteFork, 'node-mute');
  await redis.set(`${prefix}node:node-mute:alive`, '{}', 'PX', 30_000);
  const split = await post(`${a.http}/v1/calls/${c.callSid}/ping`);
  t.equal(split.status, 503, 'one holder unreachable: not a 200');
  t.match(split.body, { error: 'owner_unreachable', message: /node-mute holds the call but is not listening for commands; the command was not applied there; node node-b, which also holds the call, applied it/ });
  await redis.hdel(`${prefix}call::${c.callSid}`, muteFork);
  await redis.del(`${prefix}node:node-mute:alive`);

  const unknown = await post(`${a.http}/v1/calls/CA${'0'.repeat(32)}/ping`);
  t.equal(unknown.status, 404, 'a call held nowhere: the local route answers 404');

  // a holder that is registered but dead: 503, never a false 200
  const ghostCall = `CA${'1'.repeat(32)}`;
  await redis.hset(`${prefix}call::${ghostCall}`, `MZ${'1'.repeat(32)}`, 'node-ghost');
  const ghost = await post(`${a.http}/v1/calls/${ghostCall}/ping`);
  t.equal(ghost.status, 503);
  t.match(ghost.body, { error: 'owner_lost', message: /node-ghost/ });
  await redis.del(`${prefix}call::${ghostCall}`);

  // recordings: published by b, listed by a
  c.sendStop();
  await c.close(1000);
  const recs = await waitForRecordings(a.http, c.callSid, 1);
  t.equal(recs[0].nodeId, 'node-b', 'a lists the recording b published');
  await until('stream unlisted', async () => {
    const { body } = await getJson<{ items: StreamEntry[] }>(`${a.http}/v1/calls`);
    return !body.items.some((e) => e.streamSid === c.streamSid);
  });
  t.equal(await redis.exists(`${prefix}call::${c.callSid}`), 0, 'the call index is cleaned up');

  // alarms raised on b are listed by a
  b.gw.alarms.raise('long_call', { message: 'test alarm from b' });
  const alarms = await until('alarm shared', async () => {
    const { body } = await getJson<{ items: { kind: string; nodeId: string }[]; scope: string }>(`${a.http}/v1/alarms`);
    return body.items.some((x) => x.nodeId === 'node-b') ? body : null;
  });
  t.equal(alarms.scope, 'cluster');

  // the lease: two nodes, a job runs only on the node holding the interval's lease (so never
  // twice per interval). Checked per run from Redis, not by counting runs in a wall-clock window.
  const runs: { node: string; holder: string | null; ttl: number }[] = [];
  const leased = (node: string) => async () => {
    const [[, holder], [, ttl]] = (await redis.multi().get(`${prefix}lease:test-sweep`).pttl(`${prefix}lease:test-sweep`).exec()) as [[null, string | null], [null, number]];
    runs.push({ node, holder, ttl });
  };
  const stopA = a.gw.runUnderLease('test-sweep', 1000, leased('node-a'));
  const stopB = b.gw.runUnderLease('test-sweep', 1000, leased('node-b'));
  await until('three leased runs', async () => runs.length >= 3, 15_000);
  stopA(); stopB();
  for (const r of runs) {
    t.equal(r.holder, r.node, `${r.node} ran while holding the lease`);
    t.ok(r.ttl > 0 && r.ttl <= 1000, `the lease was live for this interval (${r.ttl} ms left)`);
  }
});

t.test('a TaskRouter callback received by one node reaches the node holding the call', async (t) => {
  const a = await node(t, 'node-tr-a');
  const b = await node(t, 'node-tr-b');
  const c = await openStream(b.wsUrl, 25);
  await until('stream registered', async () => {
    const { body } = await getJson<{ items: StreamEntry[] }>(`${a.http}/v1/calls?callSid=${c.callSid}`);
    return body.items[0]?.nodeId === 'node-tr-b';
  });
  const form = new URLSearchParams({
    EventType: 'reservation.accepted', AccountSid: c.accountSid, WorkspaceSid: 'WS1', ResourceType: 'reservation',
    TaskSid: 'WT0007', WorkerSid: 'WK0007', ReservationSid: 'WR7',
    TaskAttributes: JSON.stringify({ call_sid: c.callSid, conversations: { conversation_id: 'contact-77' } }),
    WorkerAttributes: JSON.stringify({ employee_id: 'E-77' }),
  });
  const res = await fetch(`${a.http}/twilio/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
  t.equal(res.status, 204);
  const session = b.gw.recorder.streamsOfCall(c.callSid)[0]!;
  t.same(session.attribution, { ctiSessionId: 'contact-77', employeeId: 'E-77' }, 'the owner attributed its live stream');
  t.same(a.gw.recorder.streamsOfCall(c.callSid), [], 'node a holds nothing of the call');
  c.sendStop();
  await c.closed;
});

t.test('a node that leaves cleanly is not reported lost; a dead node is', async (t) => {
  const a = await node(t, 'node-c');
  // a node that died holding a stream: registered streams, no heartbeat
  const entry: StreamEntry = { accountSid: `AC${'2'.repeat(32)}`, callSid: `CA${'2'.repeat(32)}`, streamSid: `MZ${'2'.repeat(32)}`, nodeId: 'node-dead', paused: false, startedAt: new Date().toISOString() };
  await redis.multi().sadd(`${prefix}nodes`, 'node-dead')
    .hset(`${prefix}node:node-dead:streams`, entry.streamSid, JSON.stringify(entry))
    .hset(`${prefix}call::${entry.callSid}`, entry.streamSid, 'node-dead').exec();
  const lost = await until('listed as lost', async () => {
    const { body } = await getJson<{ items: StreamEntry[]; lost: (StreamEntry & { lostSince: string })[] }>(`${a.http}/v1/calls`);
    return body.lost.find((e) => e.streamSid === entry.streamSid);
  });
  t.match(lost, { nodeId: 'node-dead', callSid: entry.callSid });
  await until('node_lost alarm', async () => a.gw.alarms.recent().some((x) => x.kind === 'node_lost' && x.message.includes('node-dead')));
  t.equal(a.gw.alarms.count('node_lost'), 1, 'raised once');
  // more watch rounds, run here rather than waited for
  await a.gw.cluster!.view.watch();
  await a.gw.cluster!.view.watch();
  t.equal(a.gw.alarms.count('node_lost'), 1, 'still once after more watch rounds');
  const cmd = await post(`${a.http}/v1/calls/${entry.callSid}/ping`);
  t.equal(cmd.status, 503, 'a command for a lost call: 503');
  await redis.del(`${prefix}node:node-dead:streams`, `${prefix}call::${entry.callSid}`, `${prefix}nodes`);
});

t.test('Redis lost and back: not ready, node-scoped alarms, recordings published meanwhile reach every node', async (t) => {
  const { startRedis } = await import('./fixtures/cluster-procs.js');
  const own = await startRedis(t);
  const { loadConfig } = await import('../gateway/config.js');
  const { buildGateway } = await import('../gateway/server.js');
  const { mkdtemp, rm } = await import('node:fs/promises');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-cluster-redis-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const mk = async (id: string) => {
    const gw = await buildGateway(loadConfig({ PORT: '0', HOST: '127.0.0.1', RECORDINGS_DIR: dir, LOG_LEVEL: 'silent', REDIS_URL: own.url, NODE_ID: id }));
    const port = await gw.listen();
    t.teardown(() => gw.close());
    return { gw, http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/twilio/v1` };
  };
  const a = await mk('r-a');
  const b = await mk('r-b');
  // a stream that spans the outage, on b
  const long = await openStream(b.ws, 5);
  await until('listed', async () => (await getJson<{ items: unknown[] }>(`${a.http}/v1/calls`)).body.items.length === 1);

  await own.stop();
  await until('a not ready', async () => (await fetch(`${a.http}/readyz`)).status === 503);
  const why = await getJson<{ message: string }>(`${b.http}/readyz`);
  t.match(why.body.message, /lost Redis/, 'readyz says why');
  // a stream recorded and finished entirely during the outage
  const during = await openStream(b.ws, 25);
  during.sendStop();
  await during.close(1000);
  for (let i = 5; i < 50; i++) long.sendMedia('inbound', frameFor(1, 'inbound', i), i * 20);
  await until('redis_unavailable', async () => b.gw.alarms.count('redis_unavailable') === 1, 8000);
  const nodeAlarms = await getJson<{ scope: string; items: { kind: string }[] }>(`${b.http}/v1/alarms`);
  t.equal(nodeAlarms.body.scope, 'node', 'alarms answer with this node only while Redis is away');
  t.ok(nodeAlarms.body.items.some((x) => x.kind === 'redis_unavailable'));

  await startRedis(t, own.port);
  await until('ready again', async () => (await fetch(`${a.http}/readyz`)).status === 200 && (await fetch(`${b.http}/readyz`)).status === 200, 10000);
  const [rec] = await waitForRecordings(a.http, during.callSid, 1);
  t.equal(rec.framesReceived, 25, 'a lists what b recorded during the outage');
  const calls = await getJson<{ items: StreamEntry[] }>(`${a.http}/v1/calls`);
  t.same(calls.body.items.map((e) => e.streamSid), [long.streamSid], 'b re-listed the stream that spans the outage, not the finished one');
  const alarms = await until('alarm shared after reconnect', async () => {
    const { body } = await getJson<{ scope: string; items: { kind: string; nodeId: string }[] }>(`${a.http}/v1/alarms?kind=redis_unavailable`);
    return body.items.some((x) => x.nodeId === 'r-b') ? body : null;
  });
  t.equal(alarms.scope, 'cluster');
  long.sendStop();
  await long.close(1000);
  const [lr] = await waitForRecordings(a.http, long.callSid, 1);
  t.equal(lr.framesReceived, 50, 'nothing lost across the outage');
  t.equal(lr.framesMissing, 0);
});

t.test('single node: GET /v1/calls lists this node\'s live streams, nothing lost', async (t) => {
  const log = captureLog('warn');
  const g = await startTestGateway(t, { NODE_ID: 'solo' }, { logger: log.logger });
  t.equal(g.gw.cluster, null, 'no REDIS_URL: no cluster');
  const c = await openStream(g.wsUrl, 3);
  const { body } = await until('listed', async () => {
    const r = await getJson<{ items: StreamEntry[]; lost: unknown[] }>(`${g.http}/v1/calls`);
    return r.body.items.length === 1 ? r : null;
  });
  t.match(body.items[0], { callSid: c.callSid, streamSid: c.streamSid, nodeId: 'solo', paused: false });
  t.same(body.lost, []);
  const filtered = await getJson<{ items: StreamEntry[] }>(`${g.http}/v1/calls?callSid=CA${'9'.repeat(32)}`);
  t.same(filtered.body.items, []);
  const runs: number[] = [];
  const stop = g.gw.runUnderLease('solo-job', 100, () => { runs.push(1); });
  await until('two runs', async () => runs.length >= 2);
  stop();
  t.ok(runs.length >= 2, 'a single node runs leased jobs on a plain interval (no Redis, no lease)');
  const stopFailing = g.gw.runUnderLease('solo-failing', 20, () => { throw new Error('the job broke'); });
  const failed = await until('the failure logged', async () => log.lines().find((l) => l.msg === 'periodic job failed'));
  stopFailing();
  t.match(failed, { lease: 'solo-failing', err: { message: 'the job broke', stack: /the job broke\n\s+at / } }, 'a failing job is logged with its stack, not swallowed');
  c.sendStop();
  await c.close(1000);
});
