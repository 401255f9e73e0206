// Kinesis faults the consumer must ride out (contract section 9) against kinesalite behind a
// stand-in that answers some calls with Kinesis errors: throttled reads and expired iterators
// are retried without losing or re-applying an event; events older than the 24 h an event may
// lie in the past are counted and summed up in one log line, not one line each.
import t from 'tap';
import { Writable } from 'node:stream';
import pino from 'pino';
import { randomSid } from '../loadtest/sids.js';
import type { Gateway, GatewayOptions } from '../gateway/server.js';
import { startTestGateway, getJson } from './fixtures/harness.js';
import { until } from './fixtures/calls.js';
import { cloudEvent, keyForShard, startKinesalite, startKinesisFaults, TEST_CREDENTIALS, type KinesisFault } from './fixtures/kinesis.js';

const ACCOUNT = randomSid('AC');
const FAST: NonNullable<GatewayOptions['kinesis']> = { pollMs: 50, claimMs: 100, discoverMs: 300, renewMs: 500, minGapMs: 20, backoffMs: 50, maxBackoffMs: 400 };

async function counts(gw: Gateway): Promise<Record<string, number>> {
  const m = await gw.metrics.registry.getSingleMetric('gateway_kinesis_records_total')?.get();
  const out: Record<string, number> = {};
  for (const v of m?.values ?? []) if (v.value > 0) out[String(v.labels.result)] = (out[String(v.labels.result)] ?? 0) + v.value;
  return out;
}

const env = (endpoint: string, stream: string) => ({
  TWILIO_ACCOUNT_SID: ACCOUNT, KINESIS_STREAM: stream, KINESIS_REGION: 'us-east-1', KINESIS_ENDPOINT: endpoint,
  KINESIS_START: 'TRIM_HORIZON', ...TEST_CREDENTIALS,
});

t.test('throttled reads and expired iterators are retried: every event applied exactly once', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('faults', 2);
  const shards = await k.shards('faults');
  // the answers carrying records, counted: the 1st to 3rd are throttled (the SDK retries one
  // itself, so the reader backs off too), the 5th and 8th say the iterator expired; the first
  // GetShardIterator after an expiry is throttled as well
  const injected = { throttledReads: 0, expired: 0, throttledIterators: 0 };
  let withRecords = 0;
  let iteratorAfterExpiry = false;
  const proxy = await startKinesisFaults(t, k.endpoint, (op, body): KinesisFault => {
    if (op === 'GetShardIterator' && iteratorAfterExpiry) {
      iteratorAfterExpiry = false;
      injected.throttledIterators++;
      return 'ProvisionedThroughputExceededException';
    }
    if (op !== 'GetRecords' || !Array.isArray(body.Records) || body.Records.length === 0) return null;
    withRecords++;
    if (withRecords <= 3) {
      injected.throttledReads++;
      return 'ProvisionedThroughputExceededException';
    }
    if (withRecords === 5 || withRecords === 8) {
      injected.expired++;
      iteratorAfterExpiry = true;
      return 'ExpiredIteratorException';
    }
    return null;
  });
  const applied: string[] = [];
  const g = await startTestGateway(t, env(proxy.endpoint, 'faults'), { kinesis: { ...FAST, onApplied: (id) => applied.push(id) } });

  const ids: string[] = [];
  for (let batch = 0; batch < 8; batch++) {
    const items = Array.from({ length: 5 }, (_, i) => {
      const id = `NO${String(batch * 5 + i).padStart(32, '0')}`;
      ids.push(id);
      const callSid = randomSid('CA');
      return { data: cloudEvent({ eventType: 'reservation.created', accountSid: ACCOUNT, callSid, id }), partitionKey: keyForShard(shards[(batch + i) % 2]!, String(batch * 5 + i)) };
    });
    await k.putMany('faults', items);
    // the next batch once this one was read (or refused): faults land on records, not on idle polls
    const seen = withRecords;
    await until(async () => withRecords > seen || applied.length >= ids.length, `batch ${batch} read`);
  }
  await until(async () => applied.length >= ids.length, 'every event applied', 30_000);
  // a moment more for anything read twice to show up
  await until(async () => (await counts(g.gw)).applied === ids.length, 'the counter agrees');
  t.same([...applied].sort(), [...ids].sort(), 'each event applied once: none lost, none applied twice');
  t.same(await counts(g.gw), { applied: ids.length }, 'no duplicates were even read again');
  t.ok(injected.throttledReads >= 3, `throttled reads: ${injected.throttledReads}`);
  t.equal(injected.expired, 2, 'two iterators expired under the reader');
  t.ok(injected.throttledIterators >= 1, 'a throttled GetShardIterator');
  const { body } = await getJson<{ items: unknown[] }>(`${g.http}/v1/alarms?kind=kinesis_unreadable`);
  t.same(body.items, [], 'throttling and expiry are no alarm: the stream is readable');
});

t.test('events older than 24 h are counted and summed up in one log line, not one line each', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('old', 1);
  const old = new Date(Date.now() - 25 * 3600_000).toISOString();
  const items = Array.from({ length: 300 }, () => {
    const ev = cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT, callSid: randomSid('CA'), employeeId: 'E-old' });
    ev.time = old;
    const data = ev.data as { timestamp: string; payload: { timestamp: string } };
    data.timestamp = old;
    data.payload.timestamp = old;
    return { data: ev, partitionKey: 'pk' };
  });
  await k.putMany('old', items);
  await k.put('old', cloudEvent({ eventType: 'reservation.accepted', accountSid: ACCOUNT, callSid: randomSid('CA'), employeeId: 'E-new' }));

  const lines: { level: number; msg: string; refused?: number; example?: string }[] = [];
  const sink = new Writable({ write(chunk: Buffer, _e, cb) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l)); cb(); } });
  const logger = pino({ level: 'info' }, sink);
  const g = await startTestGateway(t, env(k.endpoint, 'old'), { logger, kinesis: FAST });
  await until(async () => (await counts(g.gw)).applied === 1, 'the fresh event applied');
  t.same(await counts(g.gw), { applied: 1, invalid: 300 }, 'every old event counted, none applied');
  const refused = lines.filter((l) => /refused/i.test(l.msg));
  t.equal(refused.length, 1, `one line for 300 old events: ${JSON.stringify(refused.map((l) => l.msg))}`);
  t.equal(refused[0]?.refused, 300, 'it says how many');
  t.match(refused[0]?.example, /within the last 24 h/, 'and why, by one example');
  t.ok(lines.length < 30, `${lines.length} log lines in all`);
});
