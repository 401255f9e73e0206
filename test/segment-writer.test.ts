// The segment writer alone, on real files: gap silence is a count in the queue (no memory, no
// share of the write-queue cap) written in bounded pieces, and the audio after a long gap is
// never dropped for it.
import t from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SegmentWriter, writePhaseBytes } from '../recorder/segment-writer.js';
import { segmentPaths } from '../recorder/storage-layout.js';
import { wavHeaderLength } from '../codecs/wav.js';

t.test('a 10-minute gap is queued as a count, outside the cap, and written whole', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-writer-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const paths = segmentPaths(dir, `AC${'1'.repeat(32)}`, `CA${'2'.repeat(32)}`, new Date(0), `MZ${'3'.repeat(32)}-0000`);
  const dropped: number[] = [];
  const w = new SegmentWriter({
    paths, encoding: 'mulaw', channels: 1, sampleRate: 8000, chunkSamples: 4000, meta: {}, now: () => performance.now(),
    maxQueueBytes: 16 * 1024, onDropped: (b) => dropped.push(b),
  });
  const audio = Buffer.alloc(8000);
  for (let i = 0; i < audio.length; i++) audio[i] = (i * 13) & 0x7f;
  const blank = Buffer.alloc(8000, 0xff);
  w.append([audio], 0, 8000, false, performance.now());
  for (let s = 0; s < 600; s++) w.append([blank], 0, 8000, true, NaN); // 600 s of gap, one region a second
  w.append([audio], 0, 8000, false, performance.now());
  t.equal(w.queuedBytes, 16000, 'only the two seconds of audio count as queued');
  t.ok((w as unknown as { queue: unknown[] }).queue.length <= 3, 'the gap is one queue entry, not one per region');
  t.same(dropped, [], 'no audio dropped for the gap');
  const result = await w.finalize();
  t.equal(result.writeError, null);
  const file = await readFile(paths.audio);
  const data = file.subarray(wavHeaderLength('mulaw'));
  t.equal(data.length, 602 * 8000);
  t.ok(data.subarray(0, 8000).equals(audio), 'audio before the gap');
  t.ok(data.subarray(8000, 601 * 8000).every((b) => b === 0xff), 'the gap is mu-law silence');
  t.ok(data.subarray(601 * 8000).equals(audio), 'audio after the gap, not dropped');
});

t.test('with batchBytes the file is written once a batch is queued, and finalize writes the rest', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-writer-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const paths = segmentPaths(dir, `AC${'1'.repeat(32)}`, `CA${'2'.repeat(32)}`, new Date(0), `MZ${'4'.repeat(32)}-0000`);
  const w = new SegmentWriter({
    paths, encoding: 'mulaw', channels: 1, sampleRate: 8000, chunkSamples: 4000, meta: {}, now: () => performance.now(),
    batchBytes: 12000,
  });
  const chunk = (k: number) => Buffer.alloc(4000, k);
  w.append([chunk(1)], 0, 4000, false, performance.now());
  w.append([chunk(2)], 0, 4000, false, performance.now());
  await new Promise((r) => setTimeout(r, 50));
  t.equal(w.writtenBytes, 0, 'below the batch: nothing written yet');
  w.append([chunk(3)], 0, 4000, false, performance.now());
  for (let i = 0; i < 100 && w.writtenBytes < 12000; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(w.writtenBytes, 12000, 'a full batch goes out in one write');
  w.append([chunk(4)], 0, 4000, false, performance.now());
  await w.finalize();
  const data = (await readFile(paths.audio)).subarray(wavHeaderLength('mulaw'));
  t.ok(data.equals(Buffer.concat([1, 2, 3, 4].map(chunk))), 'finalize wrote the part batch: all audio, in order');
});

t.test('writePhaseBytes: consecutive streams get first batches of 1..N chunks in turn', async (t) => {
  // 2 s stereo mu-law batch (32 000 bytes) of 500 ms chunks (8 000 bytes): 4 phases
  t.same([0, 1, 2, 3, 4, 5, 6, 7].map((n) => writePhaseBytes(n, 32000, 8000)), [8000, 16000, 24000, 32000, 8000, 16000, 24000, 32000]);
  t.equal(writePhaseBytes(0, 0, 8000), 8000, 'no batching: one chunk (the writer caps it at batchBytes = 0)');
  t.equal(writePhaseBytes(3, 4000, 8000), 8000, 'a batch smaller than a chunk: one phase');
  t.equal(writePhaseBytes(-1, 32000, 8000), 32000, 'a negative number still lands in a phase');
});

t.test('firstBatchBytes: writers of one burst write in different ticks, then every full batch', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-writer-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const chunk = 4000; // one emission of a mono stream
  const batch = 4 * chunk;
  const writers = [0, 1, 2, 3].map((n) => new SegmentWriter({
    paths: segmentPaths(dir, `AC${'1'.repeat(32)}`, `CA${'2'.repeat(32)}`, new Date(0), `MZ${String(n).repeat(32)}-0000`),
    encoding: 'mulaw', channels: 1, sampleRate: 8000, chunkSamples: chunk, meta: {}, now: () => performance.now(),
    batchBytes: batch, firstBatchBytes: writePhaseBytes(n, batch, chunk),
  }));
  const settle = async (w: SegmentWriter, bytes: number) => {
    for (let i = 0; i < 200 && w.writtenBytes < bytes; i++) await new Promise((r) => setTimeout(r, 5));
  };
  // every writer gets the same emissions at the same moments (streams that started together)
  const firstWriteAt: number[] = [-1, -1, -1, -1];
  for (let e = 1; e <= 8; e++) {
    for (const w of writers) w.append([Buffer.alloc(chunk, e)], 0, chunk, false, performance.now());
    // writer n: n + 1 chunks at emission n + 1, then a full batch (4) every 4th emission
    const due = (n: number) => (e < n + 1 ? 0 : n + 1 + 4 * Math.floor((e - n - 1) / 4)) * chunk;
    await Promise.all(writers.map((w, n) => settle(w, due(n))));
    writers.forEach((w, n) => { if (firstWriteAt[n] === -1 && w.writtenBytes > 0) firstWriteAt[n] = e; });
  }
  t.same(firstWriteAt, [1, 2, 3, 4], 'first writes after 1, 2, 3 and 4 emissions: four different ticks');
  // after its first write each writer waits for a full batch again (writer 0 has 3 chunks queued)
  t.same(writers.map((w) => w.writtenBytes / chunk), [5, 6, 7, 8], 'first batch, then one full batch each');
  t.same(writers.map((w) => w.queuedBytes / chunk), [3, 2, 1, 0], 'the rest waits for the next full batch');
  for (const [n, w] of writers.entries()) {
    await w.finalize();
    const data = (await readFile(segmentPaths(dir, `AC${'1'.repeat(32)}`, `CA${'2'.repeat(32)}`, new Date(0), `MZ${String(n).repeat(32)}-0000`).audio)).subarray(wavHeaderLength('mulaw'));
    t.ok(data.equals(Buffer.concat([1, 2, 3, 4, 5, 6, 7, 8].map((k) => Buffer.alloc(chunk, k)))), `writer ${n}: all audio, in order`);
  }
});

t.test('stereo mu-law is interleaved L R L R, word-wise and for an odd tail, from any plane offset', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-writer-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const paths = segmentPaths(dir, `AC${'1'.repeat(32)}`, `CA${'2'.repeat(32)}`, new Date(0), `MZ${'5'.repeat(32)}-0000`);
  const w = new SegmentWriter({
    paths, encoding: 'mulaw', channels: 2, sampleRate: 8000, chunkSamples: 4000, meta: {}, now: () => performance.now(),
  });
  const l = Buffer.alloc(5000);
  const r = Buffer.alloc(5000);
  for (let i = 0; i < l.length; i++) {
    l[i] = (i * 7 + 3) & 0xff; // every byte value, high bits included (the word store's sign bit)
    r[i] = (i * 11 + 200) & 0xff;
  }
  const want: number[] = [];
  for (const [offset, n] of [[3, 4001], [0, 4000], [1, 1], [10, 2]] as const) {
    w.append([l, r], offset, n, false, performance.now());
    for (let i = 0; i < n; i++) want.push(l[offset + i]!, r[offset + i]!);
  }
  await w.finalize();
  const data = (await readFile(paths.audio)).subarray(wavHeaderLength('mulaw'), wavHeaderLength('mulaw') + want.length);
  t.ok(data.equals(Buffer.from(want)), 'every sample pair in place');
});
