// A crash in the first moments of a segment, on real files with the real Journal, replayJournal
// and recoverPartials. The segment writer creates the partial (and its header) first and writes
// its meta after (two fsyncs, slow on a busy disk); the media journal carries the stream's
// sidecar fields. So frames journaled before the meta reached the disk are recovered whole, with
// the meta the journal carries; a partial the crash left without its header gets one; a partial
// with neither audio nor meta is removed; a published segment is never re-created from the
// journal. (Found under load: a SIGKILL 2.6 s into a call left the journal holding every frame and
// no meta, and the whole call was lost.)
import t, { type Test } from 'tap';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile, access } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildWavHeader } from '../codecs/wav.js';
import { decodeWav } from './fixtures/harness.js';
import { frameFor } from '../loadtest/audio-fixtures.js';
import { randomSid } from '../loadtest/sids.js';
import { Journal, leftoverJournalFiles, type JournalClient, type JournalStream } from '../recorder/journal.js';
import { recoverPartials } from '../recorder/recovery.js';
import { segmentMetaOf, type StreamMeta } from '../recorder/sidecar-builder.js';
import { recordingIdFor, segmentPaths } from '../recorder/storage-layout.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

const STARTED = '2026-12-01T02:00:00.000Z';
const SEGMENT_SAMPLES = 10 * 8000;
const FRAMES = 130; // 2.6 s of both tracks

interface Setup { dir: string; stream: JournalStream; meta: StreamMeta; journalDir: string }

async function setup(t: { teardown(fn: () => unknown): void }, withMeta = true): Promise<Setup> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-early-crash-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, '.inprogress'), { recursive: true });
  const streamSid = randomSid('MZ');
  const meta: StreamMeta = {
    accountSid: randomSid('AC'), callSid: randomSid('CA'), streamSid, ctiSessionId: 'cti-7', employeeId: 'emp-9',
    tracks: ['inbound', 'outbound'], channels: 2, encoding: 'mulaw', sampleRate: 8000, startedAt: STARTED,
    customParameters: { queue: 'sales' }, nodeId: 'n1',
  };
  const stream: JournalStream = {
    base: streamSid, accountSid: meta.accountSid, callSid: meta.callSid, startedAt: STARTED, channels: 2, encoding: 'mulaw',
    segmentSamples: SEGMENT_SAMPLES, ...(withMeta ? { meta } : {}),
  };
  return { dir, stream, meta, journalDir: path.join(dir, '.journal', 'n1') };
}

const pathsOf = (s: Setup, index: number) => segmentPaths(s.dir, s.meta.accountSid, s.meta.callSid, new Date(STARTED), recordingIdFor(s.stream.base, index));

/** The journal as the gateway left it: both tracks of frames [from, to), 20 ms each, on the timeline. */
async function journalFrames(s: Setup, from: number, to: number): Promise<void> {
  const journal = new Journal({ dir: s.journalDir, now: () => performance.now() });
  const client: JournalClient = { journalGen: 0, journalNo: 0, journalFront: 0, durableTo: () => 0 };
  journal.register(client, s.stream);
  for (let f = from; f < to; f++) {
    journal.commit(client, 0, f * 160, frameFor(5, 'inbound', f), 0, 160, performance.now());
    journal.commit(client, 1, f * 160, frameFor(5, 'outbound', f), 0, 160, performance.now());
  }
  await journal.close(); // a registered stream: its file stays, as after a crash
}

async function recover(dir: string) {
  const sidecars: RecordingSidecar[] = [];
  const alarms: string[] = [];
  const result = await recoverPartials({
    recordingsDir: dir, nodeId: 'n1', onlyOwn: false,
    journal: { dir: path.join(dir, '.journal', 'n1') },
    raise: (kind, input) => alarms.push(`${kind}: ${input.message}`),
    onRecovered: (sc) => { sidecars.push(sc); },
    log: { info: () => undefined, warn: () => undefined },
  });
  return { result, sidecars, alarms };
}

/** Both tracks of the recovered WAV equal what was journaled, sample by sample. */
async function checkAudio(t: Test, s: Setup, rec: RecordingSidecar, frames: number): Promise<void> {
  const wav = decodeWav(await readFile(path.join(path.dirname(pathsOf(s, 0).audio), rec.audioFile)));
  t.equal(wav.channels, 2);
  t.equal(wav.channel[0]!.length, frames * 160, 'every journaled frame is in the file');
  let bad = 0;
  for (let f = 0; f < frames; f++) {
    const inb = frameFor(5, 'inbound', f);
    const out = frameFor(5, 'outbound', f);
    for (let i = 0; i < 160; i++) if (wav.channel[0]![f * 160 + i] !== inb[i] || wav.channel[1]![f * 160 + i] !== out[i]) bad++;
  }
  t.equal(bad, 0, 'both tracks sample-exact');
}

const header = buildWavHeader({ encoding: 'mulaw', channels: 2, sampleRate: 8000, dataBytes: 0 });

t.test('killed after the partial was created, before its meta reached the disk: the journal\'s frames are recovered with the meta it carries', async (t) => {
  const s = await setup(t);
  const p = pathsOf(s, 0);
  await writeFile(p.partial, header); // the writer's first step; the meta (second) never came
  await journalFrames(s, 0, FRAMES);
  const { result, sidecars: [rec], alarms } = await recover(s.dir);
  t.same(result, { recovered: 1, unattributed: 0, failed: 0 });
  t.same(alarms, []);
  t.ok(rec, 'one recording');
  const want = segmentMetaOf(s.meta, recordingIdFor(s.stream.base, 0), 0, SEGMENT_SAMPLES / 8);
  for (const k of Object.keys(want) as (keyof typeof want)[]) t.same(rec![k], want[k], `${k} from the journal`);
  t.equal(rec!.closeReason, 'recovered');
  t.equal(rec!.durationMs, FRAMES * 20);
  await checkAudio(t, s, rec!, FRAMES);
  t.same(await readdir(path.join(s.dir, '.inprogress')), [], 'nothing left in .inprogress');
  t.same(await leftoverJournalFiles(s.journalDir), [], 'the journal is replayed and removed');
});

t.test('killed between creating the partial and writing its header: the header is written, the frames recovered', async (t) => {
  const s = await setup(t);
  await writeFile(pathsOf(s, 0).partial, Buffer.alloc(0));
  await journalFrames(s, 0, FRAMES);
  const { result, sidecars: [rec] } = await recover(s.dir);
  t.same(result, { recovered: 1, unattributed: 0, failed: 0 });
  await checkAudio(t, s, rec!, FRAMES);
});

t.test('a journal of an older version (no stream meta): the partial is kept for an operator, never lost', async (t) => {
  const s = await setup(t, false);
  await writeFile(pathsOf(s, 0).partial, header);
  await journalFrames(s, 0, FRAMES);
  const { result, sidecars } = await recover(s.dir);
  t.same(result, { recovered: 0, unattributed: 1, failed: 0 });
  t.same(sidecars, []);
  const kept = await readdir(path.join(s.dir, '.unattributed')).catch(() => [] as string[]);
  t.equal(kept.length > 0, true, `the audio is kept under .unattributed (${kept.join(', ')})`);
});

t.test('a partial with a header, no audio and no meta (killed before any frame reached disk or journal) is removed', async (t) => {
  const s = await setup(t);
  await writeFile(pathsOf(s, 0).partial, header);
  const { result, sidecars } = await recover(s.dir);
  t.same(result, { recovered: 0, unattributed: 0, failed: 0 });
  t.same(sidecars, []);
  t.same(await readdir(path.join(s.dir, '.inprogress')), [], 'nothing left');
  t.equal(await access(path.join(s.dir, '.unattributed')).then(() => 'exists', () => 'none'), 'none', 'nothing unattributed');
});

t.test('a published segment is never re-created from the journal (its frames have no partial)', async (t) => {
  const s = await setup(t);
  // segment 0 was published (its partial renamed away) and deleted by a rule; segment 1 is live
  const p1 = pathsOf(s, 1);
  await writeFile(p1.partial, header);
  await journalFrames(s, SEGMENT_SAMPLES / 160 - 20, SEGMENT_SAMPLES / 160 + 30);
  const { result, sidecars } = await recover(s.dir);
  t.same(result, { recovered: 1, unattributed: 0, failed: 0 });
  t.same(sidecars.map((x) => x.segmentIndex), [1], 'only the live segment');
  t.equal(sidecars[0]!.durationMs, 30 * 20);
  t.equal(await access(pathsOf(s, 0).audio).then(() => 'exists', () => 'none'), 'none', 'segment 0 not re-created');
  t.equal(await access(pathsOf(s, 0).partialMeta).then(() => 'exists', () => 'none'), 'none', 'nor its meta');
});

t.test('files born after the gateway was built are its own live streams (it takes streams while recovering): left alone', async (t) => {
  const s = await setup(t);
  const left = pathsOf(s, 0);
  await writeFile(left.partial, Buffer.concat([header, Buffer.alloc(160 * 2 * 50, 0x55)])); // the dead process's
  await writeFile(left.partialMeta, JSON.stringify(segmentMetaOf(s.meta, recordingIdFor(s.stream.base, 0), 0, SEGMENT_SAMPLES / 8)));
  await new Promise((r) => setTimeout(r, 20));
  const builtAt = Date.now();
  await new Promise((r) => setTimeout(r, 20));
  // a stream that started while recovery ran: its partial (a header and nothing else, the meta comes after
  // it), and a second one whose segment 0 was published and awaits its outcome (meta, no partial)
  const live = segmentPaths(s.dir, s.meta.accountSid, s.meta.callSid, new Date(STARTED), recordingIdFor(randomSid('MZ'), 0));
  await writeFile(live.partial, header);
  const published = segmentPaths(s.dir, s.meta.accountSid, s.meta.callSid, new Date(STARTED), recordingIdFor(randomSid('MZ'), 0));
  await writeFile(published.partialMeta, '{}');
  const sidecars: RecordingSidecar[] = [];
  const result = await recoverPartials({
    recordingsDir: s.dir, nodeId: 'n1', onlyOwn: false, ownSince: builtAt,
    raise: () => undefined, onRecovered: (sc) => { sidecars.push(sc); }, log: { info: () => undefined, warn: () => undefined },
  });
  t.same(result, { recovered: 1, unattributed: 0, failed: 0 }, 'only the dead process\'s partial');
  t.same(sidecars.map((x) => x.recordingId), [recordingIdFor(s.stream.base, 0)]);
  t.same((await readdir(path.join(s.dir, '.inprogress'))).sort(), [path.basename(published.partialMeta), path.basename(live.partial)].sort(),
    'the live partial (no meta yet) and the live meta are untouched');
});
