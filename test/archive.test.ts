// Compressed archives (contract section 10) end to end: real calls through a real gateway, each
// archive decoded by ffprobe/ffmpeg (independent of the gateway's code) and compared with what
// the call carried; playback of the archive and from it; the webhook; the metrics; failures.
import t from 'tap';
import http from 'node:http';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MULAW_TO_PCM16 } from '../codecs/g711.js';
import { parseWavHeader } from '../codecs/wav.js';
import { loadConfig } from '../gateway/config.js';
import { buildGateway } from '../gateway/server.js';
import { SqliteCatalog } from '../recorder/catalog/sqlite-catalog.js';
import { importSidecars } from '../recorder/catalog/importer.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { audioPathOnDisk, readSidecarFromDisk, startTestGateway, waitForRecordings } from './fixtures/harness.js';
import { post, until } from './fixtures/calls.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ffmpegDecode, ffprobe, TONE_HZ, toneCall, toneSeparationDb } from './fixtures/archive.js';

const FRAMES = 250; // 5 s
// every archive is encoded, decoded and re-decoded by ffmpeg: more than tap's default 30 s per file
t.setTimeout(300_000);
const WEBHOOK_SECRET = 'webhook-secret-for-archive-tests';
const run = promisify(execFile);

/** A webhook receiver that keeps every body (always 204). */
async function receiver(t: Tap): Promise<{ url: string; got: Record<string, any>[] }> {
  const got: Record<string, any>[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => { got.push(JSON.parse(Buffer.concat(chunks).toString('utf8'))); res.writeHead(204).end(); });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => { server.closeAllConnections(); return new Promise((r) => server.close(r)); });
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`, got };
}
type Tap = { teardown(fn: () => unknown): void };

async function metric(httpBase: string, name: string): Promise<number> {
  const text = await (await fetch(`${httpBase}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`metric ${name} not found`);
  return Number(m[1]);
}

async function waitForArchive(httpBase: string, id: string): Promise<RecordingSidecar> {
  return until(async () => {
    const s = (await (await fetch(`${httpBase}/v1/recordings/${id}`)).json()) as RecordingSidecar;
    return s.archive ? s : null;
  }, `the archive of ${id}`, 60_000);
}

const pcmOf = (mulaw: Buffer) => Int16Array.from(mulaw, (b) => MULAW_TO_PCM16[b]!);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const EXPECT = {
  opus: { codec: 'opus', container: 'ogg', contentType: 'audio/ogg; codecs=opus' },
  flac: { codec: 'flac', container: 'flac', contentType: 'audio/flac' },
  mp3: { codec: 'mp3', container: 'mp3', contentType: 'audio/mpeg' },
} as const;

for (const format of ['opus', 'flac', 'mp3'] as const) {
  t.test(`ARCHIVE_FORMAT=${format}: a verified ${format} archive beside the WAV, in the sidecar, announced, served with Range`, async (t) => {
    const hook = await receiver(t);
    const g = await startTestGateway(t, { ARCHIVE_FORMAT: format, RECORDING_WEBHOOK_URL: hook.url, RECORDING_WEBHOOK_SECRET: WEBHOOK_SECRET });
    const call = await toneCall(g.wsUrl, FRAMES);
    const [published] = await waitForRecordings(g.http, call.callSid, 1);
    const s = await waitForArchive(g.http, published.recordingId);
    const wavPath = audioPathOnDisk(g.dir, s);
    const archivePath = path.join(path.dirname(wavPath), `${s.recordingId}.${format}`);

    // the sidecar on disk says the same as the API
    t.same(await readSidecarFromDisk(g.dir, s), s);
    const file = await readFile(archivePath);
    t.match(s.archive, { format, file: `${s.recordingId}.${format}`, bytes: file.length, sha256: sha256(file), wavKept: true });
    t.ok(Math.abs(s.archive!.durationMs - s.durationMs) <= 20, `archive ${s.archive!.durationMs} ms vs WAV ${s.durationMs} ms`);
    const wav = await readFile(wavPath);
    t.equal(sha256(wav), s.sha256, 'the WAV is kept, unchanged');

    // ffprobe / ffmpeg decode of the archive
    const probe = await ffprobe(archivePath);
    t.match(probe, { codec: EXPECT[format].codec, channels: 2 });
    t.match(probe.container, EXPECT[format].container);
    const [left, right] = await ffmpegDecode(archivePath);
    const info = parseWavHeader(wav);
    const wavFrames = info.dataBytes / info.blockAlign;
    t.equal(wavFrames, FRAMES * 160);
    t.ok(Math.abs(left!.length - wavFrames) <= 160, `decoded ${left!.length} frames vs ${wavFrames} in the WAV (within 20 ms)`);
    if (format === 'flac') {
      t.same(left, pcmOf(call.inbound), 'FLAC left: sample-exact PCM decode of the stored mu-law (caller)');
      t.same(right, pcmOf(call.outbound), 'FLAC right: sample-exact PCM decode of the stored mu-law (agent)');
    } else {
      const l = toneSeparationDb(left!, TONE_HZ.inbound, TONE_HZ.outbound);
      const r = toneSeparationDb(right!, TONE_HZ.outbound, TONE_HZ.inbound);
      t.ok(l > 30, `left carries the caller's ${TONE_HZ.inbound} Hz, not the agent's (${l.toFixed(1)} dB)`);
      t.ok(r > 30, `right carries the agent's ${TONE_HZ.outbound} Hz, not the caller's (${r.toFixed(1)} dB)`);
    }

    // playback: the stored archive, whole and by Range
    const url = `${g.http}/v1/recordings/${s.recordingId}/audio?format=${format}`;
    const whole = await fetch(url);
    t.equal(whole.status, 200);
    t.equal(whole.headers.get('content-type'), EXPECT[format].contentType);
    t.equal(whole.headers.get('etag'), `"${s.archive!.sha256}"`);
    t.ok(Buffer.from(await whole.arrayBuffer()).equals(file), 'the stored archive, byte for byte');
    const mid = Math.floor(file.length / 2);
    const part = await fetch(url, { headers: { range: `bytes=${mid}-${mid + 99}` } });
    t.equal(part.status, 206);
    t.equal(part.headers.get('content-range'), `bytes ${mid}-${mid + 99}/${file.length}`);
    t.ok(Buffer.from(await part.arrayBuffer()).equals(file.subarray(mid, mid + 100)));

    // the webhook: finished, then archived, each with its own eventId
    const archived = await until(() => hook.got.find((e) => e.event === 'archived'), 'the archived webhook');
    t.equal(archived.eventId, `${s.recordingId}.archived`);
    t.same(archived.archive, s.archive);
    t.ok(hook.got.some((e) => e.eventId === `${s.recordingId}.finished`));

    // metrics
    t.equal(await metric(g.http, 'gateway_archive_queue_length'), 0);
    t.equal(await metric(g.http, 'gateway_archive_recordings_total'), 1);
    t.ok(Math.abs((await metric(g.http, 'gateway_archive_audio_seconds_total')) - 5) <= 0.02, 'seconds of audio archived');
    t.equal(await metric(g.http, 'gateway_archive_failures_total'), 0);
    t.same(await readdir(path.join(g.dir, '.archive-queue', g.gw.config.nodeId)), [], 'the job is done and gone');
    t.same((await readdir(path.dirname(wavPath))).sort(), [`${s.recordingId}.${format}`, `${s.recordingId}.json`, `${s.recordingId}.wav`].sort(), 'no temporary left');
  });
}

t.test('on the fly: a format that is not stored is converted (stream), and bad formats are refused', async (t) => {
  const g = await startTestGateway(t, { ARCHIVE_FORMAT: 'flac' });
  const call = await toneCall(g.wsUrl, FRAMES);
  const [p] = await waitForRecordings(g.http, call.callSid, 1);
  await waitForArchive(g.http, p.recordingId);
  for (const format of ['opus', 'mp3'] as const) {
    const res = await fetch(`${g.http}/v1/recordings/${p.recordingId}/audio?format=${format}`);
    t.equal(res.status, 200);
    t.equal(res.headers.get('content-type'), EXPECT[format].contentType);
    t.equal(res.headers.get('accept-ranges'), 'none');
    const [left, right] = await ffmpegDecode(Buffer.from(await res.arrayBuffer()));
    // a streamed MP3 has no gapless header: its encoder delay (< 200 ms) stays in
    t.ok(Math.abs(left!.length - FRAMES * 160) <= (format === 'mp3' ? 1600 : 160), `${format}: ${left!.length} frames`);
    t.ok(toneSeparationDb(left!, TONE_HZ.inbound, TONE_HZ.outbound) > 30, `${format}: caller on the left`);
    t.ok(toneSeparationDb(right!, TONE_HZ.outbound, TONE_HZ.inbound) > 30, `${format}: agent on the right`);
  }
  const bad = await fetch(`${g.http}/v1/recordings/${p.recordingId}/audio?format=ogg`);
  t.equal(bad.status, 400);
  t.match(await bad.json(), { error: 'bad_request', message: /format "ogg" is not supported/ });
});

t.test('ARCHIVE_KEEP_WAV=false: the WAV goes only after a verified archive; playback and the contact come from the archive', async (t) => {
  const g = await startTestGateway(t, { ARCHIVE_FORMAT: 'flac', ARCHIVE_KEEP_WAV: 'false' });
  const call = await toneCall(g.wsUrl, FRAMES, { ctiSessionId: 'ARCH-CONTACT-1' });
  const [p] = await waitForRecordings(g.http, call.callSid, 1);
  const s = await waitForArchive(g.http, p.recordingId);
  t.equal(s.archive!.wavKept, false);
  const wavPath = audioPathOnDisk(g.dir, s);
  const dir = path.dirname(wavPath);
  await until(async () => !(await readdir(dir)).includes(`${s.recordingId}.wav`), 'the WAV to be removed');
  t.same((await readdir(dir)).sort(), [`${s.recordingId}.flac`, `${s.recordingId}.json`]);

  // the stored form (mu-law WAV) rebuilt from the archive: same layout, same samples
  const res = await fetch(`${g.http}/v1/recordings/${s.recordingId}/audio`);
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'audio/wav');
  const body = Buffer.from(await res.arrayBuffer());
  t.equal(Number(res.headers.get('content-length')), body.length);
  const info = parseWavHeader(body);
  t.match(info, { encoding: 'mulaw', channels: 2, sampleRate: 8000, dataBytes: FRAMES * 320 });
  const data = body.subarray(info.dataOffset);
  const l = Int16Array.from({ length: FRAMES * 160 }, (_, i) => MULAW_TO_PCM16[data[2 * i]!]!);
  const r = Int16Array.from({ length: FRAMES * 160 }, (_, i) => MULAW_TO_PCM16[data[2 * i + 1]!]!);
  t.same(l, pcmOf(call.inbound), 'left: the caller, sample for sample');
  t.same(r, pcmOf(call.outbound), 'right: the agent, sample for sample');

  const pcm = await fetch(`${g.http}/v1/recordings/${s.recordingId}/audio?format=pcm16`);
  const pcmBody = Buffer.from(await pcm.arrayBuffer());
  const pinfo = parseWavHeader(pcmBody);
  t.match(pinfo, { encoding: 'pcm16', channels: 2, dataBytes: FRAMES * 640 });
  t.equal(pcmBody.readInt16LE(pinfo.dataOffset + 4 * 1000), pcmOf(call.inbound)[1000]);
  // Range over the rebuilt WAV is the same slice of the whole
  const ranged = await fetch(`${g.http}/v1/recordings/${s.recordingId}/audio?format=pcm16`, { headers: { range: 'bytes=30-5029' } });
  t.equal(ranged.status, 206);
  t.ok(Buffer.from(await ranged.arrayBuffer()).equals(pcmBody.subarray(30, 5030)), 'Range: the same bytes as the whole');
  const mulawRange = await fetch(`${g.http}/v1/recordings/${s.recordingId}/audio?format=mulaw`, { headers: { range: `bytes=${body.length - 10}-` } });
  t.equal(mulawRange.status, 206);
  t.ok(Buffer.from(await mulawRange.arrayBuffer()).equals(body.subarray(body.length - 10)));

  // the archive itself, and another compressed form made from it
  t.equal((await fetch(`${g.http}/v1/recordings/${s.recordingId}/audio?format=flac`)).status, 200);
  const opus = await fetch(`${g.http}/v1/recordings/${s.recordingId}/audio?format=opus`);
  const [ol, or] = await ffmpegDecode(Buffer.from(await opus.arrayBuffer()));
  t.ok(toneSeparationDb(ol!, TONE_HZ.inbound, TONE_HZ.outbound) > 30 && toneSeparationDb(or!, TONE_HZ.outbound, TONE_HZ.inbound) > 30, 'opus made from the archive keeps the channels');

  // the whole contact, from the archive, in PCM and in a compressed form
  const contact = await fetch(`${g.http}/v1/cti-sessions/ARCH-CONTACT-1/audio`);
  t.equal(contact.status, 200);
  const cbody = Buffer.from(await contact.arrayBuffer());
  const cinfo = parseWavHeader(cbody);
  t.equal(cinfo.dataBytes, FRAMES * 640);
  t.equal(cbody.readInt16LE(cinfo.dataOffset + 4 * 777 + 2), pcmOf(call.outbound)[777], 'the contact mix holds the leg decoded from its archive');
  t.notOk((await readdir(dir)).some((n) => n.endsWith('.playback-tmp')), 'the temporary decode is gone');
  const cOpus = await fetch(`${g.http}/v1/cti-sessions/ARCH-CONTACT-1/audio?format=opus`);
  t.equal(cOpus.headers.get('content-type'), 'audio/ogg; codecs=opus');
  const [cl, cr] = await ffmpegDecode(Buffer.from(await cOpus.arrayBuffer()));
  t.ok(Math.abs(cl!.length - FRAMES * 160) <= 160);
  t.ok(toneSeparationDb(cl!, TONE_HZ.inbound, TONE_HZ.outbound) > 30 && toneSeparationDb(cr!, TONE_HZ.outbound, TONE_HZ.inbound) > 30, 'contact as opus: caller left, agent right');
  t.equal((await fetch(`${g.http}/v1/cti-sessions/ARCH-CONTACT-1/audio?format=aac`)).status, 400);

  // a restart indexes the recording from its archive alone
  const againDir = await mkdtemp(path.join(os.tmpdir(), 'gw-archive-catalog-'));
  const again = new SqliteCatalog(g.dir, path.join(againDir, 'catalog.sqlite'));
  await again.open();
  t.equal((await importSidecars({ catalog: again, recordingsDir: g.dir })).imported, 1);
  await again.close();
  await rm(againDir, { recursive: true, force: true });

  // a rule deleting the call after publication deletes the archive too
  const del = await post(`${g.http}/v1/cti/events`, { type: 'not_responding', callSid: call.callSid });
  t.equal(del.status, 200);
  t.same(await readdir(dir), [], 'no audio of a deleted recording is left');
});

t.test('a rule deletion the disk refuses, retried after a restart, removes the archive too', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-archive-del-'));
  const env = { PORT: '0', HOST: '127.0.0.1', RECORDINGS_DIR: dir, LOG_LEVEL: 'silent', ARCHIVE_FORMAT: 'flac' };
  const first = await buildGateway(loadConfig(env));
  const port = await first.listen();
  const base = `http://127.0.0.1:${port}`;
  const call = await toneCall(`ws://127.0.0.1:${port}/twilio/v1`, 50);
  const [p] = await waitForRecordings(base, call.callSid, 1);
  const s = await waitForArchive(base, p.recordingId);
  const wavPath = audioPathOnDisk(dir, s);
  const sidecarFile = wavPath.replace(/\.wav$/, '.json');
  const recDir = path.dirname(wavPath);
  // an immutable sidecar cannot be unlinked (even by root): the deletion fails as on a bad disk
  await run('chattr', ['+i', sidecarFile]);
  t.teardown(async () => {
    await run('chattr', ['-i', sidecarFile]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });
  t.equal((await post(`${base}/v1/cti/events`, { type: 'not_responding', callSid: call.callSid })).status, 200);
  await until(() => first.alarms.count('delete_failed') > 0, 'the delete_failed alarm');
  await first.close();

  const second = await buildGateway(loadConfig(env));
  t.teardown(() => second.close());
  await second.listen();
  t.same((await readdir(recDir)).sort(), [`${s.recordingId}.flac`, `${s.recordingId}.json`, `${s.recordingId}.wav`], 'the deletion is still pending');
  await run('chattr', ['-i', sidecarFile]); // the disk recovers: the restart's retry goes through
  await until(async () => (await readdir(recDir)).length === 0, 'the retried deletion', 30_000);
  // the record goes last (files, then the `deleted` event, then the record): wait for it too
  await until(async () => (await readdir(path.join(dir, '.deletions'))).length === 0, 'the deletion record removed', 10_000);
  t.same(await readdir(path.join(dir, '.deletions')), [], 'no deletion left pending');
});

t.test('an archive rewrite and a CTI re-attribution at the same time: the sidecar keeps both', async (t) => {
  const g = await startTestGateway(t);
  const call = await toneCall(g.wsUrl, 25);
  const [p] = await waitForRecordings(g.http, call.callSid, 1);
  for (let i = 0; i < 20; i++) {
    // both paths read-modify-write the same sidecar: one per-recording lock orders them
    const archive = { format: 'flac' as const, file: `${p.recordingId}.flac`, bytes: i, sha256: 'x'.repeat(64), durationMs: 500, wavKept: true };
    const [, ev] = await Promise.all([
      g.gw.control.outcomes.rewriteSidecar(p.recordingId, (cur) => ({ ...cur, archive })),
      post(`${g.http}/v1/cti/events`, { type: 'transfer', callSid: call.callSid, employeeId: `E-${i}` }),
    ]);
    t.equal(ev.status, 200);
    const want = { employeeId: `E-${i}`, archive: { bytes: i } };
    t.match(await readSidecarFromDisk(g.dir, p), want, `round ${i}: the sidecar on disk has both`);
    t.match(await (await fetch(`${g.http}/v1/recordings/${p.recordingId}`)).json(), want, `round ${i}: the index too`);
  }
});

t.test('a job that cannot be made raises archive_failed, keeps the WAV and the job for the next start', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-archive-fail-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = { PORT: '0', HOST: '127.0.0.1', RECORDINGS_DIR: dir, LOG_LEVEL: 'silent', NODE_ID: 'arch-node' };
  // first without archiving: a recording, then its WAV is damaged and a job queued by hand
  const first = await buildGateway(loadConfig(env));
  const port = await first.listen();
  const call = await toneCall(`ws://127.0.0.1:${port}/twilio/v1`, 50);
  const [s] = await waitForRecordings(`http://127.0.0.1:${port}`, call.callSid, 1);
  await first.close();
  const wavPath = audioPathOnDisk(dir, s);
  await writeFile(wavPath, Buffer.from('not a wav file at all, not even close'));
  const queueDir = path.join(dir, '.archive-queue', 'arch-node');
  await mkdir(queueDir, { recursive: true });
  const job = { recordingId: s.recordingId, format: 'opus', sidecar: path.relative(dir, wavPath.replace(/\.wav$/, '.json')), enqueuedAt: new Date().toISOString() };
  await writeFile(path.join(queueDir, `${s.recordingId}.json`), JSON.stringify(job));

  const second = await buildGateway(loadConfig({ ...env, ARCHIVE_FORMAT: 'opus' }));
  t.teardown(() => second.close());
  const port2 = await second.listen();
  await until(() => second.alarms.count('archive_failed') > 0, 'the archive_failed alarm');
  const alarm = second.alarms.recent().find((a) => a.kind === 'archive_failed')!;
  t.equal(alarm.recordingId, s.recordingId);
  t.match(alarm.message, /could not be made/);
  t.equal(await metric(`http://127.0.0.1:${port2}`, 'gateway_archive_failures_total'), 1);
  t.equal(await metric(`http://127.0.0.1:${port2}`, 'gateway_archive_queue_length'), 0);
  t.same(await readdir(queueDir), [`${s.recordingId}.json`], 'the job stays for the next start');
  t.same((await readdir(path.dirname(wavPath))).sort(), [`${s.recordingId}.json`, `${s.recordingId}.wav`], 'no archive, no temporary');
  t.notOk((await readSidecarFromDisk(dir, s)).archive);
});

t.test('ARCHIVE_FORMAT per data source: only that account is archived', async (t) => {
  const SID_A = `AC${'a'.repeat(32)}`;
  const SID_B = `AC${'b'.repeat(32)}`;
  const cfgDir = await mkdtemp(path.join(os.tmpdir(), 'gw-archive-cfg-'));
  t.teardown(() => rm(cfgDir, { recursive: true, force: true }));
  const cfg = path.join(cfgDir, 'gw.json');
  await writeFile(cfg, JSON.stringify({ dataSources: [{ TWILIO_ACCOUNT_SID: SID_A, ARCHIVE_FORMAT: 'mp3' }, { TWILIO_ACCOUNT_SID: SID_B }] }));
  const g = await startTestGateway(t, { GATEWAY_CONFIG: cfg });
  const { TwilioStreamClient } = await import('../loadtest/twilio-stream-client.js');
  const { randomSid } = await import('../loadtest/sids.js');
  const { frameFor } = await import('../loadtest/audio-fixtures.js');
  const callOf = async (accountSid: string) => {
    const callSid = randomSid('CA');
    const c = await TwilioStreamClient.connect(g.wsUrl, { callSid, accountSid });
    c.sendConnected();
    c.sendStart({ tracks: ['inbound'], callSid });
    for (let f = 0; f < 50; f++) c.sendMedia('inbound', frameFor(1, 'inbound', f), f * 20);
    c.sendStop();
    await c.closed;
    return (await waitForRecordings(g.http, callSid, 1))[0];
  };
  const a = await callOf(SID_A);
  const b = await callOf(SID_B);
  const sa = await waitForArchive(g.http, a.recordingId);
  t.equal(sa.archive!.format, 'mp3');
  t.match(await ffprobe(path.join(path.dirname(audioPathOnDisk(g.dir, sa)), sa.archive!.file)), { codec: 'mp3', channels: 1 });
  await until(async () => (await metric(g.http, 'gateway_archive_queue_length')) === 0, 'an empty queue');
  const sb = (await (await fetch(`${g.http}/v1/recordings/${b.recordingId}`)).json()) as RecordingSidecar;
  t.notOk(sb.archive, 'the other account (ARCHIVE_FORMAT none by default) has no archive');
  t.notOk((await readdir(path.dirname(audioPathOnDisk(g.dir, sb)))).some((n) => /\.(opus|flac|mp3)$/.test(n)));
});
