// Cluster mode and contract sections 6-7 (issues 8 item 13 and 9 items 2 and 9): two or three
// real gateways in one process on the machine's real Redis (a key prefix per run), two data
// sources. Commands travel with their account; a pause is stored in Redis and holds on every
// node, also for a stream that starts later elsewhere; queued CTI events are applied after a
// Redis outage at stream start, in the order they happened; Redis keys expire, dead nodes are
// forgotten after a bound, and the rescan after a reconnect drops recordings deleted meanwhile.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { TwilioStreamClient } from '../loadtest/twilio-stream-client.js';
import { frameFor } from '../loadtest/audio-fixtures.js';
import { randomSid } from '../loadtest/sids.js';
import { loadConfig } from '../gateway/config.js';
import { buildGateway, type Gateway, type GatewayOptions } from '../gateway/server.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import type { StreamEntry } from '../gateway/cluster/keys.js';

const REDIS_URL = 'redis://127.0.0.1:6379';
const prefix = `gwtest:${randomBytes(4).toString('hex')}:`;
const redis = new Redis(REDIS_URL);
const SID_A = randomSid('AC');
const SID_B = randomSid('AC');
t.teardown(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

interface Node { gw: Gateway; http: string; ws: string }
type Tap = { teardown(fn: () => unknown): void };

const KEY_A = 'cluster-a-key-0123456789';
const KEY_B = 'cluster-b-key-0123456789';
let dir: string | undefined;
async function configFile(keys: boolean): Promise<string> {
  dir ??= await mkdtemp(path.join(os.tmpdir(), 'gw-cluster-tenants-'));
  const file = path.join(dir, keys ? '.gateway-keys.json' : '.gateway.json');
  await writeFile(file, JSON.stringify({
    TWILIO_ENABLE_PAUSE_RESUME: true,
    dataSources: [
      { TWILIO_ACCOUNT_SID: SID_A, ...(keys ? { apiKeys: [KEY_A] } : {}) },
      { TWILIO_ACCOUNT_SID: SID_B, ...(keys ? { apiKeys: [KEY_B] } : {}) },
    ],
  }));
  return file;
}
async function node(t: Tap, nodeId: string, opts: GatewayOptions = {}, withKeys = false): Promise<Node> {
  const file = await configFile(withKeys);
  const config = loadConfig({
    PORT: '0', HOST: '127.0.0.1', RECORDINGS_DIR: dir, LOG_LEVEL: 'silent', REDIS_URL, NODE_ID: nodeId, GATEWAY_CONFIG: file,
  });
  const gw = await buildGateway(config, { redisPrefix: prefix, ...opts });
  const port = await gw.listen();
  t.teardown(() => gw.close());
  return { gw, http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/twilio/v1` };
}
t.teardown(async () => { if (dir) await rm(dir, { recursive: true, force: true }); });

async function post(url: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url, {
    method: 'POST',
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function until<T>(what: string, fn: () => Promise<T> | T, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function connect(n: Node, account: string, callSid = randomSid('CA')): Promise<TwilioStreamClient> {
  const c = await TwilioStreamClient.connect(n.ws, { accountSid: account, callSid });
  c.sendConnected();
  c.sendStart({ tracks: ['inbound'], callSid });
  await until('stream started', () => n.gw.recorder.streamsOfCall(callSid).length > 0);
  return c;
}

async function registered(n: Node, callSid: string): Promise<void> {
  await until('stream registered in Redis', async () => {
    const res = await fetch(`${n.http}/v1/calls?callSid=${callSid}`);
    return ((await res.json()) as { items: StreamEntry[] }).items.length > 0;
  });
}

function taskrouter(account: string, type: string, callSid: string, contact: string): URLSearchParams {
  return new URLSearchParams({
    EventType: type, AccountSid: account, WorkspaceSid: 'WS1', TaskSid: 'WT1', WorkerSid: 'WK1',
    TaskAttributes: JSON.stringify({ call_sid: callSid, conversations: { conversation_id: contact } }),
    WorkerAttributes: JSON.stringify({ employee_id: `emp-${contact}` }),
  });
}

async function recordingOf(n: Node, callSid: string): Promise<RecordingSidecar> {
  return until(`recording of ${callSid}`, async () => {
    const res = await fetch(`${n.http}/v1/recordings?callSid=${callSid}`);
    return ((await res.json()) as { items: RecordingSidecar[] }).items[0];
  });
}

t.test('routed commands keep their account: A\'s events and pauses never reach B\'s call on another node', async (t) => {
  const n1 = await node(t, 'ten-1');
  const n2 = await node(t, 'ten-2');
  const c = await connect(n2, SID_B);
  await registered(n1, c.callSid);
  const session = n2.gw.recorder.streamsOfCall(c.callSid)[0]!;

  t.equal((await post(`${n1.http}/v1/calls/${c.callSid}/pause?accountSid=${SID_A}`)).status, 404, 'A has no such call');
  t.equal(session.paused, false);
  const postForm = (form: URLSearchParams) => fetch(`${n1.http}/twilio/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
  t.equal((await postForm(taskrouter(SID_A, 'reservation.created', c.callSid, 'A-evil'))).status, 204);
  t.same(session.attribution, { ctiSessionId: null, employeeId: null }, 'an event of A does not touch the stream of B held elsewhere');
  t.equal((await postForm(taskrouter(SID_B, 'reservation.created', c.callSid, 'B-contact'))).status, 204,
    'an event of B received by n1 is forwarded with its account (not stripped, not refused)');
  t.match(session.attribution, { ctiSessionId: 'B-contact' }, 'and applied by the owner');

  const cti = await post(`${n1.http}/v1/cti/events`, { type: 'transfer', callSid: c.callSid, accountSid: SID_B, employeeId: 'E-b2' });
  t.equal(cti.status, 200);
  t.match(cti.body, { accountSid: SID_B, liveStreams: 1 }, 'answered by the owner');
  t.equal(session.attribution.employeeId, 'E-b2');
  t.equal((await post(`${n1.http}/v1/cti/events`, { type: 'transfer', callSid: c.callSid })).status, 400, 'several sources: accountSid required');

  // A's events made the call known in A's scope: a pause there is A's own business, never B's
  await post(`${n1.http}/v1/calls/${c.callSid}/pause?accountSid=${SID_A}`);
  t.equal(session.paused, false, 'A\'s pause of "its" call leaves B\'s stream recording');
  t.equal((await post(`${n1.http}/v1/calls/${c.callSid}/pause?accountSid=${SID_B}`)).status, 200);
  t.equal(session.paused, true, 'B\'s pause reached the owner');
  t.equal((await post(`${n1.http}/v1/calls/${c.callSid}/resume?accountSid=${SID_B}`)).status, 200);
  c.sendStop();
  await c.closed;
});

t.test('a pause answered 200 holds everywhere: a stream that starts later on another node starts paused', async (t) => {
  const n1 = await node(t, 'pz-1');
  const n2 = await node(t, 'pz-2');
  const callSid = randomSid('CA');
  t.equal((await post(`${n1.http}/v1/calls/${callSid}/pause?accountSid=${SID_A}`)).status, 404, 'an unknown call: 404, nothing stored');
  t.equal(await redis.exists(`${prefix}paused:${SID_A}:${callSid}`), 0);
  t.equal((await post(`${n1.http}/v1/cti/events`, { type: 'ringing', callSid, accountSid: SID_A })).status, 200, 'known from CTI (queued)');
  const p = await post(`${n1.http}/v1/calls/${callSid}/pause?accountSid=${SID_A}`);
  t.equal(p.status, 200);
  t.match(p.body, { callSid, paused: true, streams: [] });
  t.equal(await redis.exists(`${prefix}paused:${SID_A}:${callSid}`), 1, 'the pause lives in Redis');
  t.ok(await redis.pttl(`${prefix}paused:${SID_A}:${callSid}`) > 0, 'with a TTL');

  // the stream starts on the other node: paused from its first frame
  const c = await connect(n2, SID_A, callSid);
  const session = n2.gw.recorder.streamsOfCall(callSid)[0]!;
  t.equal(session.paused, true, 'started paused');
  for (let i = 0; i < 50; i++) c.sendMedia('inbound', frameFor(4, 'inbound', i), i * 20);
  c.sendStop();
  await c.closed;
  const rec = await recordingOf(n1, callSid);
  t.equal(rec.framesReceived, 0, 'no frame of the paused call was kept');
  t.same(rec.pausedIntervals, [{ from: 0, to: 1000 }], 'paused from call time 0');

  // a node that was not there when the pause was stored reads it when its stream registers
  const late = randomSid('CA');
  t.equal((await post(`${n1.http}/v1/cti/events`, { type: 'ringing', callSid: late, accountSid: SID_B })).status, 200);
  t.equal((await post(`${n1.http}/v1/calls/${late}/pause?accountSid=${SID_B}`)).status, 200);
  const n3 = await node(t, 'pz-3');
  t.notOk(n3.gw.states.get(SID_B, late), 'n3 never heard of the call');
  const c3 = await connect(n3, SID_B, late);
  const s3 = n3.gw.recorder.streamsOfCall(late)[0]!;
  await until('paused at registration', () => s3.paused);
  for (let i = 0; i < 25; i++) c3.sendMedia('inbound', frameFor(5, 'inbound', i), i * 20);
  c3.sendStop();
  await c3.closed;
  t.equal((await recordingOf(n1, late)).framesReceived, 0, 'nothing kept');

  // resume is stored too
  t.equal((await post(`${n2.http}/v1/calls/${late}/resume?accountSid=${SID_B}`)).status, 200);
  t.equal(await redis.exists(`${prefix}paused:${SID_B}:${late}`), 0, 'resume clears the stored pause');
});

t.test('a resume answered 503 (its holder lost) leaves the stored pause: the call reconnecting elsewhere starts paused', async (t) => {
  const n1 = await node(t, 'rz-1');
  const callSid = randomSid('CA');
  t.equal((await post(`${n1.http}/v1/cti/events`, { type: 'ringing', callSid, accountSid: SID_A })).status, 200);
  t.equal((await post(`${n1.http}/v1/calls/${callSid}/pause?accountSid=${SID_A}`)).status, 200);
  // the call's stream is registered by a node that then died (SIGKILL: its entry stays, its
  // liveness key is gone)
  await redis.hset(`${prefix}call:${SID_A}:${callSid}`, `MZ${'7'.repeat(32)}`, 'rz-dead');
  const r = await post(`${n1.http}/v1/calls/${callSid}/resume?accountSid=${SID_A}`);
  t.equal(r.status, 503);
  t.match(r.body, { error: 'owner_lost', message: /the command was not applied/ });
  t.equal(await redis.exists(`${prefix}paused:${SID_A}:${callSid}`), 1, 'still paused in Redis, as the 503 says');
  t.ok(await redis.pttl(`${prefix}paused:${SID_A}:${callSid}`) > 0, 'with a TTL');
  // the call reconnects to a live node: its stream starts paused
  await redis.hdel(`${prefix}call:${SID_A}:${callSid}`, `MZ${'7'.repeat(32)}`);
  const c = await connect(n1, SID_A, callSid);
  const s = n1.gw.recorder.streamsOfCall(callSid)[0]!;
  await until('paused at registration', () => s.paused);
  c.sendStop();
  await c.closed;

  // a call that was not paused: a failed resume does not pause it
  const other = randomSid('CA');
  t.equal((await post(`${n1.http}/v1/cti/events`, { type: 'ringing', callSid: other, accountSid: SID_A })).status, 200);
  await redis.hset(`${prefix}call:${SID_A}:${other}`, `MZ${'8'.repeat(32)}`, 'rz-dead');
  t.equal((await post(`${n1.http}/v1/calls/${other}/resume?accountSid=${SID_A}`)).status, 503);
  t.equal(await redis.exists(`${prefix}paused:${SID_A}:${other}`), 0, 'no pause made up');
  await redis.del(`${prefix}call:${SID_A}:${other}`);
});

t.test('queued CTI events are applied when Redis was away at stream start, in the order they happened', async (t) => {
  const n1 = await node(t, 'q-1');
  const n2 = await node(t, 'q-2');
  const callSid = randomSid('CA');
  const t0 = Date.now();
  // sent out of order: the later event arrives first
  t.equal((await post(`${n1.http}/v1/cti/events`, { type: 'transfer', callSid, accountSid: SID_A, ctiSessionId: 'second', at: new Date(t0 + 2000).toISOString() })).status, 200);
  t.equal((await post(`${n1.http}/v1/cti/events`, { type: 'connected', callSid, accountSid: SID_A, ctiSessionId: 'first', at: new Date(t0 + 1000).toISOString() })).status, 200);
  t.equal(await redis.llen(`${prefix}cti-pending:${SID_A}:${callSid}`), 2, 'both wait in Redis, under the account');

  // n2 loses Redis; the stream starts there meanwhile
  const link = n2.gw.cluster!.link;
  link.cmd.disconnect();
  link.sub.disconnect();
  await until('n2 lost Redis', () => !link.ready);
  const c = await connect(n2, SID_A, callSid);
  const session = n2.gw.recorder.streamsOfCall(callSid)[0]!;
  t.same(session.attribution, { ctiSessionId: null, employeeId: null }, 'nothing applied while Redis is away');
  await link.cmd.connect();
  await link.sub.connect();
  await until('queued events applied after the reconnect', () => session.attribution.ctiSessionId !== null);
  t.equal(session.attribution.ctiSessionId, 'second', 'applied in `at` order: the latest event wins');
  t.equal(await redis.exists(`${prefix}cti-pending:${SID_A}:${callSid}`), 0, 'taken off the queue');
  t.equal(n2.gw.states.get(SID_A, callSid)?.kept, true, 'the connected event was applied too');
  c.sendStop();
  await c.closed;
});

t.test('Redis hygiene: call keys expire, dead nodes are forgotten after a bound', async (t) => {
  const n1 = await node(t, 'h-1', { forgetDeadAfterMs: 1500 });
  const n2 = await node(t, 'h-2', { forgetDeadAfterMs: 1500 });

  const c = await connect(n1, SID_A);
  await registered(n2, c.callSid);
  const ttl = await redis.pttl(`${prefix}call:${SID_A}:${c.callSid}`);
  t.ok(ttl > 0 && ttl <= 25 * 3600 * 1000, `call: keys have a TTL (${ttl} ms)`);

  // a node that died holding a call and never comes back
  const dead: StreamEntry = { accountSid: SID_B, callSid: randomSid('CA'), streamSid: randomSid('MZ'), nodeId: 'h-dead', paused: false, startedAt: new Date().toISOString() };
  await redis.multi().sadd(`${prefix}nodes`, 'h-dead')
    .hset(`${prefix}node:h-dead:streams`, dead.streamSid, JSON.stringify(dead))
    .hset(`${prefix}call:${SID_B}:${dead.callSid}`, dead.streamSid, 'h-dead').exec();
  const lostCmd = await post(`${n1.http}/v1/cti/events`, { type: 'ringing', callSid: dead.callSid, accountSid: SID_B });
  t.equal(lostCmd.status, 503, 'while the node is listed as lost: 503 owner_lost');
  t.equal(lostCmd.body.error, 'owner_lost');
  await until('the dead node is forgotten', async () => (await redis.sismember(`${prefix}nodes`, 'h-dead')) === 0, 20_000);
  t.equal(await redis.hexists(`${prefix}call:${SID_B}:${dead.callSid}`, dead.streamSid), 0, 'its entry left the call index');
  const calls = await (await fetch(`${n1.http}/v1/calls`)).json() as { lost: StreamEntry[] };
  t.same(calls.lost, [], 'and the lost list');
  t.equal((await post(`${n1.http}/v1/calls/${dead.callSid}/pause?accountSid=${SID_B}`)).status, 404, 'a late pause: 404');
  t.equal((await post(`${n1.http}/v1/cti/events`, { type: 'ringing', callSid: dead.callSid, accountSid: SID_B })).status, 200, 'a late event: queued');

  c.sendStop();
  await c.closed;
});

t.test('the rescan after a reconnect drops recordings deleted while the node was away', async (t) => {
  const n1 = await node(t, 'r-1');
  const n2 = await node(t, 'r-2');
  const c = await connect(n1, SID_A);
  for (let i = 0; i < 25; i++) c.sendMedia('inbound', frameFor(6, 'inbound', i), i * 20);
  c.sendStop();
  await c.closed;
  const rec = await recordingOf(n2, c.callSid);
  const link = n2.gw.cluster!.link;
  link.cmd.disconnect();
  link.sub.disconnect();
  await until('n2 lost Redis', () => !link.ready);
  t.equal((await post(`${n1.http}/v1/cti/events`, { type: 'not_responding', callSid: c.callSid, accountSid: SID_A })).status, 200);
  await until('deleted on n1', async () => (await fetch(`${n1.http}/v1/recordings/${rec.recordingId}`)).status === 404);
  t.equal((await fetch(`${n2.http}/v1/recordings/${rec.recordingId}`)).status, 200, 'n2 missed the announcement');
  await link.cmd.connect();
  await link.sub.connect();
  await until('n2 dropped it at the rescan', async () => (await fetch(`${n2.http}/v1/recordings/${rec.recordingId}`)).status === 404);
  t.pass('the rescan after the reconnect removed the deleted recording');
});

t.test('per-source keys across nodes: a forwarded command keeps the key\'s account', async (t) => {
  const n1 = await node(t, 'k-1', {}, true);
  const n2 = await node(t, 'k-2', {}, true);
  const b = await connect(n2, SID_B);
  const a = await connect(n2, SID_A);
  const auth = (key: string) => ({ authorization: `Bearer ${key}` });
  await until('both registered', async () => {
    const res = await fetch(`${n1.http}/v1/calls`, { headers: auth(KEY_B) });
    return ((await res.json()) as { items: StreamEntry[] }).items.length === 1;
  });
  const listA = (await (await fetch(`${n1.http}/v1/calls`, { headers: auth(KEY_A) })).json()) as { items: StreamEntry[] };
  t.same(listA.items.map((e) => e.callSid), [a.callSid], 'the cluster-wide list shows A\'s key only A\'s streams');
  const pauseB = (key: string) => fetch(`${n1.http}/v1/calls/${b.callSid}/pause`, { method: 'POST', headers: auth(key) });
  t.equal((await pauseB(KEY_A)).status, 404, 'A\'s key: B\'s call on another node does not exist');
  t.equal(n2.gw.recorder.streamsOfCall(b.callSid)[0]!.paused, false);
  const ok = await pauseB(KEY_B);
  t.equal(ok.status, 200, 'B\'s key through n1: forwarded to n2');
  t.equal(n2.gw.recorder.streamsOfCall(b.callSid)[0]!.paused, true);
  const cti = await fetch(`${n1.http}/v1/cti/events`, {
    method: 'POST', headers: { ...auth(KEY_A), 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'transfer', callSid: b.callSid, ctiSessionId: 'A-evil' }),
  });
  t.equal(cti.status, 200, 'A\'s event for that callSid is A\'s own business');
  t.same(n2.gw.recorder.streamsOfCall(b.callSid)[0]!.attribution, { ctiSessionId: null, employeeId: null }, 'B\'s stream untouched');
  t.equal((await fetch(`${n1.http}/v1/calls`)).status, 401, 'keys configured: no anonymous loopback access');
  for (const c of [a, b]) {
    c.sendStop();
    await c.closed;
  }
});
