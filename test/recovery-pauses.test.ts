// Crash recovery of a paused stream's segments from the files a crash leaves (partial WAV, meta,
// stats checkpoint, pause record), written here as the gateway writes them and recovered by the
// real recoverPartials over a real directory: pausedIntervals placed as the live publish places
// them (PauseSpans.ofSegment), paused silence not missing, a pause open at the crash ending at the
// end of what was recorded, framesPaused and the backpressure drops from the record and the
// checkpoint, a published WAV without sidecar described the same way, an unusable record named
// in a warning (then the checkpoint's pauses), and which records recovery removes. The SIGKILL
// of a real gateway is test/pause-crash.test.ts.
import t from 'tap';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildWavHeader } from '../codecs/wav.js';
import { randomSid } from '../loadtest/sids.js';
import { recoverPartials, type RecoveryDeps } from '../recorder/recovery.js';
import { PauseSpans } from '../recorder/pause-spans.js';
import { writePauseRecord, type PauseRecord } from '../recorder/pause-record.js';
import { pauseRecordPath, recordingIdFor, segmentPaths } from '../recorder/storage-layout.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

const SOUND = 0x10;
const SILENCE = 0xff;
const STARTED = new Date('2026-11-30T10:00:00.000Z');
const SEGMENT_MS = 10_000;

interface Stream { dir: string; accountSid: string; callSid: string; base: string }

async function newStream(t: Tap, dir?: string): Promise<Stream> {
  const d = dir ?? await mkdtemp(path.join(os.tmpdir(), 'gw-recpause-'));
  if (dir === undefined) t.teardown(() => rm(d, { recursive: true, force: true }));
  await mkdir(path.join(d, '.inprogress'), { recursive: true });
  return { dir: d, accountSid: randomSid('AC'), callSid: randomSid('CA'), base: randomSid('MZ') };
}
type Tap = { teardown(fn: () => unknown): void };

/** mono mu-law audio: `sound` ranges (file ms) are sound, the rest silence */
function audio(ms: number, sound: [number, number][]): Buffer {
  const b = Buffer.alloc(ms * 8, SILENCE);
  for (const [a, z] of sound) b.fill(SOUND, a * 8, z * 8);
  return b;
}

/** The files a crash leaves for segment `index`: meta and partial (or, `published`, the final WAV without sidecar), checkpoint if given. */
async function segment(s: Stream, index: number, data: Buffer, opts: { ckpt?: object; published?: boolean; nodeId?: string } = {}): Promise<string> {
  const recordingId = recordingIdFor(s.base, index);
  const paths = segmentPaths(s.dir, s.accountSid, s.callSid, STARTED, recordingId);
  const offsetMs = index * SEGMENT_MS;
  const meta = {
    recordingId, accountSid: s.accountSid, callSid: s.callSid, streamSid: s.base, ctiSessionId: null, employeeId: null,
    segmentIndex: index, tracks: ['inbound'], channels: 1, encoding: 'mulaw', sampleRate: 8000,
    startedAt: new Date(STARTED.getTime() + offsetMs).toISOString(), offsetMs, pausedIntervals: [], customParameters: {},
    audioFile: `${recordingId}.wav`, nodeId: opts.nodeId ?? 'n1',
  };
  await writeFile(paths.partialMeta, JSON.stringify(meta));
  const header = buildWavHeader({ encoding: 'mulaw', channels: 1, sampleRate: 8000, dataBytes: opts.published === true ? data.length : 0 });
  const target = opts.published === true ? paths.audio : paths.partial;
  await mkdir(path.dirname(target), { recursive: true });
  await writeFile(target, Buffer.concat([header, data]));
  if (opts.ckpt !== undefined) await writeFile(paths.partialStats, JSON.stringify(opts.ckpt));
  return recordingId;
}

async function recover(dir: string, over: Partial<RecoveryDeps> = {}) {
  const sidecars: RecordingSidecar[] = [];
  const warnings: { o: object; m: string }[] = [];
  const alarms: string[] = [];
  const result = await recoverPartials({
    recordingsDir: dir, nodeId: 'n1', onlyOwn: false,
    raise: (kind, input) => alarms.push(`${kind}: ${input.message}`),
    onRecovered: (s) => { sidecars.push(s); },
    log: { info: () => undefined, warn: (o, m) => warnings.push({ o, m }) },
    ...over,
  });
  return { result, sidecars: sidecars.sort((a, b) => a.segmentIndex - b.segmentIndex), warnings, alarms };
}

const record = (over: Partial<PauseRecord>): PauseRecord => ({ v: 1, nodeId: 'n1', behavior: 'silence', intervals: [], openFrom: null, framesPaused: 0, ...over });

t.test('silence: paused silence is not missing, an open pause ends at the end of what was recorded, counters from record and checkpoint', async (t) => {
  const s = await newStream(t);
  // 0..1 s sound, 1..2 s paused (silence), 2..3 s sound, paused from 3 s until the crash
  await segment(s, 0, audio(3000, [[0, 1000], [2000, 3000]]), {
    ckpt: {
      stats: [{ received: 100, missing: 0, duplicate: 1, late: 2, tooLate: 3 }], covered: [16000], firstCovered: [0], lastCoveredEnd: [24000],
      pausedIntervals: [], framesPaused: 10, dataBytes: 24000, droppedBytes: 320, // the checkpoint is older than both pauses
    },
  });
  await writePauseRecord(pauseRecordPath(s.dir, s.base), record({ intervals: [{ from: 1000, to: 2000 }], openFrom: 3000, framesPaused: 60 }));
  const { result, sidecars: [rec], alarms } = await recover(s.dir);
  t.same(result, { recovered: 1, unattributed: 0, failed: 0 });
  t.same(alarms, []);
  t.same(rec!.pausedIntervals, [{ from: 1000, to: 2000 }, { from: 3000, to: 3000 }]);
  t.same(rec!.frames.inbound, { received: 100, missing: 0, duplicate: 1, late: 2, tooLate: 3 }, 'the paused second is not 50 missing frames');
  t.equal(rec!.framesPaused, 60, 'the larger of the record\'s and the checkpoint\'s count');
  t.equal(rec!.framesDroppedDiskBackpressure, 2, 'the checkpoint\'s backpressure drops (320 samples)');
  t.same(await readdir(path.join(s.dir, '.inprogress')), [], 'the pause record went with the stream\'s last partial');
});

t.test('silence: a pause open in the record with sound after it (resumed, the crash came before the resume\'s record) ends before the sound', async (t) => {
  const s = await newStream(t);
  // 0..1 s sound, paused at 1 s (silence), resumed live at 2.2 s: the resume's record never reached the disk
  await segment(s, 0, audio(3000, [[0, 1000], [2200, 3000]]));
  await writePauseRecord(pauseRecordPath(s.dir, s.base), record({ openFrom: 1000, framesPaused: 60 }));
  const { result, sidecars: [rec] } = await recover(s.dir);
  t.same(result, { recovered: 1, unattributed: 0, failed: 0 });
  t.same(rec!.pausedIntervals, [{ from: 1000, to: 2200 }], 'the pause ends where the call\'s audio resumes, not at the end of the file');
  t.equal(rec!.durationMs, 3000, 'the audio after the resume is kept');
  // a pause open to the end (no sound after it) still ends at the end of what was recorded
  const q = await newStream(t);
  await segment(q, 0, audio(3000, [[0, 1000]]));
  await writePauseRecord(pauseRecordPath(q.dir, q.base), record({ openFrom: 1000 }));
  const { sidecars: [r2] } = await recover(q.dir);
  t.same(r2!.pausedIntervals, [{ from: 1000, to: 3000 }]);
});

t.test('skip: each segment lists the cuts in its file, as the live publish does; a published WAV without sidecar too', async (t) => {
  const s = await newStream(t);
  const spans = new PauseSpans();
  for (const [a, z] of [[4000, 6000], [15000, 15500]] as const) {
    spans.pause(a * 8);
    spans.resume(z * 8);
  }
  // segment 0: file 0..10 s = call 0..4 s and 6..12 s (cut at 4 s); segment 1: file 10..14 s, cut at file 13 s
  await segment(s, 0, audio(SEGMENT_MS, [[0, SEGMENT_MS]]), { published: true });
  await segment(s, 1, audio(4000, [[0, 4000]]), {
    ckpt: { stats: [{ received: 100, missing: 0, duplicate: 0, late: 0, tooLate: 0 }], covered: [16000], firstCovered: [80000], lastCoveredEnd: [96000], pausedIntervals: [{ from: 4000, to: 6000 }], framesPaused: 100, dataBytes: 16000 },
  });
  await writePauseRecord(pauseRecordPath(s.dir, s.base), record({ behavior: 'skip', intervals: spans.intervals, framesPaused: 125 }));
  const { result, sidecars } = await recover(s.dir);
  t.same(result, { recovered: 2, unattributed: 0, failed: 0 });
  t.same(sidecars.map((r) => r.pausedIntervals), [spans.ofSegment(0, SEGMENT_MS, true), spans.ofSegment(SEGMENT_MS, 4000, true)], 'what the live publish would list');
  t.same(sidecars.map((r) => r.pausedIntervals), [[{ from: 4000, to: 6000 }], [{ from: 15000, to: 15500 }]]);
  t.same(sidecars.map((r) => r.framesPaused), [125, 125]);
  t.equal(sidecars[0]!.closeReason, 'recovered');
  const onDisk = JSON.parse(await readFile(segmentPaths(s.dir, s.accountSid, s.callSid, STARTED, recordingIdFor(s.base, 0)).sidecar, 'utf8')) as RecordingSidecar;
  t.same(onDisk.pausedIntervals, [{ from: 4000, to: 6000 }], 'the sidecar written beside the published WAV');
  t.same(await readdir(path.join(s.dir, '.inprogress')), []);
});

t.test('an unusable pause record is named in a warning; the checkpoint\'s pauses are used, as before records existed', async (t) => {
  const s = await newStream(t);
  await segment(s, 0, audio(3000, [[0, 1000], [2000, 3000]]), {
    ckpt: { stats: [{ received: 100, missing: 0, duplicate: 0, late: 0, tooLate: 0 }], covered: [16000], firstCovered: [0], lastCoveredEnd: [24000], pausedIntervals: [{ from: 1000, to: 2000 }], dataBytes: 24000 },
  });
  await writeFile(pauseRecordPath(s.dir, s.base), '{"v":1,"behavior":"loud"}');
  const { sidecars: [rec], warnings } = await recover(s.dir);
  t.match(warnings, [{ o: { base: s.base, problem: /behaviour "loud"/ }, m: /pause record unusable/ }]);
  t.same(rec!.pausedIntervals, [{ from: 1000, to: 2000 }], 'the checkpoint\'s pauses');
  t.equal(rec!.frames.inbound!.missing, 50, 'without the behaviour, paused silence cannot be told from missing audio');
  t.equal(rec!.framesPaused, undefined, 'an older checkpoint has no count');
  t.same(await readdir(path.join(s.dir, '.inprogress')), [], 'removed with the stream');
});

t.test('which pause records recovery removes: a stream with nothing left, never another node\'s in a cluster, never one still needed', async (t) => {
  const s = await newStream(t);
  const mine = await newStream(t, s.dir);
  const theirs = await newStream(t, s.dir);
  const failing = await newStream(t, s.dir);
  await writePauseRecord(pauseRecordPath(s.dir, mine.base), record({ openFrom: 0 }));
  await writePauseRecord(pauseRecordPath(s.dir, theirs.base), record({ nodeId: 'n2', openFrom: 0 }));
  // another node's live stream: its partial and record stay
  await segment(theirs, 0, audio(100, [[0, 100]]), { nodeId: 'n2' });
  // a partial that cannot be recovered (an A-law header): it stays, and so does its record
  await writePauseRecord(pauseRecordPath(s.dir, failing.base), record({ intervals: [{ from: 0, to: 10 }] }));
  const id = await segment(failing, 0, Buffer.alloc(0));
  await writeFile(path.join(s.dir, '.inprogress', `${id}.wav`), Buffer.concat([buildWavHeader({ encoding: 'alaw', channels: 1, sampleRate: 8000, dataBytes: 0 }), Buffer.alloc(800, 0xd5)]));
  const { result, alarms } = await recover(s.dir, { onlyOwn: true });
  t.same(result, { recovered: 0, unattributed: 0, failed: 1 });
  t.match(alarms, [/recovery_failed: partial .* could not be recovered/]);
  t.same((await readdir(path.join(s.dir, '.inprogress'))).filter((n) => n.endsWith('.pause')).sort(),
    [`${theirs.base}.pause`, `${failing.base}.pause`].sort(), 'this node\'s record with nothing left is removed');
  await rm(pauseRecordPath(s.dir, failing.base));
  await writePauseRecord(pauseRecordPath(s.dir, theirs.base).replace(theirs.base, `${mine.base}x`), record({ nodeId: 'n2' }));
  await recover(s.dir, { onlyOwn: false });
  t.notOk((await readdir(path.join(s.dir, '.inprogress'))).includes(`${mine.base}x.pause`), 'on one node every record with nothing left goes, whichever node wrote it');
});
