// Kinesis with real gateway processes: role assumption through an STS stand-in, and cluster
// mode, where each shard has one reader and a SIGKILLed reader's shards are taken over.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { randomSid } from '../loadtest/sids.js';
import { parseCpuList } from '../recorder/background-launch.js';
import { startProcess, tempDir } from './fixtures/gateway-process.js';
import { startNode, startRedis } from './fixtures/cluster-procs.js';
import { until } from './fixtures/calls.js';
import { cloudEvent, keyForShard, startKinesalite, startStsStandIn, TEST_CREDENTIALS } from './fixtures/kinesis.js';

t.setTimeout(240_000);
const ACCOUNT = randomSid('AC');

/** the Kinesis reader processes among a gateway's children */
function readerPids(pid: number): number[] {
  const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  return kids.filter((c) => readFileSync(`/proc/${c}/cmdline`, 'utf8').includes('kinesis-worker'));
}
/** nice of a process, from /proc/<pid>/stat (field 19) */
function niceOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
}

async function applied(http: string): Promise<number> {
  const text = await (await fetch(`${http}/metrics`)).text();
  const m = /gateway_kinesis_records_total\{account="AC[0-9a-f]+",result="applied"\} (\d+)/.exec(text);
  return m ? Number(m[1]) : -1;
}

t.test('a role is assumed through STS with RoleArn, ExternalId and RoleSessionName', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('role', 1);
  const sts = await startStsStandIn(t);
  const dir = await tempDir(t, 'gw-kinesis-');
  const roleArn = 'arn:aws:iam::123456789012:role/twilio-recorder';
  const g = await startProcess(t, process.cwd(), {
    RECORDINGS_DIR: dir, TWILIO_ACCOUNT_SID: ACCOUNT, KINESIS_STREAM: 'arn:aws:kinesis:us-east-1:123456789012:stream/role',
    KINESIS_ENDPOINT: k.endpoint, KINESIS_START: 'TRIM_HORIZON', ...TEST_CREDENTIALS,
    KINESIS_ROLE_ARN: roleArn, KINESIS_EXTERNAL_ID: 'ext-id-secret-42', KINESIS_ROLE_SESSION_NAME: 'recorder-session',
    AWS_ENDPOINT_URL_STS: sts.endpoint,
  });
  await k.put('role', cloudEvent({ eventType: 'reservation.created', accountSid: ACCOUNT, callSid: randomSid('CA') }));
  await until(async () => (await applied(g.http)) === 1, 'the event applied with the assumed role\'s credentials', 20_000);
  t.ok(sts.requests.length >= 1, 'STS was asked');
  const p = sts.requests[0]!;
  t.equal(p.get('Action'), 'AssumeRole');
  t.equal(p.get('RoleArn'), roleArn);
  t.equal(p.get('ExternalId'), 'ext-id-secret-42');
  t.equal(p.get('RoleSessionName'), 'recorder-session');
  const log = g.stdout();
  t.match(log, /"msg":"configuration"/);
  t.notMatch(log, /ext-id-secret-42|sekrit-kinesis-key-123/, 'neither the secret key nor the external id is logged');
});

t.test('a gateway pinned to CPU 0 (as perf-ratio pins it) reads Kinesis in a child process on the other CPUs, at nice 10', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('pinned', 1);
  const dir = await tempDir(t, 'gw-kinesis-pinned-');
  const g = await startProcess(t, process.cwd(), {
    RECORDINGS_DIR: dir, TWILIO_ACCOUNT_SID: ACCOUNT, KINESIS_STREAM: 'pinned', KINESIS_REGION: 'us-east-1',
    KINESIS_ENDPOINT: k.endpoint, KINESIS_START: 'TRIM_HORIZON', ...TEST_CREDENTIALS,
  }, { cpus: '0' });
  await k.put('pinned', cloudEvent({ eventType: 'reservation.created', accountSid: ACCOUNT, callSid: randomSid('CA') }));
  await until(async () => (await applied(g.http)) === 1, 'the event applied', 20_000);
  const readers = readerPids(g.child.pid!);
  t.equal(readers.length, 1, 'one reader process');
  const allowed = (pid: number) => /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  t.equal(allowed(g.child.pid!), '0', 'the gateway is on CPU 0');
  const online = parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8'));
  const others = online.filter((c) => c !== 0);
  // on a one-CPU machine there is nowhere else: the reader stays where the gateway is
  t.equal(allowed(readers[0]!), others.length > 0 ? others.join(',') : '0', 'the reader is on the other CPUs');
  t.equal(niceOf(readers[0]!), 10, 'at nice 10');
  g.child.kill('SIGTERM');
  const e = await g.exited;
  t.equal(e.code, 0, 'the gateway stops cleanly');
  t.notOk(existsSync(`/proc/${readers[0]!}`), 'its reader with it');
});

t.test('cluster: one reader per shard, taken over within 15 s when its node is SIGKILLed', { timeout: 180_000 }, async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('cluster', 2);
  const shards = await k.shards('cluster');
  const redis = await startRedis(t);
  const dir = await tempDir(t, 'gw-kinesis-cluster-');
  const env = {
    REDIS_URL: redis.url, RECORDINGS_DIR: dir, TWILIO_ACCOUNT_SID: ACCOUNT, KINESIS_STREAM: 'cluster', KINESIS_REGION: 'us-east-1',
    KINESIS_ENDPOINT: k.endpoint, KINESIS_START: 'TRIM_HORIZON', ...TEST_CREDENTIALS,
  };
  const a = await startNode(t, { ...env, NODE_ID: 'kin-a' });
  const b = await startNode(t, { ...env, NODE_ID: 'kin-b' });
  const nodes = { 'kin-a': a, 'kin-b': b } as const;
  const r = new Redis(redis.url);
  t.teardown(() => r.disconnect());
  const leaseKeys = async () => r.keys('gw:kinesis:*:lease:*');
  const holders = async () => Object.fromEntries(await Promise.all((await leaseKeys()).map(async (key) => [key.split(':').pop(), await r.get(key)])));
  await until(async () => Object.keys(await holders()).length === 2, 'both shards leased');

  const put = async (n: number, tag: string) => {
    for (let i = 0; i < n; i++) {
      for (const s of shards) await k.put('cluster', cloudEvent({ eventType: 'reservation.created', accountSid: ACCOUNT, callSid: randomSid('CA'), employeeId: `${tag}-${i}` }), keyForShard(s, tag));
    }
  };
  await put(5, 'before');
  const total = async () => (await applied(a.http)) + (await applied(b.http));
  await until(async () => (await total()) === 10, 'every event applied once across the cluster', 20_000);
  // each shard had exactly one reader: nothing was applied twice
  t.equal(await total(), 10);
  await until(async () => {
    const cks = await r.hgetall((await r.keys('gw:kinesis:*:ckpt'))[0] ?? 'none');
    return Object.values(cks).filter((v) => (JSON.parse(v) as { seq: string | null }).seq !== null).length === 2;
  }, 'both shards checkpointed');

  const before = await holders();
  const victimId = before[shards[0]!.ShardId as string] as keyof typeof nodes;
  const victim = nodes[victimId];
  const survivor = victimId === 'kin-a' ? b : a;
  const survivorBefore = await applied(survivor.http);
  // the victim's Kinesis reader: its child process, at nice 10 (kinesis-consumer.ts)
  const readers = readerPids(victim.child.pid!);
  t.equal(readers.length, 1, 'the node reads in one child process');
  t.equal(niceOf(readers[0]!), 10, 'at nice 10');
  await victim.kill('SIGKILL');
  const killedAt = Date.now();
  await put(3, 'after');
  await until(async () => (await applied(survivor.http)) === survivorBefore + 6, 'the survivor applies every new event', 30_000);
  const took = Date.now() - killedAt;
  await until(() => !existsSync(`/proc/${readers[0]!}`), 'the dead node\'s reader exited with it', 5000);
  t.ok(took < 15_000, `shards taken over and read within 15 s (${took} ms)`);
  const after = await holders();
  t.same(Object.values(after), [survivor.nodeId, survivor.nodeId], 'the survivor holds both leases');
  t.equal(await applied(survivor.http), survivorBefore + 6, 'nothing from before the kill was applied again');
});
