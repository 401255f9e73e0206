// PauseSpans on its own: the open pause, closed spans, which frames they drop, how far a `skip`
// cut moves a frame, and which pauses a segment's sidecar names (call-time samples, 8 per ms).
import t from 'tap';
import { PauseSpans } from '../recorder/pause-spans.js';

t.test('pause and resume: idempotent, an empty pause leaves no span, the end is never before the start', async (t) => {
  const p = new PauseSpans();
  t.notOk(p.paused);
  t.equal(p.openFrom, null);
  t.equal(p.resume(800), 800, 'resume without a pause: the instant asked for');
  t.same(p.intervals, []);
  t.equal(p.pause(1600), 1600);
  t.equal(p.pause(2400), 1600, 'a second pause keeps the first start');
  t.ok(p.paused);
  t.equal(p.openFrom, 1600);
  t.notOk(p.any, 'an open pause is not a closed span');
  t.equal(p.resume(4000), 4000);
  t.notOk(p.paused);
  t.same(p.intervals, [{ from: 200, to: 500 }], 'in ms');
  t.ok(p.any);
  p.pause(4800);
  t.equal(p.resume(4000), 4800, 'ends where it began, not before');
  t.same(p.intervals, [{ from: 200, to: 500 }], 'an empty pause is not recorded');
});

t.test('startPaused: paused from sample 0', async (t) => {
  const p = new PauseSpans(true);
  t.ok(p.paused);
  t.ok(p.isPaused(0));
  t.equal(p.resume(320), 320);
  t.same(p.intervals, [{ from: 0, to: 40 }]);
});

t.test('isPaused: inside a closed span or after the open start; the span end is not paused', async (t) => {
  const p = new PauseSpans();
  p.pause(1600); p.resume(3200); // [1600, 3200)
  p.pause(8000); p.resume(9600); // [8000, 9600)
  const expect: [number, boolean][] = [[0, false], [1599, false], [1600, true], [3199, true], [3200, false],
    [7999, false], [8000, true], [9599, true], [9600, false], [20000, false]];
  for (const [start, paused] of expect) t.equal(p.isPaused(start), paused, `sample ${start}`);
  p.pause(12000);
  t.notOk(p.isPaused(11999));
  t.ok(p.isPaused(12000), 'open pause');
  t.ok(p.isPaused(50000), 'open pause runs on');
});

t.test('cutBefore: samples of the closed spans that end at or before a frame', async (t) => {
  const p = new PauseSpans();
  p.pause(1600); p.resume(3200);
  p.pause(8000); p.resume(9600);
  t.equal(p.cutBefore(0), 0);
  t.equal(p.cutBefore(3199), 0, 'inside the first span (such a frame is dropped anyway)');
  t.equal(p.cutBefore(3200), 1600);
  t.equal(p.cutBefore(9600), 3200);
  t.equal(p.cutBefore(100000), 3200);
});

t.test('pausedWithin: overlap of [a, b) with the closed spans; nothing before a first covered sample', async (t) => {
  const p = new PauseSpans();
  p.pause(1600); p.resume(3200);
  p.pause(8000); p.resume(9600);
  t.equal(p.pausedWithin(0, 16000), 3200, 'both spans');
  t.equal(p.pausedWithin(2400, 8800), 800 + 800, 'half of each');
  t.equal(p.pausedWithin(3200, 8000), 0, 'between them');
  t.equal(p.pausedWithin(-1, -1), 0, 'a track with no covered sample');
});

t.test('ofSegment: silence keeps call time, skip places each pause where it was cut out; bounds inclusive', async (t) => {
  const p = new PauseSpans();
  p.pause(8000); p.resume(16000); // 1000..2000 ms
  p.pause(40000); p.resume(48000); // 5000..6000 ms
  // silence: file time = call time
  t.same(p.ofSegment(0, 3000, false), [{ from: 1000, to: 2000 }]);
  t.same(p.ofSegment(2000, 3000, false), [{ from: 1000, to: 2000 }, { from: 5000, to: 6000 }], 'a pause ending at the segment start is named');
  t.same(p.ofSegment(6001, 1000, false), []);
  // skip: the second pause sits at file time 4000 (1000 ms cut before it), the values stay call time
  t.same(p.ofSegment(0, 3999, true), [{ from: 1000, to: 2000 }]);
  t.same(p.ofSegment(4000, 1000, true), [{ from: 5000, to: 6000 }]);
  const got = p.ofSegment(0, 10000, true);
  got[0]!.from = -1;
  t.same(p.intervals[0], { from: 1000, to: 2000 }, 'copies: a sidecar cannot change the stream\'s record');
});
