// The recording rules of contract section 5, through WebSocket + HTTP: not_responding before
// connected deletes the call's audio, MIN_SESSION_LENGTH_S, the long-call sweep and long holds.
// Time is shortened by an injected wall clock, never by loosening the allowed ranges.
import t from 'tap';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { runStream } from '../loadtest/stream-runner.js';
import { randomSid } from '../loadtest/sids.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { startTestGateway, getJson, waitForRecordings, audioPathOnDisk } from './fixtures/harness.js';
import { globSidecars } from './fixtures/disk.js';
import { openStream, post, until } from './fixtures/calls.js';

async function wavFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith('.wav')) out.push(p);
    }
  };
  await walk(dir);
  return out;
}

function listOf(http: string, callSid: string) {
  return getJson<{ items: RecordingSidecar[] }>(`${http}/v1/recordings?callSid=${callSid}`).then((r) => r.body.items);
}

t.test('not_responding before connected deletes published audio and discards live audio', async (t) => {
  const g = await startTestGateway(t);
  const callSid = randomSid('CA');
  // an earlier stream of the call (say, the ringing phase) is already published
  const early = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 1, frames: 25, realtime: false, callSid });
  const [published] = await waitForRecordings(g.http, callSid, 1);
  const file = audioPathOnDisk(g.dir, published);
  t.ok((await wavFiles(g.dir)).includes(file));
  // and one is live when the agent does not answer
  const live = await openStream(g.wsUrl, { callSid, tracks: ['inbound'] });
  await live.frames(0, 25);
  const ev = await post(`${g.http}/v1/cti/events`, { type: 'not_responding', callSid, ctiSessionId: 'S-nr' });
  t.equal(ev.status, 200);
  t.match(ev.body, { discard: true, kept: false });
  t.same(await listOf(g.http, callSid), [], 'the published recording is gone from the index');
  t.equal((await getJson(`${g.http}/v1/recordings/${early.streamSid}-0000`)).status, 404);
  await live.frames(25, 25);
  await live.end();
  await g.gw.recorder.settled();
  t.same(await listOf(g.http, callSid), [], 'the live stream left nothing listed');
  t.same(await wavFiles(g.dir), [], 'no audio file of the call anywhere under RECORDINGS_DIR');
  t.same(await globSidecars(g.dir), [], 'no sidecar either');
});

t.test('connected marks the call kept: a later not_responding deletes nothing', async (t) => {
  const g = await startTestGateway(t);
  const callSid = randomSid('CA');
  await post(`${g.http}/v1/cti/events`, { type: 'ringing', callSid });
  await post(`${g.http}/v1/cti/events`, { type: 'connected', callSid, employeeId: 'A-5' });
  const ev = await post(`${g.http}/v1/cti/events`, { type: 'not_responding', callSid });
  t.match(ev.body, { kept: true, discard: false });
  await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 2, frames: 25, realtime: false, callSid });
  const [rec] = await waitForRecordings(g.http, callSid, 1);
  t.equal(rec.employeeId, 'A-5');
});

t.test('MIN_SESSION_LENGTH_S deletes shorter recordings when they end, keeps the rest', async (t) => {
  const g = await startTestGateway(t, { MIN_SESSION_LENGTH_S: '2' });
  const short = await runStream({ url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 3, frames: 95, realtime: false }); // 1.9 s
  const long = await runStream({ url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 4, frames: 100, realtime: false }); // 2.0 s
  await g.gw.recorder.settled();
  t.same(await listOf(g.http, short.callSid), [], '1.9 s < 2 s: deleted');
  const [kept] = await waitForRecordings(g.http, long.callSid, 1);
  t.equal(kept.durationMs, 2000, '2.0 s is not shorter: kept');
  t.equal((await wavFiles(g.dir)).length, 1, 'only the kept file is on disk');
});

t.test('the maintenance sweep closes calls older than LONG_CALL_DURATION_MIN with an alarm', async (t) => {
  let wall = Date.parse('2024-05-01T10:00:00.000Z');
  const g = await startTestGateway(t, { LONG_CALL_DURATION_MIN: '2', MAINTENANCE_INTERVAL_S: '1' }, { wallNow: () => new Date(wall) });
  const old = await openStream(g.wsUrl, { tracks: ['inbound'] });
  await old.frames(0, 10);
  await until(() => g.gw.recorder.get(old.streamSid), 'the stream to start');
  wall += 60_000; // one minute later a second call starts
  const young = await openStream(g.wsUrl, { tracks: ['inbound'] });
  await young.frames(0, 10);
  await until(() => g.gw.recorder.get(young.streamSid), 'the second stream to start');
  wall += 61_000; // the first is now 2 min 1 s old, the second 1 min 1 s
  const closed = await old.client.closed;
  t.same(closed, { code: 1000, reason: 'long_call' }, 'the gateway closed the old stream');
  const [rec] = await waitForRecordings(g.http, old.callSid, 1);
  t.equal(rec.closeReason, 'long_call');
  const alarms = await getJson<{ items: { kind: string; streamSid: string }[] }>(`${g.http}/v1/alarms?kind=long_call`);
  t.same(alarms.body.items.map((a) => a.streamSid), [old.streamSid], 'one long_call alarm, for the old call only');
  t.ok(young.client.isOpen, 'the younger call runs on');
  const calls = await getJson<{ items: { streamSid: string }[] }>(`${g.http}/v1/calls`);
  t.same(calls.body.items.map((c) => c.streamSid), [young.streamSid]);
  await young.end();
});

t.test('a hold longer than LONG_HOLD_DURATION_MIN raises long_hold (sweep and unhold)', async (t) => {
  let wall = Date.parse('2024-05-01T10:00:00.000Z');
  const g = await startTestGateway(t, { LONG_HOLD_DURATION_MIN: '3', MAINTENANCE_INTERVAL_S: '1' }, { wallNow: () => new Date(wall) });
  const held = randomSid('CA');
  const brief = randomSid('CA');
  const past = randomSid('CA');
  await post(`${g.http}/v1/cti/events`, { type: 'hold', callSid: held });
  await post(`${g.http}/v1/cti/events`, { type: 'hold', callSid: brief });
  wall += 2 * 60_000;
  await post(`${g.http}/v1/cti/events`, { type: 'unhold', callSid: brief });
  wall += 61_000 + 60_000; // `held`: 4 min 1 s on hold
  const alarms = await until(async () => {
    const r = await getJson<{ items: { kind: string; callSid: string }[] }>(`${g.http}/v1/alarms?kind=long_hold`);
    return r.body.items.length > 0 ? r.body.items : null;
  }, 'the long_hold alarm');
  t.same(alarms.map((a) => a.callSid), [held]);
  g.gw.maintenance.runOnce(); // another sweep, run here rather than waited for: still one alarm per hold
  t.equal((await getJson<{ items: unknown[] }>(`${g.http}/v1/alarms?kind=long_hold`)).body.items.length, 1, 'one alarm per hold');
  // a hold reported after the fact (both instants given) is judged at unhold
  await post(`${g.http}/v1/cti/events`, { type: 'hold', callSid: past, at: '2024-05-01T09:00:00.000Z' });
  await post(`${g.http}/v1/cti/events`, { type: 'unhold', callSid: past, at: '2024-05-01T09:03:30.000Z' });
  const after = await getJson<{ items: { kind: string; callSid: string }[] }>(`${g.http}/v1/alarms?kind=long_hold`);
  t.same(after.body.items.map((a) => a.callSid), [past, held], 'newest first; the 2 min hold raised nothing');
});
