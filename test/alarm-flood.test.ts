// Issue 9.5: back-dated CTI events flooded GET /v1/alarms with long_hold alarms until every
// real alarm was gone. Event times far from now are refused; an alarm raised again updates its
// entry; each kind keeps its own ALARMS_PER_KIND entries. Locally and in the cluster's Redis.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import { runStream } from '../loadtest/stream-runner.js';
import { randomSid } from '../loadtest/sids.js';
import { ALARMS_PER_KIND } from '../recorder/alarms.js';
import { startTestGateway, getJson, type TestGateway } from './fixtures/harness.js';
import { post, until } from './fixtures/calls.js';

// about 2 500 API requests in all: more than tap's default 30 s on a busy machine
t.setTimeout(180_000);

const T = Date.parse('2026-03-02T10:00:00.000Z');
const iso = (ms: number) => new Date(ms).toISOString();

interface AlarmItem { kind: string; callSid?: string; recordingId?: string; count: number; at: string; firstAt: string; nodeId: string }
interface AlarmList { items: AlarmItem[]; scope: string }

/** A real alarm of another kind: the account's folder is a file, so publishing fails. */
async function publishFailure(g: TestGateway): Promise<string> {
  const account = randomSid('AC');
  await writeFile(path.join(g.dir, account), 'in the way');
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 1, frames: 10, realtime: false, accountSid: account });
  return `${res.streamSid}-0000`;
}

async function inBatches(n: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < n; i += 25) await Promise.all(Array.from({ length: Math.min(25, n - i) }, (_, j) => fn(i + j)));
}

async function cti(g: TestGateway, ev: Record<string, unknown>) {
  return post(`${g.http}/v1/cti/events`, ev);
}

t.test('CTI event times more than 24 h back or 5 min ahead are refused with 400 and change nothing', async (t) => {
  const g = await startTestGateway(t, { LONG_HOLD_DURATION_MIN: '1' }, { wallNow: () => new Date(T) });
  const callSid = randomSid('CA');
  for (const at of ['1970-01-01T00:00:00.000Z', iso(T - 24 * 3600_000 - 1000), iso(T + 6 * 60_000)]) {
    const r = await cti(g, { type: 'hold', callSid, at, ctiSessionId: 'S-1' });
    t.equal(r.status, 400, `hold at ${at}: 400`);
    t.match(r.body, { error: 'bad_request', message: /too far from now.*last 24 h.*5 min ahead/ });
  }
  const after = await cti(g, { type: 'ringing', callSid });
  t.match(after.body, { onHold: false, ctiSessionId: null }, 'the refused events changed nothing');
  const ok = await cti(g, { type: 'hold', callSid, at: iso(T - 23 * 3600_000) });
  t.equal(ok.status, 200, '23 h back is accepted');
  t.equal(ok.body.onHold, true);
  t.equal((await cti(g, { type: 'unhold', callSid, at: iso(T + 4 * 60_000) })).status, 200, '4 min ahead is accepted (clock skew)');
  const alarms = await getJson<AlarmList>(`${g.http}/v1/alarms?kind=long_hold`);
  t.equal(alarms.body.items.length, 1, 'the accepted 23 h hold raises its one long_hold');

  // TaskRouter events become CTI events: the same bound applies to their Timestamp
  const trCall = randomSid('CA');
  const form = (ms: number) => new URLSearchParams({
    EventType: 'reservation.created', TimestampMs: String(ms), TaskSid: `WT${'1'.repeat(32)}`,
    TaskAttributes: JSON.stringify({ call_sid: trCall }),
  }).toString();
  const postForm = (ms: number) => fetch(`${g.http}/twilio/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form(ms) });
  const old = await postForm(0);
  t.equal(old.status, 400, 'a TaskRouter event stamped 1970: 400');
  t.match(await old.json(), { error: 'bad_request', message: /too far from now/ });
  t.equal((await postForm(T - 60_000)).status, 204, 'a current one is applied');
});

async function flood(t: Test, g: TestGateway, n: number, readAlarms: () => Promise<AlarmList>) {
  const failed = await publishFailure(g);
  await until(async () => (await readAlarms()).items.some((a) => a.recordingId === failed), 'segment_publish_failed listed');

  // one call on and off hold 30 times, each hold over the limit: one entry, count 30
  const repeat = randomSid('CA');
  for (let i = 0; i < 30; i++) {
    t.equal((await cti(g, { type: 'hold', callSid: repeat, at: iso(T - 2 * 3600_000) })).status, 200);
    t.equal((await cti(g, { type: 'unhold', callSid: repeat, at: iso(T - 3600_000) })).status, 200);
  }
  const one = await until(async () => (await readAlarms()).items.find((a) => a.callSid === repeat && a.count === 30), 'repeat entry at count 30');
  t.match(one, { kind: 'long_hold', count: 30 });
  t.equal((await readAlarms()).items.filter((a) => a.callSid === repeat).length, 1, 'raised 30 times, listed once');

  // n calls put on hold 2 h ago, then the sweep: n long_hold raises
  const calls = Array.from({ length: n }, () => randomSid('CA'));
  await inBatches(calls.length, async (i) => {
    const r = await cti(g, { type: 'hold', callSid: calls[i], at: iso(T - 2 * 3600_000) });
    if (r.status !== 200) throw new Error(`hold ${i}: ${r.status}`);
  });
  g.gw.maintenance.runOnce();
  t.equal(g.gw.alarms.count('long_hold'), n + 30, 'every raise is counted (log line and metric)');
  const metrics = await (await fetch(`${g.http}/metrics`)).text();
  t.match(metrics, new RegExp(`gateway_alarms_total\\{kind="long_hold"\\} ${n + 30}`));

  const all = await until(async () => {
    const l = await readAlarms();
    return l.items.filter((a) => a.kind === 'long_hold').length === ALARMS_PER_KIND && calls.slice(-50).every((c) => l.items.some((a) => a.callSid === c)) ? l : null;
  }, 'the newest long_hold entries listed');
  t.equal(all.items.filter((a) => a.kind === 'long_hold').length, ALARMS_PER_KIND, `long_hold keeps ${ALARMS_PER_KIND} entries`);
  t.ok(all.items.some((a) => a.kind === 'segment_publish_failed' && a.recordingId === failed), 'the real alarm of another kind is still listed');
  const newest = calls.slice(-ALARMS_PER_KIND);
  const listed = new Set(all.items.filter((a) => a.kind === 'long_hold').map((a) => a.callSid));
  t.ok(newest.every((c) => listed.has(c)), 'the entries kept are the newest calls');
  return all;
}

t.test('a flood of long holds: one entry per call, at most ALARMS_PER_KIND per kind, other kinds stay', { timeout: 120_000 }, async (t) => {
  const g = await startTestGateway(t, { LONG_HOLD_DURATION_MIN: '1' }, { wallNow: () => new Date(T) });
  // more than the 1000 entries the list used to keep in all
  const list = await flood(t, g, 1100, async () => (await getJson<AlarmList>(`${g.http}/v1/alarms?limit=1000`)).body);
  t.equal(list.scope, 'cluster');
  const byKind = await getJson<AlarmList>(`${g.http}/v1/alarms?kind=segment_publish_failed`);
  t.equal(byKind.body.items.length, 1);
});

t.test('cluster: the Redis alarm entries are de-duplicated and capped per kind too', { timeout: 120_000 }, async (t) => {
  const REDIS_URL = 'redis://127.0.0.1:6379';
  const prefix = `gwtest:${randomBytes(4).toString('hex')}:`;
  const redis = new Redis(REDIS_URL);
  t.teardown(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });
  const g = await startTestGateway(t, { LONG_HOLD_DURATION_MIN: '1', REDIS_URL, NODE_ID: 'flood-a' }, { wallNow: () => new Date(T), redisPrefix: prefix });
  await until(() => g.gw.cluster?.notReadyReason() === null, 'cluster ready');
  const read = async () => {
    const r = await getJson<AlarmList>(`${g.http}/v1/alarms?limit=1000`);
    if (r.body.scope !== 'cluster') throw new Error(`scope ${r.body.scope}`);
    return r.body;
  };
  await flood(t, g, 250, read);
  await until(async () => (await redis.zcard(`${prefix}alarm-order:long_hold`)) === ALARMS_PER_KIND, 'Redis holds the cap');
  t.equal(await redis.zcard(`${prefix}alarm-order:long_hold`), ALARMS_PER_KIND, 'Redis keeps ALARMS_PER_KIND long_hold entries');
  t.equal(await redis.hlen(`${prefix}alarm-entries`), ALARMS_PER_KIND + 1, 'and exactly their entries, plus the other kind');
});
