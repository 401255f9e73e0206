// The archive pool's slots (archiver.ts): ARCHIVE_CONCURRENCY bounds the ffmpeg processes, and a
// job gives its slot back as soon as its ffmpeg is done, so the next encode runs while the
// finished job's disk work (fsync, rename, sidecar rewrite, webhook, job file) goes on; jobs past
// their ffmpeg are bounded too (as many again). Real WAVs, real ffmpeg, the real durable queue;
// the sidecar rewrite is held back to see who runs meanwhile.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { buildWavHeader } from '../codecs/wav.js';
import { Archiver } from '../recorder/archive/archiver.js';
import type { IndexedRecording } from '../recorder/catalog/catalog.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { until } from './fixtures/calls.js';
import { TONE_HZ, toneTrack } from './fixtures/archive.js';

t.setTimeout(120_000);

function stereoWav(frames: number): Buffer {
  const left = toneTrack(TONE_HZ.inbound, frames);
  const right = toneTrack(TONE_HZ.outbound, frames);
  const data = Buffer.alloc(left.length * 2);
  for (let i = 0; i < left.length; i++) {
    data[2 * i] = left[i]!;
    data[2 * i + 1] = right[i]!;
  }
  return Buffer.concat([buildWavHeader({ encoding: 'mulaw', channels: 2, sampleRate: 8000, dataBytes: data.length }), data]);
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => { resolve = r; });
  return { promise, resolve };
}

t.test('ARCHIVE_CONCURRENCY=1: the next encode runs while a finished job waits on its sidecar; at most one more job waits', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'archive-pool-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const wav = stereoWav(250); // 5 s
  const recs = new Map<string, IndexedRecording>();
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const id = `MZ${randomBytes(16).toString('hex')}-0000`;
    const callDir = path.join(dir, `call${i}`);
    await mkdir(callDir);
    const sidecar = { recordingId: id, accountSid: `AC${'a'.repeat(32)}`, channels: 2, audioFile: `${id}.wav` } as RecordingSidecar;
    await writeFile(path.join(callDir, `${id}.wav`), wav);
    await writeFile(path.join(callDir, `${id}.json`), JSON.stringify(sidecar));
    recs.set(id, { sidecar, sidecarPath: path.join(callDir, `${id}.json`), audioPath: path.join(callDir, `${id}.wav`) });
    ids.push(id);
  }
  const [a, b, c] = ids as [string, string, string];
  const gate = new Map(ids.map((id) => [id, deferred()] as const));
  const rewrites: string[] = [];
  const failures: string[] = [];
  const archiver = new Archiver({
    recordingsDir: dir, nodeId: 'n1', concurrency: 1, keepWav: true,
    formatFor: () => 'opus',
    lookup: async (id) => recs.get(id),
    rewriteSidecar: async (id, change) => {
      rewrites.push(id);
      await gate.get(id)!.promise;
      return change(recs.get(id)!.sidecar);
    },
    onFailed: (id, err) => failures.push(`${id}: ${err.message}`),
    log: pino({ level: 'silent' }),
  });
  t.teardown(() => archiver.stop());
  await archiver.start();
  for (const id of ids) await archiver.published(recs.get(id)!.sidecar);

  // A's ffmpeg is done and A waits on its sidecar: B was encoded meanwhile (the slot came back)
  await until(() => rewrites.length === 2, 'A and B waiting on their sidecar rewrite', 60_000);
  // in either order: after its ffmpeg, A's job fsyncs and renames before the rewrite, which on a
  // loaded disk can take longer than B's whole encode
  t.same([...rewrites].sort(), [a, b].sort(), 'A and B both reached the sidecar rewrite, neither let through');
  t.ok((await stat(path.join(dir, 'call1', `${b}.opus`))).size > 0, "B's archive was made while A's job was still finishing");
  // two jobs past their ffmpeg: C must wait (no ffmpeg, no temporary file of it)
  t.same((await readdir(path.join(dir, 'call2'))).filter((n) => n.includes('.opus')), [], 'C not started while two jobs finish');
  t.equal(archiver.queueLength, 3, 'all three counted in the queue');

  gate.get(a)!.resolve();
  await until(() => rewrites.length === 3, 'C reaching its sidecar rewrite', 60_000);
  t.equal(rewrites[2], c, 'C ran once A was done');
  gate.get(b)!.resolve();
  gate.get(c)!.resolve();
  await until(() => archiver.queueLength === 0, 'the queue drained', 60_000);
  for (const [i, id] of ids.entries()) t.ok((await stat(path.join(dir, `call${i}`, `${id}.opus`))).size > 0, `archive ${i} in place`);
  t.same(await readdir(archiver.queue.dir), [], 'every job file removed');
  t.same(failures, [], 'no failures');
  t.equal(archiver.counters.archived, 3);
});

t.test('a job whose recording the catalog has not imported yet waits for the import instead of being dropped', async (t) => {
  // the gateway starts this pool while the catalog still fills from RECORDINGS_DIR in the
  // background: a lookup miss with the sidecar on disk is "not indexed yet", not "deleted"
  const dir = await mkdtemp(path.join(os.tmpdir(), 'archive-pool-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const id = `MZ${randomBytes(16).toString('hex')}-0000`;
  const callDir = path.join(dir, 'call');
  await mkdir(callDir);
  const sidecar = { recordingId: id, accountSid: `AC${'a'.repeat(32)}`, channels: 2, audioFile: `${id}.wav` } as RecordingSidecar;
  await writeFile(path.join(callDir, `${id}.wav`), stereoWav(50));
  await writeFile(path.join(callDir, `${id}.json`), JSON.stringify(sidecar));
  const rec: IndexedRecording = { sidecar, sidecarPath: path.join(callDir, `${id}.json`), audioPath: path.join(callDir, `${id}.wav`) };
  let indexed = false;
  const imported = deferred();
  let lookups = 0;
  const failures: string[] = [];
  const archiver = new Archiver({
    recordingsDir: dir, nodeId: 'n1', concurrency: 1, keepWav: true,
    formatFor: () => 'opus',
    lookup: async () => { lookups++; return indexed ? rec : undefined; },
    untilIndexed: () => imported.promise,
    rewriteSidecar: async (_id, change) => change(sidecar),
    onFailed: (i, err) => failures.push(`${i}: ${err.message}`),
    log: pino({ level: 'silent' }),
  });
  t.teardown(() => archiver.stop());
  // the job as a previous run left it in the durable queue
  await archiver.queue.add({ recordingId: id, format: 'opus', sidecar: path.relative(dir, rec.sidecarPath), enqueuedAt: new Date().toISOString() });
  t.equal(await archiver.start(), 1, 'one job found at start');
  await until(() => lookups === 1, 'the job looked its recording up', 10_000);
  await new Promise((r) => setTimeout(r, 200));
  t.equal(archiver.queueLength, 1, 'not imported yet: the job waits, still queued');
  t.same(await readdir(archiver.queue.dir), [`${id}.json`], 'its job file kept');
  indexed = true;
  imported.resolve();
  await until(() => archiver.queueLength === 0, 'the job done once imported', 60_000);
  t.ok((await stat(path.join(callDir, `${id}.opus`))).size > 0, 'archived');
  t.equal(archiver.counters.archived, 1);
  t.same(failures, []);
});
