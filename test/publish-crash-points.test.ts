// Issue 8 item 9: a real gateway process SIGKILLs itself at each named step of publication,
// recovery and deletion (GATEWAY_TEST_CRASH_AT, inert unless set); the next start over the same
// RECORDINGS_DIR finishes the job: the recording is published once, bit-exact, indexed and
// announced (a repeated webhook carries the same eventId and body), nothing is left behind.
import t, { type Test } from 'tap';

t.setTimeout(300_000);
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { runStream } from '../loadtest/stream-runner.js';
import { trackAudio } from '../loadtest/audio-fixtures.js';
import { decodeWav, fetchAudio, getJson } from './fixtures/harness.js';
import { until } from './fixtures/calls.js';
import { startProcess, tempDir, type Running } from './fixtures/gateway-process.js';
import { WebhookReceiver } from './fixtures/webhook-receiver.js';
import { globSidecars } from './fixtures/disk.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

const SECRET = 'webhook-secret-for-tests';

async function ready(p: Running): Promise<void> {
  await until(async () => (await fetch(`${p.http}/readyz`)).status === 200, 'ready', 20_000);
}

async function setup(t: Test, extra: Record<string, string> = {}) {
  const rx = await new WebhookReceiver().up();
  t.teardown(() => rx.down());
  const cwd = await tempDir(t, 'gw-crashpt-');
  const env = { RECORDINGS_DIR: path.join(cwd, 'rec'), RECORDING_WEBHOOK_URL: rx.url, RECORDING_WEBHOOK_SECRET: SECRET, ...extra };
  return { rx, cwd, env };
}

/** every POST of one eventId carries the same body */
function oneBody(t: Test, rx: WebhookReceiver, eventId: string): Record<string, any> {
  const posts = rx.ofEvent(eventId);
  t.equal(new Set(posts.map((p) => p.body)).size, 1, `${eventId}: ${posts.length} POST(s), one body`);
  return posts[0]!.json;
}

async function stopClean(t: Test, p: Running): Promise<void> {
  p.child.kill('SIGTERM');
  t.equal((await p.exited).code, 0, 'the restarted node exits cleanly');
}

for (const step of ['publish:audio-renamed', 'publish:sidecar-written', 'publish:outcome-done', 'webhook:claimed'] as const) {
  t.test(`killed at ${step}: the next start publishes, indexes and announces the recording`, { timeout: 60_000 }, async (t) => {
    const { rx, cwd, env } = await setup(t);
    const first = await startProcess(t, cwd, { ...env, GATEWAY_TEST_CRASH_AT: step });
    const res = await runStream({ url: first.ws, tracks: ['inbound', 'outbound'], seed: 31, frames: 100, realtime: false });
    t.equal((await first.exited).signal, 'SIGKILL', `the process killed itself at ${step}`);

    const second = await startProcess(t, cwd, env);
    await ready(second);
    const listed = (await getJson<{ items: RecordingSidecar[] }>(`${second.http}/v1/recordings?callSid=${res.callSid}`)).body.items;
    t.equal(listed.length, 1, 'listed once');
    const rec = listed[0]!;
    t.equal(rec.recordingId, `${res.streamSid}-0000`);
    const wav = decodeWav(await fetchAudio(second.http, rec.recordingId));
    for (const [c, track] of [[0, 'inbound'], [1, 'outbound']] as const) {
      t.ok(Buffer.from(wav.channel[c]!).equals(trackAudio(31, track, 100)), `${track}: all 2 s, bit-exact`);
    }
    await until(() => rx.ofEvent(`${rec.recordingId}.finished`).length > 0, 'the finished webhook');
    t.equal(oneBody(t, rx, `${rec.recordingId}.finished`).sha256, rec.sha256);
    t.same(await readdir(path.join(env.RECORDINGS_DIR, '.inprogress')), [], 'nothing left in .inprogress');
    t.equal((await globSidecars(env.RECORDINGS_DIR)).length, 1, 'one sidecar on disk');
    await stopClean(t, second);
  });
}

for (const step of ['recovery:audio-renamed', 'recovery:sidecar-written'] as const) {
  t.test(`killed mid-call, then killed again at ${step} while recovering: the third start finishes`, { timeout: 60_000 }, async (t) => {
    const { rx, cwd, env } = await setup(t);
    const first = await startProcess(t, cwd, env);
    const abort = new AbortController();
    const run = runStream({ url: first.ws, tracks: ['inbound'], seed: 32, frames: Infinity, realtime: true, signal: abort.signal });
    // a partial holding at least a second of audio (8000 bytes of mu-law past the header)
    const inprogress = path.join(env.RECORDINGS_DIR, '.inprogress');
    await until(async () => {
      for (const n of await readdir(inprogress)) if (n.endsWith('.wav') && (await stat(path.join(inprogress, n))).size >= 44 + 8000) return true;
      return false;
    }, 'a partial with a second of audio');
    first.child.kill('SIGKILL');
    await first.exited;
    const res = await run;

    const second = await startProcess(t, cwd, { ...env, GATEWAY_TEST_CRASH_AT: step });
    t.equal((await second.exited).signal, 'SIGKILL', `recovery killed at ${step}`);
    const third = await startProcess(t, cwd, env);
    await ready(third);
    const listed = (await getJson<{ items: RecordingSidecar[] }>(`${third.http}/v1/recordings?callSid=${res.callSid}`)).body.items;
    t.equal(listed.length, 1, 'listed once');
    const rec = listed[0]!;
    t.equal(rec.closeReason, 'recovered');
    const wav = decodeWav(await fetchAudio(third.http, rec.recordingId));
    const n = wav.channel[0]!.length / 160;
    t.ok(n > 20, `${n} frames kept`);
    t.ok(Buffer.from(wav.channel[0]!).equals(trackAudio(32, 'inbound', n)), 'a bit-exact prefix of what was sent');
    await until(() => rx.ofEvent(`${rec.recordingId}.finished`).length > 0, 'the finished webhook');
    t.equal(oneBody(t, rx, `${rec.recordingId}.finished`).sha256, rec.sha256);
    t.same(await readdir(path.join(env.RECORDINGS_DIR, '.inprogress')), [], 'nothing left in .inprogress');
    await stopClean(t, third);
  });
}

t.test('killed between the two unlinks of a rule deletion: the next start finishes the deletion', { timeout: 60_000 }, async (t) => {
  const { rx, cwd, env } = await setup(t, { MIN_SESSION_LENGTH_S: '60' });
  const first = await startProcess(t, cwd, { ...env, GATEWAY_TEST_CRASH_AT: 'delete:sidecar-removed' });
  const res = await runStream({ url: first.ws, tracks: ['inbound'], seed: 33, frames: 50, realtime: false });
  t.equal((await first.exited).signal, 'SIGKILL');
  const wavsLeft = async () => (await readdir(env.RECORDINGS_DIR, { recursive: true })).filter((f) => f.endsWith('.wav'));
  t.equal((await wavsLeft()).length, 1, 'the crash left the audio behind');

  const second = await startProcess(t, cwd, env);
  await ready(second);
  await until(async () => (await wavsLeft()).length === 0, 'the deletion finished');
  const id = `${res.streamSid}-0000`;
  await until(() => rx.ofEvent(`${id}.deleted`).length > 0, 'the deleted webhook');
  t.equal(oneBody(t, rx, `${id}.deleted`).deleteReason, 'min_session_length');
  t.equal(rx.ofEvent(`${id}.finished`).length, 0, 'never announced as finished');
  t.same((await getJson<{ items: unknown[] }>(`${second.http}/v1/recordings?callSid=${res.callSid}`)).body.items, []);
  t.same(await readdir(path.join(env.RECORDINGS_DIR, '.inprogress')), []);
  await stopClean(t, second);
});
