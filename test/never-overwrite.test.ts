// Issue 8 items 6 and 7: a recording is never overwritten. A second stream with the ids of a
// finished one (same streamSid, same call, same account; another account; another node on the
// same volume) is recorded beside it under a new recordingId, and every outcome has its own
// eventId. Concurrent rewrites of one sidecar never corrupt it nor lose a field.
import t from 'tap';
import { readFile, readdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { runStream } from '../loadtest/stream-runner.js';
import { trackAudio } from '../loadtest/audio-fixtures.js';
import { randomSid } from '../loadtest/sids.js';
import { loadConfig } from '../gateway/config.js';
import { buildGateway } from '../gateway/server.js';
import { writeFileAtomic } from '../recorder/atomic-file.js';
import { audioPathOnDisk, decodeWav, getJson, readSidecarFromDisk, startTestGateway, waitForRecordings } from './fixtures/harness.js';
import { post, until } from './fixtures/calls.js';
import { WebhookReceiver } from './fixtures/webhook-receiver.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

const SECRET = 'webhook-secret-for-tests';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('a reused streamSid is recorded beside the finished recording, never over it', async (t) => {
  const rx = await new WebhookReceiver().up();
  t.teardown(() => rx.down());
  const g = await startTestGateway(t, { RECORDING_WEBHOOK_URL: rx.url, RECORDING_WEBHOOK_SECRET: SECRET }, { webhookBaseDelayMs: 50 });
  const accountSid = randomSid('AC');
  const callSid = randomSid('CA');
  const streamSid = randomSid('MZ');
  // 3 s of stereo audio, then the same ids again with 20 ms of other audio
  await runStream({ url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 11, frames: 150, realtime: false, accountSid, callSid, streamSid });
  const [first] = await waitForRecordings(g.http, callSid, 1);
  t.equal(first.recordingId, `${streamSid}-0000`, 'the first stream keeps the plain id');
  const firstBytes = await readFile(audioPathOnDisk(g.dir, first));
  await runStream({ url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 12, frames: 1, realtime: false, accountSid, callSid, streamSid });
  const both = await waitForRecordings(g.http, callSid, 2);
  const second = both.find((r) => r.recordingId !== first.recordingId)!;
  t.equal(second.recordingId, `${streamSid}-r1-0000`, 'the second stream is recorded beside it');

  const after = await readFile(audioPathOnDisk(g.dir, first));
  t.ok(after.equals(firstBytes), 'the first recording is byte for byte what it was');
  t.equal(sha(after), first.sha256);
  t.same(await readSidecarFromDisk(g.dir, first), first, 'its sidecar too');
  const wav = decodeWav(after);
  t.ok(Buffer.from(wav.channel[0]!).equals(trackAudio(11, 'inbound', 150)), 'still the 3 s that were sent');
  const wav2 = decodeWav(await readFile(audioPathOnDisk(g.dir, second)));
  t.ok(Buffer.from(wav2.channel[0]!).equals(trackAudio(12, 'inbound', 1)), 'the second stream has its own audio');

  await until(() => rx.ofEvent(`${second.recordingId}.finished`).length > 0, 'the second finished webhook');
  await until(() => rx.ofEvent(`${first.recordingId}.finished`).length > 0, 'the first finished webhook');
  for (const r of [first, second]) {
    const bodies = new Set(rx.ofEvent(`${r.recordingId}.finished`).map((x) => x.body));
    t.equal(bodies.size, 1, `${r.recordingId}: one body per eventId`);
    t.equal(JSON.parse([...bodies][0]!).sha256, r.sha256);
  }

  // Another account with the same streamSid: recorded beside as well; A's stays visible.
  const otherAccount = randomSid('AC');
  const otherCall = randomSid('CA');
  await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 13, frames: 10, realtime: false, accountSid: otherAccount, callSid: otherCall, streamSid });
  const [third] = await waitForRecordings(g.http, otherCall, 1);
  t.equal(third.recordingId, `${streamSid}-r2-0000`);
  t.equal(third.accountSid, otherAccount);
  const got = await getJson<RecordingSidecar>(`${g.http}/v1/recordings/${first.recordingId}`);
  t.equal(got.status, 200);
  t.equal(got.body.accountSid, accountSid, "the first account's recording is still the one under its id");
  t.equal(got.body.sha256, first.sha256);
});

t.test('two nodes on one volume starting the same streamSid at once take different recordingIds', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-shared-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const nodes = await Promise.all(['node-a', 'node-b'].map(async (NODE_ID) => {
    const gw = await buildGateway(loadConfig({ PORT: '0', HOST: '127.0.0.1', RECORDINGS_DIR: dir, LOG_LEVEL: 'silent', NODE_ID }));
    const port = await gw.listen();
    await gw.recovery;
    t.teardown(() => gw.close());
    return { gw, ws: `ws://127.0.0.1:${port}/twilio/v1`, http: `http://127.0.0.1:${port}` };
  }));
  const accountSid = randomSid('AC');
  const callSid = randomSid('CA');
  const streamSid = randomSid('MZ');
  const runs = await Promise.all(nodes.map((n, i) =>
    runStream({ url: n.ws, tracks: ['inbound'], seed: 20 + i, frames: 50 + i * 10, realtime: false, accountSid, callSid, streamSid })));
  t.equal(runs.length, 2);
  // both single nodes share the volume's embedded catalog: each lists both; each wrote its own
  const recs = await Promise.all(nodes.map(async (n, i) =>
    (await waitForRecordings(n.http, callSid, 2)).find((r) => r.nodeId === ['node-a', 'node-b'][i])!));
  t.not(recs[0]!.recordingId, recs[1]!.recordingId, `distinct ids: ${recs[0]!.recordingId}, ${recs[1]!.recordingId}`);
  for (const [i, r] of recs.entries()) {
    const wav = decodeWav(await readFile(audioPathOnDisk(dir, r)));
    t.ok(Buffer.from(wav.channel[0]!).equals(trackAudio(20 + i, 'inbound', 50 + i * 10)), `node ${i}: its stream's audio, intact`);
  }
  const files = (await readdir(path.dirname(audioPathOnDisk(dir, recs[0]!)))).filter((f) => f.endsWith('.wav'));
  t.equal(files.length, 2, 'two files side by side');
});

t.test('concurrent atomic rewrites of one file never corrupt it', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-atomic-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'x.json');
  await writeFile(file, '{}');
  const bodies = Array.from({ length: 64 }, (_, i) => JSON.stringify({ i, pad: String(i).repeat(20_000 + i * 997) }));
  const results = await Promise.allSettled(bodies.map((b) => writeFileAtomic(file, b)));
  t.same(results.filter((r) => r.status === 'rejected').map((r) => String(r.reason)), [], 'every write succeeded');
  const final = await readFile(file, 'utf8');
  t.ok(bodies.includes(final), 'the file is exactly one of the writes');
  t.same((await readdir(dir)).sort(), ['x.json'], 'no temporary file left behind');
});

t.test('concurrent CTI events for an ended call leave a valid sidecar with every field', async (t) => {
  const g = await startTestGateway(t);
  const run = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 5, frames: 20, realtime: false });
  const [rec] = await waitForRecordings(g.http, run.callSid, 1);
  for (let round = 0; round < 20; round++) {
    const answers = await Promise.all([
      post(`${g.http}/v1/cti/events`, { type: 'transfer', callSid: run.callSid, ctiSessionId: `S-${round}` }),
      post(`${g.http}/v1/cti/events`, { type: 'transfer', callSid: run.callSid, employeeId: `E-${round}` }),
      post(`${g.http}/v1/cti/events`, { type: 'consult', callSid: run.callSid, ctiSessionId: `S-${round}b`, employeeId: `E-${round}b` }),
    ]);
    t.same(answers.map((a) => a.status), [200, 200, 200]);
    const state = answers[2].body as { ctiSessionId: string | null; employeeId: string | null };
    const text = await readFile(audioPathOnDisk(g.dir, rec).replace(/\.wav$/, '.json'), 'utf8');
    let onDisk: RecordingSidecar;
    try {
      onDisk = JSON.parse(text) as RecordingSidecar;
    } catch (err) {
      t.fail(`round ${round}: the sidecar is not JSON: ${(err as Error).message}`);
      return;
    }
    // every event was answered, so every rewrite it caused is done: disk = the call's state now
    const now = (await post(`${g.http}/v1/cti/events`, { type: 'ringing', callSid: run.callSid })).body as { ctiSessionId: string; employeeId: string };
    t.same([onDisk.ctiSessionId, onDisk.employeeId], [now.ctiSessionId, now.employeeId], `round ${round}: no field lost`);
    t.equal(onDisk.sha256, rec.sha256);
    t.ok(state.ctiSessionId !== null);
  }
  const listed = await getJson<RecordingSidecar>(`${g.http}/v1/recordings/${rec.recordingId}`);
  t.equal(listed.body.sha256, rec.sha256);
  t.same((await readdir(path.dirname(audioPathOnDisk(g.dir, rec)))).filter((n) => n.startsWith('.')), [], 'no temporary files left');
});
