// Agent events from Amazon Kinesis (contract section 9) against a real Kinesis API (kinesalite),
// with a real gateway, real Twilio streams and recordings on disk.
import t from 'tap';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runStream } from '../loadtest/stream-runner.js';
import { randomSid } from '../loadtest/sids.js';
import type { Gateway, GatewayOptions } from '../gateway/server.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { sidecarPathOf } from '../recorder/storage-layout.js';
import { startTestGateway, getJson, waitForRecordings, type TestGateway } from './fixtures/harness.js';
import { until } from './fixtures/calls.js';
import { freePort } from './fixtures/cluster-procs.js';
import { tempDir } from './fixtures/gateway-process.js';
import { cloudEvent, keyForShard, startKinesalite, TEST_CREDENTIALS, type Kinesalite } from './fixtures/kinesis.js';

const ACCOUNT = randomSid('AC');
const OTHER = randomSid('AC');
t.setTimeout(240_000); // the alarm test runs with the default timings (up to a minute)

const FAST: GatewayOptions = { kinesis: { pollMs: 50, claimMs: 100, discoverMs: 300, renewMs: 500, minGapMs: 20 } };

async function counts(gw: Gateway): Promise<Record<string, number>> {
  const m = await gw.metrics.registry.getSingleMetric('gateway_kinesis_records_total')?.get();
  const out: Record<string, number> = {};
  for (const v of m?.values ?? []) if (v.value > 0) out[String(v.labels.result)] = (out[String(v.labels.result)] ?? 0) + v.value;
  return out;
}

function envFor(k: Kinesalite, stream: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    TWILIO_ACCOUNT_SID: ACCOUNT, KINESIS_STREAM: stream, KINESIS_REGION: 'us-east-1', KINESIS_ENDPOINT: k.endpoint,
    KINESIS_START: 'TRIM_HORIZON', ...TEST_CREDENTIALS, ...extra,
  };
}

async function record(g: TestGateway, callSid: string, seed: number): Promise<void> {
  await runStream({ url: g.wsUrl, accountSid: ACCOUNT, realtime: false, tracks: ['inbound', 'outbound'], seed, frames: 25, callSid });
}

async function recordingsOf(g: TestGateway, callSid: string): Promise<RecordingSidecar[]> {
  return (await getJson<{ items: RecordingSidecar[] }>(`${g.http}/v1/recordings?callSid=${callSid}`)).body.items;
}

t.test('attribution and not_responding through Kinesis, across a shard split', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('twilio-events', 2);
  const g = await startTestGateway(t, envFor(k, 'twilio-events'), FAST);
  const [s0, s1] = await k.shards('twilio-events');

  // a kept call: ringing, then accepted by agent E-42, on shard 0
  const kept = randomSid('CA');
  await k.put('twilio-events', cloudEvent({ eventType: 'reservation.created', accountSid: ACCOUNT, callSid: kept, employeeId: 'E-42', ctiSessionId: 'contact-7' }), keyForShard(s0!));
  await k.put('twilio-events', cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT, callSid: kept, employeeId: 'E-42', ctiSessionId: 'contact-7' }), keyForShard(s0!));
  // another account's event for the same call must not touch it
  await k.put('twilio-events', cloudEvent({ eventType: 'reservation.accepted', accountSid: OTHER, callSid: kept, employeeId: 'E-intruder' }), keyForShard(s1!));
  await until(async () => (await counts(g.gw)).applied === 2 && (await counts(g.gw)).wrong_account === 1, 'the events applied');
  await record(g, kept, 1);
  const [rec] = await waitForRecordings(g.http, kept, 1);
  t.match(rec, { ctiSessionId: 'contact-7', employeeId: 'E-42' }, 'attributed from Kinesis');

  // split shard 1 while the gateway reads it; the next events go to its children
  const children = await k.split('twilio-events', s1!.ShardId as string);
  t.equal(children.length, 2);
  const dropped = randomSid('CA');
  const key = keyForShard(children[0]!, 'c');
  await k.put('twilio-events', cloudEvent({ eventType: 'reservation.created', accountSid: ACCOUNT, callSid: dropped, employeeId: 'E-7' }), key);
  await until(async () => (await counts(g.gw)).applied === 3, 'the event on the child shard', 15_000);
  await record(g, dropped, 2);
  const [r2] = await waitForRecordings(g.http, dropped, 1);
  t.equal(r2.employeeId, 'E-7');
  // nobody answered: reservation.timeout -> not_responding before connected deletes the audio
  await k.put('twilio-events', cloudEvent({ eventType: 'reservation.timeout', accountSid: ACCOUNT, callSid: dropped, employeeId: 'E-7' }), key);
  await until(async () => (await recordingsOf(g, dropped)).length === 0, 'the not_responding call deleted');
  t.equal((await recordingsOf(g, kept)).length, 1, 'the kept call stays');

  const metrics = await (await fetch(`${g.http}/metrics`)).text();
  t.match(metrics, /gateway_kinesis_millis_behind_latest\{account="AC[0-9a-f]+",shard="shardId-00000000000[0-4]"\} \d+/);
  t.match(metrics, /gateway_kinesis_checkpoint_age_seconds\{account="AC[0-9a-f]+",shard="shardId-0000000000\d\d"\} [\d.]+/);
  t.match(metrics, /gateway_kinesis_records_total\{account="AC[0-9a-f]+",result="wrong_account"\} 1/);
  // a write may be in flight: its temp file (dot-prefixed) is not a checkpoint
  const ckptFiles = (await readdir(path.join(g.dir, '.kinesis'))).filter((f) => !f.startsWith('.'));
  t.equal(ckptFiles.length, 1, 'one checkpoint file for the source');
});

t.test('a child shard is read only after its parent is finished', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('resharded', 1);
  const [parent] = await k.shards('resharded');
  const callSid = randomSid('CA');
  const key = keyForShard(parent!, 'p');
  const before = Array.from({ length: 120 }, (_, i) => cloudEvent({ eventType: 'reservation.created', accountSid: ACCOUNT, callSid, employeeId: `E-${i}` }));
  await k.putMany('resharded', before.map((data) => ({ data, partitionKey: key })));
  await k.split('resharded', parent!.ShardId as string);
  const after = cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT, callSid, employeeId: 'E-final' });
  await k.put('resharded', after, key);
  const order: string[] = [];
  // small batches: the parent takes several reads, so a child read at once would come first
  await startTestGateway(t, envFor(k, 'resharded'), { kinesis: { ...FAST.kinesis, batchLimit: 20, onApplied: (id) => order.push(id) } });
  await until(() => order.length === 121, 'every event applied', 20_000);
  t.equal(order[120], after.id, 'the child shard\'s event comes after all of the parent\'s');
  t.same(order.slice(0, 120), before.map((e) => e.id), 'the parent in order');
});

t.test('bad records are counted and skipped; ids are de-duplicated', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('garbage', 1);
  const g = await startTestGateway(t, envFor(k, 'garbage'), FAST);
  const callSid = randomSid('CA');
  const good = cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT, callSid, employeeId: 'E-1' });
  const noId = cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT, callSid });
  delete noId.id;
  const noAccount = cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT, callSid });
  delete (noAccount.data as Record<string, unknown>).account_sid;
  const badCall = cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT, callSid: 'CA-not-a-sid' });
  const proto = cloudEvent({ eventType: 'constructor', accountSid: ACCOUNT, callSid });
  const records: unknown[] = [
    Buffer.from([0xff, 0xfe, 0x00, 0x7b]), // not JSON
    'not json at all {',
    42, // JSON, not an event
    { ...cloudEvent({ eventType: 'x', accountSid: ACCOUNT }), type: 'com.twilio.voice.insights.call-summary' },
    noId, noAccount, badCall, proto,
    cloudEvent({ eventType: 'task.created', accountSid: ACCOUNT, callSid }), // TaskRouter, not mapped
    cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT }), // no call_sid: not a voice task
    [good, { type: 'com.twilio.taskrouter.reservation.accepted' }], // an array: one good, one without id/data
    good, // the same id again (at least once delivery)
  ];
  for (const r of records) await k.put('garbage', r);
  await until(async () => Object.values(await counts(g.gw)).reduce((a, b) => a + b, 0) === 13, 'every record counted');
  t.same(await counts(g.gw), { not_json: 2, invalid: 5, unknown_type: 1, ignored: 3, applied: 1, duplicate: 1 });
  // the good event took effect: a stream of the call is attributed
  await record(g, callSid, 3);
  const [rec] = await waitForRecordings(g.http, callSid, 1);
  t.equal(rec.employeeId, 'E-1');
  t.equal((await fetch(`${g.http}/readyz`)).status, 200);
});

t.test('a restart neither loses nor re-applies events', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('restart', 2);
  const dir = await tempDir(t, 'gw-kinesis-');
  const env = { ...envFor(k, 'restart'), RECORDINGS_DIR: dir };
  const callSid = randomSid('CA');
  // agent A lets it ring out, agent B answers: kept
  const rejected = cloudEvent({ eventType: 'reservation.rejected', accountSid: ACCOUNT, callSid, employeeId: 'E-A' });
  const accepted = cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT, callSid, employeeId: 'E-B' });
  await k.put('restart', rejected, callSid);
  await k.put('restart', accepted, callSid);
  const g1 = await startTestGateway(t, env, FAST);
  await until(async () => (await counts(g1.gw)).applied === 2, 'both applied');
  await record(g1, callSid, 4);
  const [rec] = await waitForRecordings(g1.http, callSid, 1);
  t.equal(rec.employeeId, 'E-B');
  await g1.gw.close();

  const later = randomSid('CA');
  await k.put('restart', cloudEvent({ eventType: 'reservation.created', accountSid: ACCOUNT, callSid: later, employeeId: 'E-C' }), later);
  await k.put('restart', accepted, 'another-key'); // Twilio delivering the same event again, on another shard
  const g2 = await startTestGateway(t, env, FAST);
  await until(async () => {
    const c = await counts(g2.gw);
    return c.applied === 1 && c.duplicate === 1;
  }, 'only the new event applied, the repeated one recognised');
  // re-applying `rejected` from the start of the stream would have deleted the kept call's audio
  t.equal((await recordingsOf(g2, callSid)).length, 1, 'the recording is still there');
  t.same(await counts(g2.gw), { applied: 1, duplicate: 1 });
});

t.test('a stream that cannot be read raises an alarm within a minute and never stops recording', async (t) => {
  const k = await startKinesalite(t);
  const dir = await tempDir(t, 'gw-kinesis-');
  const deadPort = await freePort();
  const second = randomSid('AC');
  const file = path.join(dir, 'config.json');
  await writeFile(file, JSON.stringify({
    dataSources: [
      { TWILIO_ACCOUNT_SID: ACCOUNT, kinesis: { KINESIS_STREAM: 'does-not-exist', KINESIS_REGION: 'us-east-1', KINESIS_ENDPOINT: k.endpoint, KINESIS_ACCESS_KEY_ID: 'AKIDTEST', KINESIS_SECRET_ACCESS_KEY: 'sekrit-1' } },
      { TWILIO_ACCOUNT_SID: second, kinesis: { KINESIS_STREAM: `arn:aws:kinesis:eu-west-1:123456789012:stream/twilio-events`, KINESIS_ENDPOINT: `http://127.0.0.1:${deadPort}`, KINESIS_ACCESS_KEY_ID: 'AKIDTEST', KINESIS_SECRET_ACCESS_KEY: 'sekrit-2' } },
    ],
  }));
  const started = Date.now();
  // default timings: the alarm must come within a minute as configured out of the box
  const g = await startTestGateway(t, { GATEWAY_CONFIG: file, AWS_EC2_METADATA_DISABLED: 'true' });
  t.equal((await fetch(`${g.http}/readyz`)).status, 200, 'ready while the stream cannot be read');
  const callSid = randomSid('CA');
  await record(g, callSid, 5);
  t.equal((await waitForRecordings(g.http, callSid, 1)).length, 1, 'recording goes on');
  const alarms = await until(async () => {
    const { body } = await getJson<{ items: { kind: string; message: string; details: { accountSid: string } }[] }>(`${g.http}/v1/alarms?kind=kinesis_unreadable`);
    return body.items.length === 2 ? body.items : null;
  }, 'two kinesis_unreadable alarms', 60_000);
  t.ok(Date.now() - started < 60_000, `alarms within a minute (${Date.now() - started} ms)`);
  t.same(alarms.map((a) => a.details.accountSid).sort(), [ACCOUNT, second].sort());
  t.match(alarms.find((a) => a.details.accountSid === ACCOUNT)?.message, /does-not-exist.*ResourceNotFound/);
  t.notMatch(JSON.stringify(alarms), /sekrit/, 'no secret in alarms');
  t.equal((await fetch(`${g.http}/readyz`)).status, 200, 'still ready');
});

t.test('a Kinesis worker that throws is started again with back-off and raises an alarm; recording goes on', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('crash', 1);
  const order: string[] = [];
  // the first worker throws as the main thread's answer to its first batch comes in, maybe before
  // it wrote that checkpoint: then the next worker reads and applies the batch again (at least once)
  const g = await startTestGateway(t, envFor(k, 'crash'), { kinesis: { ...FAST.kinesis, restartMs: 300, crashAfterAcks: 1, onApplied: (id) => order.push(id) } });
  const callSid = randomSid('CA');
  const first = cloudEvent({ eventType: 'reservation.created', accountSid: ACCOUNT, callSid, employeeId: 'E-1' });
  await k.put('crash', first);
  const alarms = await until(async () => {
    const { body } = await getJson<{ items: { message: string; details: { op: string; accountSid: string } }[] }>(`${g.http}/v1/alarms?kind=kinesis_unreadable`);
    return body.items.length > 0 ? body.items : null;
  }, 'an alarm for the dead worker');
  t.match(alarms[0], { details: { op: 'worker', accountSid: ACCOUNT } });
  t.match(alarms[0]?.message, /child process\) stopped.*started again in 300 ms/);
  t.equal((await fetch(`${g.http}/readyz`)).status, 200, 'still ready');
  await record(g, callSid, 6);
  const [rec] = await waitForRecordings(g.http, callSid, 1);
  t.equal(rec.employeeId, 'E-1', 'recorded and attributed while the reader restarted');

  await until(() => g.gw.kinesis?.starts === 2, 'the worker started again');
  const second = cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT, callSid, employeeId: 'E-2' });
  await k.put('crash', second);
  await until(() => order.includes(second.id as string), 'the new worker applies new events');
  t.ok(order.filter((id) => id === first.id).length >= 1, 'the event read before the crash was applied (at least once)');
  t.equal(order.filter((id) => id === second.id).length, 1, 'the new one once');
  t.equal(g.gw.kinesis?.starts, 2, 'one restart');
});

t.test('one batch: recordings published before a restart take each call\'s last attribution, on the sidecar and in the catalog', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('batch', 1);
  const dir = await tempDir(t, 'gw-kinesis-');
  const env = { ...envFor(k, 'batch'), RECORDINGS_DIR: dir };
  const [moved, other, dropped, none] = [randomSid('CA'), randomSid('CA'), randomSid('CA'), randomSid('CA')];
  // recorded without any CTI event yet: published unattributed, then the node restarts (its
  // memory of the calls is gone; the catalog and the sidecars stay)
  const g1 = await startTestGateway(t, env, FAST);
  for (const [i, c] of [moved, other, dropped].entries()) await record(g1, c, 10 + i);
  for (const c of [moved, other, dropped]) t.match((await waitForRecordings(g1.http, c, 1))[0], { ctiSessionId: null, employeeId: null });
  await g1.gw.close();

  // put while no node reads: the next one gets them in one GetRecords, i.e. one batch
  const ev = (eventType: string, callSid: string, employeeId: string, ctiSessionId?: string) =>
    ({ data: cloudEvent({ eventType, accountSid: ACCOUNT, callSid, employeeId, ctiSessionId }), partitionKey: 'one-shard' });
  await k.putMany('batch', [
    ev('reservation.created', moved, 'E-1', 'contact-1'),
    ev('reservation.created', other, 'E-9', 'contact-9'),
    ev('reservation.accepted', moved, 'E-2', 'contact-2'), // a second change of the same call: the last one wins
    ev('reservation.created', dropped, 'E-5'),
    ev('reservation.timeout', dropped, 'E-5'), // then not_responding: its audio is deleted, not re-attributed
    ev('reservation.created', none, 'E-7'), // a call with no recording
  ]);
  const g2 = await startTestGateway(t, env, FAST);
  await until(async () => (await counts(g2.gw)).applied === 6, 'the batch applied');

  await until(async () => (await recordingsOf(g2, dropped)).length === 0, 'the not_responding call deleted');
  for (const [c, ctiSessionId, employeeId] of [[moved, 'contact-2', 'E-2'], [other, 'contact-9', 'E-9']] as const) {
    const [row] = await recordingsOf(g2, c);
    t.match(row, { ctiSessionId, employeeId }, `${c}: the catalog row has the call's last attribution`);
    const onDisk = JSON.parse(await readFile(sidecarPathOf(dir, row!), 'utf8')) as RecordingSidecar;
    t.match(onDisk, { ctiSessionId, employeeId }, `${c}: so has its sidecar`);
  }
  t.same((await getJson<{ items: RecordingSidecar[] }>(`${g2.http}/v1/recordings?ctiSessionId=contact-1`)).body.items, [],
    'the intermediate attribution is nowhere');
  t.same(await counts(g2.gw), { applied: 6 });
});
