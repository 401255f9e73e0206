// Journal replay (recorder/journal-replay.ts) on real files: a partial WAV as the crash left it
// and a journal written by the real Journal, larger than one read piece (1 MiB) so records are
// split between pieces. Replay must add exactly the frames beyond the partial's end, in place,
// both channels aligned, holes as silence; never touch what the partial already had; ignore a
// record cut by the crash.
import t from 'tap';
import { mkdtemp, mkdir, writeFile, readFile, rm, appendFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Journal, leftoverJournalFiles, type JournalClient, type JournalStream } from '../recorder/journal.js';
import { replayJournal, READ_BYTES } from '../recorder/journal-replay.js';
import { segmentPaths, recordingIdFor } from '../recorder/storage-layout.js';
import { buildWavHeader, parseWavHeader } from '../codecs/wav.js';
import { frameFor } from '../loadtest/audio-fixtures.js';
import { MULAW_TO_PCM16 } from '../codecs/g711.js';

const SID = `MZ${'cd'.repeat(16)}`;
const stream: JournalStream = {
  base: SID, accountSid: `AC${'1'.repeat(32)}`, callSid: `CA${'2'.repeat(32)}`, startedAt: '2026-01-02T03:04:05.000Z',
  channels: 2, encoding: 'mulaw', segmentSamples: 3600 * 8000,
};
const FRAMES = 4000; // both tracks: 8000 records of 172 bytes ≈ 1.3 MiB, more than one read piece
const ON_DISK = 100; // frames the partial held at the crash
const HOLE = 1500; // an outbound frame that never came

t.test('replay adds what the partial lacks, streamed in pieces', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'journal-replay-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const paths = segmentPaths(dir, stream.accountSid, stream.callSid, new Date(stream.startedAt), recordingIdFor(SID, 0));
  await mkdir(path.dirname(paths.partial), { recursive: true });
  const original = Buffer.alloc(ON_DISK * 160 * 2);
  for (let f = 0; f < ON_DISK; f++) {
    for (let i = 0; i < 160; i++) {
      original[(f * 160 + i) * 2] = frameFor(7, 'inbound', f)[i]!;
      original[(f * 160 + i) * 2 + 1] = frameFor(7, 'outbound', f)[i]!;
    }
  }
  await writeFile(paths.partial, Buffer.concat([buildWavHeader({ encoding: 'mulaw', channels: 2, sampleRate: 8000, dataBytes: 0 }), original]));

  const journalDir = path.join(dir, '.journal', 'n1');
  const journal = new Journal({ dir: journalDir, now: () => performance.now() });
  const client: JournalClient = { journalGen: 0, journalNo: 0, journalFront: 0, durableTo: () => 0 };
  journal.register(client, stream);
  for (let f = 0; f < FRAMES; f++) {
    for (const [c, track] of [[0, 'inbound'], [1, 'outbound']] as const) {
      if (c === 1 && f === HOLE) continue;
      // frames the partial already has are journaled with other bytes: replay must not use them
      const payload = f < ON_DISK ? Buffer.alloc(160, 0x11) : frameFor(7, track, f);
      journal.commit(client, c, f * 160, payload, 0, 160, performance.now());
    }
    if (f % 500 === 0) journal.flush();
  }
  await journal.close();
  const files = await leftoverJournalFiles(journalDir);
  t.equal(files.length, 1);
  // the crash cut the last record short
  await appendFile(files[0]!, Buffer.from([1, 0, 160, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9]));
  t.ok((await stat(files[0]!)).size > READ_BYTES, 'the journal is larger than one read piece');

  const r = await replayJournal(dir, files);
  t.equal(r.frames, 2 * (FRAMES - ON_DISK) - 1, 'every frame beyond the partial\'s end was placed');
  t.equal(r.orphanFrames, 0);

  const wav = await readFile(paths.partial);
  const info = parseWavHeader(wav);
  const data = wav.subarray(info.dataOffset);
  t.equal(data.length, FRAMES * 160 * 2, 'the partial now ends with the last journaled frame');
  t.ok(data.subarray(0, original.length).equals(original), 'what the partial had is untouched');
  let bad = 0;
  for (let f = ON_DISK; f < FRAMES; f++) {
    const inb = frameFor(7, 'inbound', f);
    const out = f === HOLE ? Buffer.alloc(160, 0xff) : frameFor(7, 'outbound', f);
    for (let i = 0; i < 160; i++) {
      if (data[(f * 160 + i) * 2] !== inb[i] || data[(f * 160 + i) * 2 + 1] !== out[i]) bad++;
    }
  }
  t.equal(bad, 0, 'both channels sample-exact, the missing outbound frame is silence');
});

t.test('frames of a stream whose partial does not exist are counted, not written anywhere', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'journal-replay-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const journalDir = path.join(dir, '.journal', 'n1');
  const journal = new Journal({ dir: journalDir, now: () => performance.now() });
  const client: JournalClient = { journalGen: 0, journalNo: 0, journalFront: 0, durableTo: () => 0 };
  journal.register(client, stream);
  journal.commit(client, 0, 0, frameFor(1, 'inbound', 0), 0, 160, 0);
  await journal.close();
  const r = await replayJournal(dir, await leftoverJournalFiles(journalDir));
  t.same(r, { files: 1, frames: 0, orphanFrames: 1 });
});

t.test('a rotated journal file is deleted once its streams have the audio in segment files', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'journal-rotate-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  let now = 0;
  let durable = 0;
  const journal = new Journal({ dir, now: () => now });
  const client: JournalClient = { journalGen: 0, journalNo: 0, journalFront: 160, durableTo: () => durable };
  journal.register(client, stream);
  journal.commit(client, 0, 0, frameFor(1, 'inbound', 0), 0, 160, 0);
  now = 1500; // older than JOURNAL_ROTATE_MS: this flush is the file's last write
  journal.flush();
  journal.commit(client, 0, 160, frameFor(1, 'inbound', 1), 0, 160, now);
  journal.flush();
  const until = async (cond: () => Promise<boolean>) => {
    for (let i = 0; i < 200 && !(await cond()); i++) await new Promise((r) => setTimeout(r, 10));
  };
  await until(async () => (await leftoverJournalFiles(dir)).length === 2);
  t.equal((await leftoverJournalFiles(dir)).length, 2, 'rotated: a second file');
  await new Promise((r) => setTimeout(r, 150)); // a few commit ticks
  t.equal((await leftoverJournalFiles(dir)).length, 2, 'kept while the segment file lacks its audio');
  durable = 160;
  await until(async () => (await leftoverJournalFiles(dir)).length === 1);
  t.equal((await leftoverJournalFiles(dir)).length, 1, 'deleted once the audio it holds is in the segment file');
  journal.unregister(client);
  await journal.close();
  t.equal((await leftoverJournalFiles(dir)).length, 0, 'a clean close with every stream published leaves nothing');
});

t.test('a frame across a segment boundary is split between the two partials', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'journal-split-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const s: JournalStream = { ...stream, channels: 1, segmentSamples: 800 };
  const header = buildWavHeader({ encoding: 'mulaw', channels: 1, sampleRate: 8000, dataBytes: 0 });
  const partials = [0, 1].map((k) => segmentPaths(dir, s.accountSid, s.callSid, new Date(s.startedAt), recordingIdFor(SID, k)).partial);
  await mkdir(path.dirname(partials[0]!), { recursive: true });
  for (const p of partials) await writeFile(p, header);
  const journalDir = path.join(dir, '.journal', 'n1');
  const journal = new Journal({ dir: journalDir, now: () => performance.now() });
  const client: JournalClient = { journalGen: 0, journalNo: 0, journalFront: 0, durableTo: () => 0 };
  journal.register(client, s);
  const frame = frameFor(3, 'inbound', 0);
  journal.commit(client, 0, 720, frame, 0, 160, 0); // samples 720..879: 80 in segment 0, 80 in segment 1
  await journal.close();
  const r = await replayJournal(dir, await leftoverJournalFiles(journalDir));
  t.equal(r.frames, 2, 'one piece per segment');
  const [a, b] = await Promise.all(partials.map((p) => readFile(p)));
  const da = a!.subarray(parseWavHeader(a!).dataOffset);
  const db = b!.subarray(parseWavHeader(b!).dataOffset);
  t.equal(da.length, 800, 'segment 0 ends at its boundary');
  t.ok(da.subarray(0, 720).equals(Buffer.alloc(720, 0xff)), 'silence before the frame');
  t.ok(da.subarray(720).equals(frame.subarray(0, 80)), 'the frame\'s first 80 samples end segment 0');
  t.ok(db.equals(frame.subarray(80)), 'its last 80 samples begin segment 1');
});

t.test('a pcm16 partial gets the G.711 decode of the journaled mu-law', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'journal-pcm-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const s: JournalStream = { ...stream, channels: 1, encoding: 'pcm16' };
  const p = segmentPaths(dir, s.accountSid, s.callSid, new Date(s.startedAt), recordingIdFor(SID, 0)).partial;
  await mkdir(path.dirname(p), { recursive: true });
  await writeFile(p, buildWavHeader({ encoding: 'pcm16', channels: 1, sampleRate: 8000, dataBytes: 0 }));
  const journalDir = path.join(dir, '.journal', 'n1');
  const journal = new Journal({ dir: journalDir, now: () => performance.now() });
  const client: JournalClient = { journalGen: 0, journalNo: 0, journalFront: 0, durableTo: () => 0 };
  journal.register(client, s);
  const frame = frameFor(5, 'inbound', 0);
  journal.commit(client, 0, 160, frame, 0, 160, 0); // after 20 ms of nothing
  await journal.close();
  t.same(await replayJournal(dir, await leftoverJournalFiles(journalDir)), { files: 1, frames: 1, orphanFrames: 0 });
  const wav = await readFile(p);
  const data = wav.subarray(parseWavHeader(wav).dataOffset);
  t.equal(data.length, 320 * 2);
  let bad = 0;
  for (let i = 0; i < 160; i++) if (data.readInt16LE(i * 2) !== 0) bad++;
  for (let i = 0; i < 160; i++) if (data.readInt16LE((160 + i) * 2) !== MULAW_TO_PCM16[frame[i]!]) bad++;
  t.equal(bad, 0, 'silence (0) for the hole, then the decoded frame');
});
