// The stream's pause record (recorder/pause-record.ts) on its own: written atomically and read
// back, every malformed record named and refused (recovery then falls back on the checkpoint),
// and the pauses a recovered segment gets from it: the same placement as the live publish
// (PauseSpans.ofSegment / pausedWithin), a pause open at the crash ending at the end of what was
// recorded. The end-to-end SIGKILL tests are test/pause-crash.test.ts.
import t from 'tap';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PauseSpans, pausedSamplesWithin, pausesOfSegment } from '../recorder/pause-spans.js';
import { readPauseRecord, recoveredPauses, writePauseRecord, type PauseRecord } from '../recorder/pause-record.js';
import { baseOfRecordingId, pauseRecordPath } from '../recorder/storage-layout.js';

const SID = `MZ${'a'.repeat(32)}`;
const record = (over: Partial<PauseRecord> = {}): PauseRecord => ({
  v: 1, nodeId: 'n1', behavior: 'silence', intervals: [{ from: 1000, to: 2000 }], openFrom: null, framesPaused: 100, ...over,
});

t.test('the record path: beside the partials, named after the stream\'s reserved name', async (t) => {
  t.equal(pauseRecordPath('/rec', SID), `/rec/.inprogress/${SID}.pause`);
  t.equal(baseOfRecordingId(`${SID}-0003`), SID);
  t.equal(baseOfRecordingId(`${SID}-r2-0000`), `${SID}-r2`, 'a reused streamSid keeps its -r<n>');
});

t.test('written atomically, read back as written; no temporary file left', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-pause-record-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, `${SID}.pause`);
  t.same(await readPauseRecord(file), { record: null, problem: null }, 'no record: never paused, and no problem');
  const r = record({ intervals: [{ from: 1000, to: 2000.125 }], openFrom: 3000.5 });
  await writePauseRecord(file, r);
  t.same(await readPauseRecord(file), { record: r, problem: null });
  await writePauseRecord(file, record({ intervals: [], openFrom: 0, behavior: 'skip', framesPaused: 0 }));
  t.same((await readPauseRecord(file)).record, record({ intervals: [], openFrom: 0, behavior: 'skip', framesPaused: 0 }), 'rewritten whole');
  t.same(await readdir(dir), [`${SID}.pause`]);
});

t.test('a malformed record is refused with the reason, never half used', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-pause-record-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'x.pause');
  const cases: [string, string, RegExp][] = [
    ['empty file', '', /not JSON/],
    ['not JSON', '{"v":1,', /not JSON/],
    ['JSON null', 'null', /version 1/],
    ['an array', '[]', /version 1/],
    ['another version', JSON.stringify({ ...record(), v: 2 }), /version 1/],
    ['unknown behaviour', JSON.stringify({ ...record(), behavior: 'mute' }), /behaviour "mute"/],
    ['no behaviour', JSON.stringify({ ...record(), behavior: undefined }), /behaviour undefined/],
    ['intervals not a list', JSON.stringify({ ...record(), intervals: {} }), /no intervals/],
    ['an interval that is no object', JSON.stringify({ ...record(), intervals: [5] }), /interval 5/],
    ['an interval without `to`', JSON.stringify({ ...record(), intervals: [{ from: 1 }] }), /interval/],
    ['an interval ending before it begins', JSON.stringify({ ...record(), intervals: [{ from: 5, to: 4 }] }), /interval/],
    ['a negative instant', JSON.stringify({ ...record(), intervals: [{ from: -1, to: 4 }] }), /interval/],
    ['a string instant', JSON.stringify({ ...record(), intervals: [{ from: '1', to: 4 }] }), /interval/],
    ['intervals out of order', JSON.stringify({ ...record(), intervals: [{ from: 10, to: 20 }, { from: 15, to: 30 }] }), /in order/],
    ['an open pause before the last closed one ends', JSON.stringify({ ...record(), openFrom: 1500 }), /open pause from 1500/],
    ['an open pause that is no number', JSON.stringify({ ...record(), openFrom: 'soon' }), /open pause/],
    ['no open pause field', JSON.stringify({ ...record(), openFrom: undefined }), /open pause/],
  ];
  for (const [what, text, why] of cases) {
    await writeFile(file, text);
    const got = await readPauseRecord(file);
    t.equal(got.record, null, `${what}: refused`);
    t.match(got.problem, why, `${what}: ${got.problem}`);
  }
  await writeFile(file, JSON.stringify({ ...record(), framesPaused: -3, nodeId: 7 }));
  t.match((await readPauseRecord(file)).record, { framesPaused: 0, nodeId: '' }, 'a bad count or node id is only a lost detail: 0 and ""');
  const unreadable = await readPauseRecord(dir); // a directory: EISDIR
  t.equal(unreadable.record, null);
  t.match(unreadable.problem, /unreadable/, 'a record that cannot be read is a problem, not "never paused"');
});

t.test('pausesOfSegment and pausedSamplesWithin are what the live PauseSpans says', async (t) => {
  const spans = new PauseSpans();
  for (const [a, b] of [[8000, 16000], [24040, 24100], [40000, 56000]] as const) {
    spans.pause(a);
    spans.resume(b);
  }
  for (const skip of [false, true]) {
    for (const [off, dur] of [[0, 500], [0, 1000], [1000, 2000], [2000, 1000], [4000, 10], [7000, 100], [10_000, 1]] as const) {
      t.same(pausesOfSegment(spans.intervals, off, dur, skip), spans.ofSegment(off, dur, skip), `skip ${skip}, segment ${off}+${dur} ms`);
    }
  }
  for (const [a, b] of [[-1, 100_000], [0, 100_000], [9000, 20000], [24050, 24060], [0, 8000], [60000, 70000]] as const) {
    t.equal(pausedSamplesWithin(spans.intervals, a, b), spans.pausedWithin(a, b), `paused samples in [${a}, ${b})`);
  }
});

t.test('recoveredPauses: closed pauses placed as live; silence subtracts them, skip has no paused silence', async (t) => {
  const r = record({ intervals: [{ from: 1000, to: 2000 }, { from: 5000, to: 5500 }] });
  const silence = recoveredPauses(r, 0, 6000, true);
  t.same(silence.pausedIntervals, r.intervals);
  t.equal(silence.pausedWithin!(0, 6000 * 8), 1500 * 8, 'silence: every paused sample of the covered span');
  t.equal(silence.pausedWithin!(-1, 6000 * 8), 0, 'nothing covered: nothing to subtract');
  const skip = recoveredPauses({ ...r, behavior: 'skip' }, 0, 4500, true);
  t.same(skip.pausedIntervals, r.intervals, 'skip: both cuts lie in the 4.5 s file (at 1000 and 4000 ms)');
  t.equal(skip.pausedWithin, null);
  t.same(recoveredPauses({ ...r, behavior: 'skip' }, 0, 3000, true).pausedIntervals, [r.intervals[0]], 'skip: the second cut (at 4000 ms of the file) is past a 3 s file');
  t.same(recoveredPauses(r, 0, 3000, true).pausedIntervals, [r.intervals[0]], 'silence: the second pause (5000 ms) is past a 3 s file');
  t.same(recoveredPauses(r, 3000, 3000, true).pausedIntervals, [r.intervals[1]], 'a later segment lists only its own');
});

t.test('recoveredPauses: a pause open at the crash ends at the end of what was recorded', async (t) => {
  const silence = recoveredPauses(record({ openFrom: 3000 }), 0, 4000, true);
  t.same(silence.pausedIntervals, [{ from: 1000, to: 2000 }, { from: 3000, to: 4000 }], 'silence: to the file end');
  t.equal(silence.pausedWithin!(0, 4000 * 8), 2000 * 8);
  t.same(recoveredPauses(record({ openFrom: 3000 }), 0, 3000, true).pausedIntervals, [{ from: 1000, to: 2000 }, { from: 3000, to: 3000 }],
    'nothing recorded after it began: it ends where it began');
  t.same(recoveredPauses(record({ openFrom: 3000 }), 0, 2990, true).pausedIntervals, [{ from: 1000, to: 2000 }, { from: 3000, to: 3000 }],
    'the crash cost the audio just before it: still in the stream\'s last segment');
  t.same(recoveredPauses(record({ openFrom: 3000 }), 0, 2990, false).pausedIntervals, [{ from: 1000, to: 2000 }],
    'not in an earlier segment');
  // skip: file time 2000 is call time 3000 (1000 ms cut before it)
  t.same(recoveredPauses(record({ behavior: 'skip', openFrom: 3000 }), 0, 2000, true).pausedIntervals, [{ from: 1000, to: 2000 }, { from: 3000, to: 3000 }],
    'skip: it ends at the call time of the file end, never before it began');
  t.same(recoveredPauses(record({ behavior: 'skip', openFrom: 3000 }), 0, 2500, true).pausedIntervals, [{ from: 1000, to: 2000 }, { from: 3000, to: 3500 }],
    'skip: to the call time of the file end (file time + every cut before it)');
  t.same(recoveredPauses(record({ openFrom: 0, intervals: [] }), 0, 0, true).pausedIntervals, [{ from: 0, to: 0 }], 'paused from the first frame, nothing recorded');
});
