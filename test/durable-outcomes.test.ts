// Issue 8 items 8, 10 and 11: each rotated segment gets its outcome (index, webhook) when it is
// published, not when the stream ends; a `connected` keeps the call's audio across a restart;
// a rule deletion the disk refuses raises an alarm, is retried, and survives a restart.
import t from 'tap';
import { readdir, readFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { runStream } from '../loadtest/stream-runner.js';
import { audioPathOnDisk, getJson, startTestGateway, waitForRecordings } from './fixtures/harness.js';
import { openStream, post, until } from './fixtures/calls.js';
import { WebhookReceiver } from './fixtures/webhook-receiver.js';

const SECRET = 'webhook-secret-for-tests';
const run = promisify(execFile);
const exists = (f: string) => stat(f).then(() => true, () => false);

t.test('a rotated segment is indexed and announced while the call goes on', async (t) => {
  const rx = await new WebhookReceiver().up();
  t.teardown(() => rx.down());
  const g = await startTestGateway(t, { SEGMENT_MAX_S: '10', RECORDING_WEBHOOK_URL: rx.url, RECORDING_WEBHOOK_SECRET: SECRET }, { webhookBaseDelayMs: 50 });
  const s = await openStream(g.wsUrl, { tracks: ['inbound'] });
  await s.frames(0, 650); // 13 s of call time, sent at once: segment 0 rotates out
  const [seg0] = await waitForRecordings(g.http, s.callSid, 1);
  t.equal(seg0.recordingId, `${s.streamSid}-0000`);
  t.equal(seg0.closeReason, 'rotate');
  await until(() => rx.ofEvent(`${seg0.recordingId}.finished`).length > 0, 'the finished webhook of segment 0');
  t.equal(g.gw.recorder.activeStreams, 1, 'while the stream is still live');
  const inprogress = await readdir(path.join(g.dir, '.inprogress'));
  t.notOk(inprogress.includes(`${seg0.recordingId}.json`), "segment 0's outcome is done: its mark is gone");
  await s.end();
  const both = await waitForRecordings(g.http, s.callSid, 2);
  t.same(both.map((r) => r.segmentIndex), [0, 1]);
  await until(() => rx.ofEvent(`${both[1]!.recordingId}.finished`).length > 0, 'the finished webhook of segment 1');
});

t.test('a rotated segment that MIN_SESSION_LENGTH_S may still delete waits, durably, for the end', async (t) => {
  const g = await startTestGateway(t, { SEGMENT_MAX_S: '10', MIN_SESSION_LENGTH_S: '30' });
  const s = await openStream(g.wsUrl, { tracks: ['inbound'] });
  await s.frames(0, 650);
  const mark = path.join(g.dir, '.inprogress', `${s.streamSid}-0000.json`);
  await until(async () => {
    const files = await readdir(g.dir, { recursive: true });
    return files.some((f) => f.endsWith(`${s.streamSid}-0000.json`) && !f.startsWith('.inprogress'));
  }, 'segment 0 published');
  t.ok(await exists(mark), 'its outcome waits: the mark stays in .inprogress (a crash recovers it)');
  t.same((await getJson<{ items: unknown[] }>(`${g.http}/v1/recordings?callSid=${s.callSid}`)).body.items, [], 'not listed yet');
  await s.end();
  await g.gw.recorder.settled();
  t.same((await getJson<{ items: unknown[] }>(`${g.http}/v1/recordings?callSid=${s.callSid}`)).body.items, [], '13 s < 30 s: both deleted');
  t.notOk(await exists(mark));
});

t.test('a rotated segment that waited for the end takes the attribution of events meanwhile', async (t) => {
  const g = await startTestGateway(t, { SEGMENT_MAX_S: '10', MIN_SESSION_LENGTH_S: '12' });
  const s = await openStream(g.wsUrl, { tracks: ['inbound'], customParameters: { ctiSessionId: 'S-early' } });
  await s.frames(0, 650);
  await until(async () => (await readdir(g.dir, { recursive: true }))
    .some((f) => f.endsWith(`${s.streamSid}-0000.json`) && !f.startsWith('.inprogress')), 'segment 0 published');
  const ev = await post(`${g.http}/v1/cti/events`, { type: 'transfer', callSid: s.callSid, ctiSessionId: 'S-late', employeeId: 'E-late' });
  t.equal(ev.status, 200);
  await s.end();
  const both = await waitForRecordings(g.http, s.callSid, 2);
  t.same(both.map((r) => [r.segmentIndex, r.ctiSessionId, r.employeeId]), [[0, 'S-late', 'E-late'], [1, 'S-late', 'E-late']], '13 s >= 12 s: both kept, both re-attributed');
  const disk = JSON.parse(await readFile(audioPathOnDisk(g.dir, both[0]).replace(/\.wav$/, '.json'), 'utf8')) as { ctiSessionId: string };
  t.equal(disk.ctiSessionId, 'S-late', 'on disk too');
});

t.test('connected keeps the call after a restart: a replayed not_responding deletes nothing', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-kept-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const first = await startTestGateway(t, { RECORDINGS_DIR: dir });
  const res = await runStream({ url: first.wsUrl, tracks: ['inbound'], seed: 3, frames: 30, realtime: false });
  const [rec] = await waitForRecordings(first.http, res.callSid, 1);
  t.equal((await post(`${first.http}/v1/cti/events`, { type: 'connected', callSid: res.callSid })).status, 200);
  await first.gw.close();

  const second = await startTestGateway(t, { RECORDINGS_DIR: dir });
  const ev = await post(`${second.http}/v1/cti/events`, { type: 'not_responding', callSid: res.callSid });
  t.equal(ev.status, 200);
  t.equal(ev.body.kept, true, 'the node knows the call was kept');
  t.equal(ev.body.discard, false);
  await second.gw.recorder.settled();
  t.equal((await getJson(`${second.http}/v1/recordings/${rec.recordingId}`)).status, 200, 'still listed');
  t.ok(await exists(audioPathOnDisk(dir, rec)), 'the audio is still on disk');
});

t.test('a rule deletion the disk refuses: alarm, retried, never back in the index after a restart', async (t) => {
  const rx = await new WebhookReceiver().up();
  t.teardown(() => rx.down());
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-del-'));
  const env = { RECORDINGS_DIR: dir, RECORDING_WEBHOOK_URL: rx.url, RECORDING_WEBHOOK_SECRET: SECRET };
  const first = await startTestGateway(t, env, { webhookBaseDelayMs: 50 });
  const res = await runStream({ url: first.wsUrl, tracks: ['inbound'], seed: 4, frames: 30, realtime: false });
  const [rec] = await waitForRecordings(first.http, res.callSid, 1);
  const sidecarFile = audioPathOnDisk(dir, rec).replace(/\.wav$/, '.json');
  // an immutable file cannot be unlinked, even by root: the deletion fails like on a bad disk
  await run('chattr', ['+i', sidecarFile]);
  t.teardown(async () => {
    await run('chattr', ['-i', sidecarFile]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });
  t.equal((await post(`${first.http}/v1/cti/events`, { type: 'not_responding', callSid: res.callSid })).status, 200);
  const alarms = await until(async () => {
    const { body } = await getJson<{ items: { kind: string; recordingId?: string }[] }>(`${first.http}/v1/alarms?kind=delete_failed`);
    return body.items.length > 0 ? body.items : null;
  }, 'a delete_failed alarm');
  t.equal(alarms[0]!.recordingId, rec.recordingId);
  t.equal((await getJson(`${first.http}/v1/recordings/${rec.recordingId}`)).status, 404, 'not listed although its files are still there');
  await first.gw.close();

  const second = await startTestGateway(t, env, { webhookBaseDelayMs: 50 });
  t.equal((await getJson(`${second.http}/v1/recordings/${rec.recordingId}`)).status, 404, 'not back in the index after a restart');
  t.ok(await exists(audioPathOnDisk(dir, rec)), 'the deletion is still pending');
  await run('chattr', ['-i', sidecarFile]); // the disk recovers
  await until(async () => !(await exists(audioPathOnDisk(dir, rec))) && !(await exists(sidecarFile)), 'the retried deletion', 15_000);
  await until(() => rx.ofEvent(`${rec.recordingId}.deleted`).length > 0, 'the deleted webhook');
  t.match(rx.ofEvent(`${rec.recordingId}.deleted`)[0]!.json, { deleteReason: 'not_responding', recordingId: rec.recordingId });
  t.equal(rx.ofEvent(`${rec.recordingId}.finished`).length > 0, true, 'it had been announced finished before');
  t.same(await readdir(path.join(dir, '.deletions')), [], 'no deletion left pending');
});

