// The segment accounting and the sidecar builder shared by a live publish (stream-session.ts)
// and crash recovery (recovery.ts): counts, missing audio, track order, optional fields and the
// field order of the JSON written to disk.
import t from 'tap';
import {
  addCoverage, checkpointOf, countFrame, missingFrames, newSegment, settleMissing,
} from '../recorder/segment-accounting.js';
import { buildSidecar, trackOfChannel, type SegmentEnd, type SegmentMeta } from '../recorder/sidecar-builder.js';

const meta = (tracks: SegmentMeta['tracks']): SegmentMeta => ({
  recordingId: `MZ${'7'.repeat(32)}-0001`, accountSid: `AC${'a'.repeat(32)}`, callSid: `CA${'c'.repeat(32)}`,
  streamSid: `MZ${'7'.repeat(32)}`, ctiSessionId: 'S-1', employeeId: null, segmentIndex: 1, tracks,
  channels: tracks.length === 2 ? 2 : 1, encoding: 'mulaw', sampleRate: 8000,
  startedAt: '2026-01-02T04:04:05.000Z', offsetMs: 3_600_000, pausedIntervals: [], customParameters: { queue: 'q' },
  audioFile: `MZ${'7'.repeat(32)}-0001.wav`, nodeId: 'n1',
});

const end = (over: Partial<SegmentEnd> = {}): SegmentEnd => ({
  stats: [{ received: 10, missing: 1, duplicate: 2, late: 3, tooLate: 4 }, { received: 5, missing: 0, duplicate: 0, late: 1, tooLate: 0 }],
  durationMs: 1500, pausedIntervals: [], framesPaused: 0, closeReason: 'rotate',
  audioBytes: 24_058, sha256: 'ab'.repeat(32), droppedSamples: 0, ...over,
});

t.test('countFrame: received counts placed and late frames; the drops each have their counter', async (t) => {
  const s = newSegment(0, 1).stats[0]!;
  for (const r of ['placed', 'placed', 'late', 'duplicate', 'too_late', 'too_late'] as const) countFrame(s, r);
  t.same(s, { received: 3, missing: 0, duplicate: 1, late: 1, tooLate: 2 });
});

t.test('coverage, checkpoint and missing audio', async (t) => {
  const seg = newSegment(2, 2);
  t.same([seg.index, seg.covered, seg.firstCovered, seg.lastCoveredEnd, seg.writer], [2, [0, 0], [-1, -1], [-1, -1], null]);
  t.equal(addCoverage(seg, { covered: [0, 0], firstCovered: [-1, -1], lastCoveredEnd: [-1, -1], oldestArrival: 0 }, 2), true, 'all gap fill');
  t.equal(addCoverage(seg, { covered: [320, 0], firstCovered: [100, -1], lastCoveredEnd: [420, -1], oldestArrival: 0 }, 2), false);
  t.equal(addCoverage(seg, { covered: [160, 160], firstCovered: [900, 900], lastCoveredEnd: [1060, 1060], oldestArrival: 0 }, 2), false);
  t.same(seg.covered, [480, 160]);
  t.same(seg.firstCovered, [100, 900], 'the first region that covered the track');
  t.same(seg.lastCoveredEnd, [1060, 1060]);
  const pauses = [{ from: 10, to: 20 }];
  t.same(checkpointOf(seg, pauses), { stats: seg.stats, covered: [480, 160], firstCovered: [100, 900], lastCoveredEnd: [1060, 1060], pausedIntervals: pauses, framesPaused: 0 });
  t.equal(checkpointOf(seg, pauses, 42).framesPaused, 42, 'the stream\'s paused frames so far, for a recovered sidecar');
  // left: span 960, covered 480 -> 3 frames missing; right: span 160, covered 160 -> none
  t.same(settleMissing(seg, 2, null).map((s) => s.missing), [3, 0]);
  // 320 of the left track's hole was paused (silence on purpose): 1 frame missing
  t.same(settleMissing(seg, 2, (a, b) => (a === 100 && b === 1060 ? 320 : 0)).map((s) => s.missing), [1, 0]);
  t.equal(missingFrames(800, 0, 0), 5);
  t.equal(missingFrames(100, 0, 0), 1, 'rounded to 20 ms units');
  t.equal(missingFrames(100, 200, 0), 0, 'never negative');
});

t.test('trackOfChannel: stereo is inbound left, outbound right; mono is the stream\'s one track', async (t) => {
  t.equal(trackOfChannel(2, ['inbound', 'outbound'], 0), 'inbound');
  t.equal(trackOfChannel(2, ['outbound', 'inbound'], 1), 'outbound', 'by channel, not by the order tracks were named');
  t.equal(trackOfChannel(1, ['outbound'], 0), 'outbound');
});

t.test('buildSidecar: meta + end, totals summed per track, endedAt from the duration', async (t) => {
  const m = meta(['inbound', 'outbound']);
  const s = buildSidecar(m, end({ pausedIntervals: [{ from: 3_600_100, to: 3_600_200 }] }));
  t.match(s, {
    ...m, endedAt: '2026-01-02T04:04:06.500Z', durationMs: 1500,
    framesReceived: 15, framesMissing: 1, framesDuplicate: 2, framesLate: 4, framesTooLate: 4,
    frames: { inbound: { received: 10, missing: 1, duplicate: 2, late: 3, tooLate: 4 }, outbound: { received: 5, late: 1 } },
    pausedIntervals: [{ from: 3_600_100, to: 3_600_200 }], closeReason: 'rotate', audioBytes: 24_058, sha256: 'ab'.repeat(32),
  });
  for (const k of ['framesPaused', 'writeError', 'framesDroppedDiskBackpressure']) t.notOk(k in s, `${k} absent when nothing happened`);
  // the JSON keeps the meta's field order (pausedIntervals stays where the meta had it), then the end's
  t.same(Object.keys(s), [...Object.keys(m), 'endedAt', 'durationMs', 'framesReceived', 'framesMissing',
    'framesDuplicate', 'framesLate', 'framesTooLate', 'frames', 'closeReason', 'audioBytes', 'sha256']);
});

t.test('buildSidecar: mono, and the optional fields when they happened', async (t) => {
  const s = buildSidecar(meta(['outbound']), end({
    stats: [{ received: 7, missing: 0, duplicate: 0, late: 0, tooLate: 0 }],
    framesPaused: 12, writeError: 'ENOSPC: no space left on device', droppedSamples: 50 * 160 + 70,
  }));
  t.same(s.frames, { outbound: { received: 7, missing: 0, duplicate: 0, late: 0, tooLate: 0 } });
  t.equal(s.framesReceived, 7);
  t.equal(s.framesPaused, 12);
  t.equal(s.writeError, 'ENOSPC: no space left on device');
  t.equal(s.framesDroppedDiskBackpressure, 50, '20 ms units, rounded');
  t.same(Object.keys(s).slice(-6), ['framesPaused', 'closeReason', 'audioBytes', 'sha256', 'writeError', 'framesDroppedDiskBackpressure']);
  const none = buildSidecar(meta(['inbound']), end({ stats: [{ received: 1, missing: 0, duplicate: 0, late: 0, tooLate: 0 }], writeError: null }));
  t.notOk('writeError' in none, 'no write error (null) is left out');
});
