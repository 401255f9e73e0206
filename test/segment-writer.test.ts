// The segment writer alone, on real files: gap silence is a count in the queue (no memory, no
// share of the write-queue cap) written in bounded pieces, and the audio after a long gap is
// never dropped for it.
import t from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SegmentWriter } from '../recorder/segment-writer.js';
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
