// The jitter window on its own: frames in, interleaved samples out, compared byte by byte.
import t from 'tap';
import { Timeline, type RegionCoverage, type TimelineSink } from '../recorder/timeline.js';

interface Region { from: number; samples: number; covered: number[]; first: number[]; lastEnd: number[]; arrival: number }

class Collector implements TimelineSink {
  out: number[] = [];
  regions: Region[] = [];
  emit(planes: readonly Buffer[], offset: number, samples: number, from: number, cov: RegionCoverage): void {
    for (let i = 0; i < samples; i++) for (const p of planes) this.out.push(p[offset + i]!);
    this.regions.push({
      from, samples, covered: [...cov.covered], first: [...cov.firstCovered], lastEnd: [...cov.lastCoveredEnd], arrival: cov.oldestArrival,
    });
  }
}

const frame = (value: number, n = 160) => Buffer.alloc(n, value);

function make(channels: 1 | 2, windowSamples = 800, chunkSamples = 160, boundarySamples = 8000) {
  const sink = new Collector();
  const tl = new Timeline({ channels, windowSamples, chunkSamples, boundarySamples }, sink);
  return { sink, tl };
}

t.test('in-order mono frames come out unchanged and contiguous', async (t) => {
  const { sink, tl } = make(1);
  for (let i = 0; i < 20; i++) t.equal(tl.place(0, i * 160, frame(i + 1), 160, i), 'placed');
  tl.flushAll();
  t.equal(sink.out.length, 20 * 160);
  for (let i = 0; i < 20; i++) t.equal(sink.out[i * 160 + 77], i + 1, `frame ${i} in place`);
  let next = 0;
  for (const r of sink.regions) {
    t.equal(r.from, next, 'regions are contiguous');
    next += r.samples;
  }
  const covered = sink.regions.reduce((a, r) => a + r.covered[0]!, 0);
  t.equal(covered, 3200, 'every sample counted as covered');
});

t.test('a gap becomes mu-law silence of exactly the missing length', async (t) => {
  const { sink, tl } = make(1);
  tl.place(0, 0, frame(1), 160, 0);
  tl.place(0, 5 * 160, frame(2), 160, 1); // frames 1..4 missing
  tl.flushAll();
  t.equal(sink.out.length, 6 * 160);
  t.same(sink.out.slice(160, 800), new Array(640).fill(0xff));
  t.equal(sink.out[800], 2);
  const covered = sink.regions.reduce((a, r) => a + r.covered[0]!, 0);
  t.equal(covered, 320);
});

t.test('duplicates are dropped and do not overwrite', async (t) => {
  const { sink, tl } = make(1);
  t.equal(tl.place(0, 0, frame(1), 160, 0), 'placed');
  t.equal(tl.place(0, 0, frame(9), 160, 0), 'duplicate');
  t.equal(tl.place(0, 160, frame(2), 160, 0), 'placed');
  t.equal(tl.place(0, 160, frame(9), 160, 0), 'duplicate');
  tl.flushAll();
  t.same(sink.out, [...frame(1), ...frame(2)]);
});

t.test('a late frame inside the window is put in place; one behind it is too late', async (t) => {
  const { sink, tl } = make(1, 800, 160);
  tl.place(0, 0, frame(1), 160, 0);
  tl.place(0, 320, frame(3), 160, 0);
  t.equal(tl.place(0, 160, frame(2), 160, 0), 'late', 'out of order but in the window');
  // push the window far ahead: 0..? emitted
  tl.place(0, 3200, frame(7), 160, 0);
  t.ok(tl.flushed >= 2400, 'window moved on');
  t.equal(tl.place(0, 480, frame(4), 160, 0), 'too_late');
  tl.flushAll();
  t.same(sink.out.slice(0, 480), [...frame(1), ...frame(2), ...frame(3)]);
  t.same(sink.out.slice(480, 640), new Array(160).fill(0xff), 'the too-late frame never reached the output');
  t.equal(sink.out[3200], 7);
});

t.test('stereo: channels are interleaved sample by sample and aligned by position', async (t) => {
  const { sink, tl } = make(2);
  tl.place(0, 0, frame(10), 160, 0);
  tl.place(1, 160, frame(20), 160, 0); // outbound starts one frame later
  tl.place(0, 160, frame(11), 160, 0);
  tl.flushAll();
  t.equal(sink.out.length, 2 * 320);
  for (let i = 0; i < 160; i++) {
    t.equal(sink.out[2 * i], 10);
    t.equal(sink.out[2 * i + 1], 0xff, 'outbound silent before its first frame');
  }
  for (let i = 160; i < 320; i++) {
    t.equal(sink.out[2 * i], 11);
    t.equal(sink.out[2 * i + 1], 20);
  }
});

t.test('regions never cross a boundary (segment rotation)', async (t) => {
  const { sink, tl } = make(1, 800, 160, 1600);
  for (let i = 0; i < 25; i++) tl.place(0, i * 160, frame(i + 1), 160, 0);
  tl.flushAll();
  for (const r of sink.regions) {
    t.equal(Math.floor(r.from / 1600), Math.floor((r.from + r.samples - 1) / 1600), `region ${r.from}+${r.samples} in one segment`);
  }
  t.equal(sink.out.length, 25 * 160);
});

t.test('odd-sized frames and a frame straddling the emitted edge', async (t) => {
  const { sink, tl } = make(1, 800, 160);
  t.equal(tl.place(0, 0, frame(1, 161), 161, 0), 'placed', '161 samples accepted');
  t.equal(tl.place(0, 160, frame(2), 160, 0), 'placed', 'next aligned frame overwrites the extra sample');
  tl.place(0, 2000, frame(3), 160, 0); // flushed moves to >= 1360
  const edge = tl.flushed;
  t.equal(tl.place(0, edge - 80, frame(4), 160, 0), 'late', 'the part after the edge is kept');
  tl.flushAll();
  t.equal(sink.out[159], 1);
  t.equal(sink.out[160], 2);
  t.equal(sink.out[edge - 1], 0xff, 'before the edge stays as emitted');
  t.equal(sink.out[edge], 4);
  t.equal(sink.out[edge + 79], 4);
});

t.test('coverage spans and oldest arrival are reported per region', async (t) => {
  const { sink, tl } = make(2, 800, 800);
  tl.place(0, 160, frame(1), 160, 50);
  tl.place(1, 320, frame(2), 160, 40);
  tl.flushAll();
  const r = sink.regions[0]!;
  t.same(r.first, [160, 320]);
  t.same(r.lastEnd, [320, 480]);
  t.same(r.covered, [160, 160]);
  t.equal(r.arrival, 40, 'the oldest arrival of the region');
});

t.test('a long gap is emitted as silence without growing memory', async (t) => {
  const { sink, tl } = make(1, 800, 160, 8000);
  tl.place(0, 0, frame(1), 160, 0);
  tl.place(0, 80000, frame(2), 160, 0); // 10 s later
  tl.flushAll();
  t.equal(sink.out.length, 80160);
  t.equal(sink.out.filter((b) => b !== 0xff).length, 320);
});

t.test('bad window options are refused', async (t) => {
  const sink = new Collector();
  t.throws(() => new Timeline({ channels: 1, windowSamples: 1000, chunkSamples: 160, boundarySamples: 8000 }, sink), RangeError);
  t.throws(() => new Timeline({ channels: 1, windowSamples: 800, chunkSamples: 160, boundarySamples: 1000 }, sink), RangeError);
});
