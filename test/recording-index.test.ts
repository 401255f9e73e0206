import t from 'tap';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  decodeCursor,
  encodeCursor,
  InvalidCursorError,
  InvalidSidecarError,
  parseSidecar,
  RecordingIndex,
} from '../recorder/recording-index.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { segmentPaths } from '../recorder/storage-layout.js';
import { buildWavHeader } from '../codecs/wav.js';

const ACCOUNT = 'AC' + '0'.repeat(31) + '1';
const hex32 = (n: number) => n.toString(16).padStart(32, '0');
const callSid = (n: number) => `CA${hex32(n)}`;
const streamSid = (n: number) => `MZ${hex32(n)}`;
const recId = (stream: number, seg = 0) => `${streamSid(stream)}-${String(seg).padStart(4, '0')}`;

interface Spec {
  stream: number;
  seg?: number;
  call: number;
  cti?: string | null;
  emp?: string | null;
  startedAt: string;
}

function sidecarOf(s: Spec): RecordingSidecar {
  const id = recId(s.stream, s.seg ?? 0);
  return {
    recordingId: id,
    accountSid: ACCOUNT,
    callSid: callSid(s.call),
    streamSid: streamSid(s.stream),
    ctiSessionId: s.cti ?? null,
    employeeId: s.emp ?? null,
    segmentIndex: s.seg ?? 0,
    tracks: ['inbound'],
    channels: 1,
    encoding: 'mulaw',
    sampleRate: 8000,
    startedAt: s.startedAt,
    endedAt: new Date(Date.parse(s.startedAt) + 1000).toISOString(),
    durationMs: 1000,
    offsetMs: 0,
    framesReceived: 50,
    framesMissing: 0,
    framesDuplicate: 0,
    framesLate: 0,
    framesTooLate: 0,
    frames: { inbound: { received: 50, missing: 0, duplicate: 0, late: 0, tooLate: 0 } },
    pausedIntervals: [],
    closeReason: 'stop',
    customParameters: {},
    audioFile: `${id}.wav`,
    audioBytes: 58 + 8000,
    sha256: 'ab'.repeat(32),
    nodeId: 'test-node',
  };
}

/** Writes sidecar + a small WAV in the real layout; returns the sidecar path. */
async function writeRecording(dir: string, sc: RecordingSidecar): Promise<string> {
  const p = segmentPaths(dir, sc.accountSid, sc.callSid, new Date(sc.startedAt), sc.recordingId);
  await mkdir(path.dirname(p.audio), { recursive: true });
  await writeFile(p.audio, Buffer.concat([buildWavHeader({ encoding: 'mulaw', channels: 1, sampleRate: 8000, dataBytes: 8 }), Buffer.alloc(8, 0xff)]));
  await writeFile(p.sidecar, JSON.stringify(sc, null, 2));
  return p.sidecar;
}

const ids = (items: RecordingSidecar[]) => items.map((s) => s.recordingId);

/** Every page of a query, following nextCursor. */
function allPages(index: RecordingIndex, q: Omit<Parameters<RecordingIndex['query']>[0], 'cursor'>): { pages: string[][]; flat: string[] } {
  const pages: string[][] = [];
  let cursor: string | undefined;
  for (let guard = 0; guard < 1000; guard++) {
    const page = index.query({ ...q, cursor });
    pages.push(ids(page.items));
    if (page.nextCursor === null) break;
    cursor = page.nextCursor;
  }
  return { pages, flat: pages.flat() };
}

const SPECS: Spec[] = [
  { stream: 1, call: 1, cti: 'cti-A', emp: 'emp-1', startedAt: '2024-03-01T10:00:00.000Z' },
  { stream: 1, seg: 1, call: 1, cti: 'cti-A', emp: 'emp-1', startedAt: '2024-03-01T11:00:00.000Z' },
  { stream: 2, call: 2, cti: 'cti-A', emp: 'emp-2', startedAt: '2024-03-01T10:30:00.000Z' },
  { stream: 3, call: 3, cti: 'cti-B', emp: 'emp-1', startedAt: '2024-03-02T09:00:00.000Z' },
  { stream: 4, call: 4, cti: null, emp: null, startedAt: '2024-03-02T09:00:00Z' }, // same instant as stream 3, other precision
  { stream: 5, call: 4, cti: 'cti-C', emp: 'emp-3', startedAt: '2024-02-28T23:59:59.999Z' },
  { stream: 6, call: 5, cti: 'cti-B', emp: 'emp-2', startedAt: '2024-03-03T00:00:00.000Z' },
];

t.test('load: real layout, broken files reported and skipped, dot-folders and symlinks ignored', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'recidx-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const good = SPECS.map(sidecarOf);
  for (const sc of good) await writeRecording(dir, sc);

  const callDir = path.dirname(segmentPaths(dir, ACCOUNT, callSid(9), new Date('2024-03-05T00:00:00Z'), recId(90)).sidecar);
  await mkdir(callDir, { recursive: true });
  const wav = buildWavHeader({ encoding: 'mulaw', channels: 1, sampleRate: 8000, dataBytes: 0 });
  // not JSON
  await writeFile(path.join(callDir, `${recId(90)}.json`), '{"recordingId": ');
  await writeFile(path.join(callDir, `${recId(90)}.wav`), wav);
  // JSON, but fields missing / wrong
  const missing = { ...sidecarOf({ stream: 91, call: 9, startedAt: '2024-03-05T00:00:00Z' }), channels: 3, startedAt: 'yesterday' } as Record<string, unknown>;
  delete missing.callSid;
  await writeFile(path.join(callDir, `${recId(91)}.json`), JSON.stringify(missing));
  await writeFile(path.join(callDir, `${recId(91)}.wav`), wav);
  // audio missing
  await writeFile(path.join(callDir, `${recId(92)}.json`), JSON.stringify(sidecarOf({ stream: 92, call: 9, startedAt: '2024-03-05T00:00:00Z' })));
  // file name does not match the id inside
  await writeFile(path.join(callDir, `${recId(93)}.json`), JSON.stringify(sidecarOf({ stream: 94, call: 9, startedAt: '2024-03-05T00:00:00Z' })));
  await writeFile(path.join(callDir, `${recId(94)}.wav`), wav);
  // audioFile that points elsewhere
  await writeFile(path.join(callDir, `${recId(95)}.json`), JSON.stringify({ ...sidecarOf({ stream: 95, call: 9, startedAt: '2024-03-05T00:00:00Z' }), audioFile: '../x.wav' }));
  // a JSON array
  await writeFile(path.join(callDir, `${recId(96)}.json`), '[1,2]');
  // the same recording id a second time, in another directory
  const dupDir = path.join(dir, ACCOUNT, '2024', '03', '09', callSid(1));
  await mkdir(dupDir, { recursive: true });
  const dup = sidecarOf(SPECS[0]!);
  await writeFile(path.join(dupDir, `${dup.recordingId}.json`), JSON.stringify(dup));
  await writeFile(path.join(dupDir, `${dup.recordingId}.wav`), wav);

  // in-progress segments and atomic-write temp files are not recordings
  await mkdir(path.join(dir, '.inprogress'), { recursive: true });
  await writeFile(path.join(dir, '.inprogress', `${recId(97)}.json`), JSON.stringify(sidecarOf({ stream: 97, call: 9, startedAt: '2024-03-05T00:00:00Z' })));
  await writeFile(path.join(dir, '.inprogress', `${recId(97)}.wav`), wav);
  await writeFile(path.join(callDir, `.${recId(98)}.json.123.tmp`), 'partial');
  await writeFile(path.join(callDir, `.${recId(98)}.json`), 'partial');
  // a symlinked directory is not followed (it could point anywhere, or loop)
  await symlink(path.join(dir, ACCOUNT), path.join(dir, 'loop'));

  const bad: Array<[string, Error]> = [];
  const index = new RecordingIndex(dir);
  const n = await index.load((p, err) => bad.push([p, err]));
  t.equal(n, SPECS.length, 'every good recording indexed exactly once');
  t.equal(index.size, SPECS.length);

  const badNames = bad.map(([p]) => path.relative(dir, p)).sort();
  const expectedBad = [90, 91, 92, 93, 95, 96].map((s) => path.relative(dir, path.join(callDir, `${recId(s)}.json`)));
  const firstOfDup = bad.find(([, e]) => /already indexed/.test(e.message));
  t.ok(firstOfDup, 'the duplicate id is reported');
  t.same(badNames.filter((p) => !p.includes(path.join('03', '09')) && !p.includes(path.join('03', '01'))), expectedBad.sort());
  t.equal(bad.length, expectedBad.length + 1);
  for (const [, err] of bad.filter(([p]) => p.startsWith(callDir))) t.type(err, InvalidSidecarError);
  const msg = (s: number) => bad.find(([p]) => p.endsWith(`${recId(s)}.json`))![1].message;
  t.match(msg(90), /not JSON/);
  t.match(msg(91), /callSid/);
  t.match(msg(91), /channels/);
  t.match(msg(91), /startedAt/);
  t.match(msg(92), /audio file .* is missing/);
  t.match(msg(93), /does not match recordingId/);
  t.match(msg(95), /audioFile/);
  t.match(msg(96), /not a JSON object/);

  const got = index.get(recId(2))!;
  t.same(got.sidecar, good[2]);
  t.equal(got.sidecarPath, segmentPaths(dir, ACCOUNT, callSid(2), new Date(SPECS[2]!.startedAt), recId(2)).sidecar);
  t.equal(got.audioPath, got.sidecarPath.replace(/\.json$/, '.wav'));
  t.equal(index.get(recId(97)), undefined, '.inprogress is skipped');

  // a second load over the same tree replaces instead of duplicating
  const again = await index.load();
  t.equal(again, SPECS.length);
  t.equal(index.size, SPECS.length);
  t.same(ids(index.query({ limit: 100 }).items), [recId(5), recId(1), recId(2), recId(1, 1), recId(3), recId(4), recId(6)]);
  const fresh = new RecordingIndex(dir);
  await fresh.load();
  t.same(fresh.query({ limit: 100 }), index.query({ limit: 100 }), 'a fresh load gives the same listing');
});

t.test('load: missing root is empty, an unreadable root is reported', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'recidx-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const bad: string[] = [];
  t.equal(await new RecordingIndex(path.join(dir, 'nope')).load((p) => bad.push(p)), 0);
  t.same(bad, []);
  const file = path.join(dir, 'file');
  await writeFile(file, 'x');
  t.equal(await new RecordingIndex(file).load((p) => bad.push(p)), 0);
  t.same(bad, [file]);
  t.equal(await new RecordingIndex(file).load(), 0, 'no callback: still not fatal');
});

t.test('ordering is (startedAt, recordingId) whatever the insertion order', async (t) => {
  const index = new RecordingIndex('/nonexistent');
  const shuffled = [...SPECS].sort((a, b) => (a.stream * 7919) % 13 - (b.stream * 7919) % 13).reverse();
  for (const s of shuffled) index.add(sidecarOf(s), `/r/${recId(s.stream, s.seg)}.json`);
  const expected = SPECS.map(sidecarOf)
    .sort((a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt) || (a.recordingId < b.recordingId ? -1 : 1))
    .map((s) => s.recordingId);
  t.same(ids(index.query({ limit: 100 }).items), expected);
  t.same(expected.slice(0, 2), [recId(5), recId(1)]);
  // streams 3 and 4 start at the same instant written differently: tie broken by id
  t.same(expected.slice(4, 6), [recId(3), recId(4)]);
  t.equal(index.get(recId(4))!.audioPath, path.resolve(`/r/${recId(4)}.wav`));
});

t.test('filters, alone and combined, use the right candidates', async (t) => {
  const index = new RecordingIndex('/nonexistent');
  for (const s of SPECS) index.add(sidecarOf(s), `/r/${recId(s.stream, s.seg)}.json`);
  const all = index.query({ limit: 100 }).items;
  const expect = (pred: (s: RecordingSidecar) => boolean) => ids(all.filter(pred));

  t.same(ids(index.query({ limit: 100, callSid: callSid(1) }).items), [recId(1), recId(1, 1)]);
  t.same(ids(index.query({ limit: 100, callSid: callSid(4) }).items), [recId(5), recId(4)]);
  t.same(ids(index.query({ limit: 100, ctiSessionId: 'cti-A' }).items), [recId(1), recId(2), recId(1, 1)]);
  t.same(ids(index.query({ limit: 100, employeeId: 'emp-1' }).items), expect((s) => s.employeeId === 'emp-1'));
  t.same(ids(index.query({ limit: 100, employeeId: 'emp-2', ctiSessionId: 'cti-B' }).items), [recId(6)]);
  t.same(ids(index.query({ limit: 100, employeeId: 'emp-1', ctiSessionId: 'cti-A', callSid: callSid(1) }).items), [recId(1), recId(1, 1)]);
  t.same(ids(index.query({ limit: 100, employeeId: 'emp-1', callSid: callSid(2) }).items), [], 'disjoint filters');
  t.same(ids(index.query({ limit: 100, ctiSessionId: 'nope' }).items), []);
  t.same(ids(index.query({ limit: 100, callSid: callSid(999) }).items), []);

  // from inclusive, to exclusive
  const from = new Date('2024-03-01T10:30:00.000Z');
  const to = new Date('2024-03-02T09:00:00.000Z');
  t.same(ids(index.query({ limit: 100, from, to }).items), [recId(2), recId(1, 1)]);
  t.same(ids(index.query({ limit: 100, from: to }).items), expect((s) => Date.parse(s.startedAt) >= to.getTime()));
  t.same(ids(index.query({ limit: 100, to: from }).items), [recId(5), recId(1)]);
  t.same(ids(index.query({ limit: 100, from, to, employeeId: 'emp-1' }).items), [recId(1, 1)]);

  t.same(index.byCtiSession('cti-A').map((s) => s.recordingId), [recId(1), recId(2), recId(1, 1)]);
  t.same(index.byCtiSession('unknown'), []);
  t.throws(() => index.query({ limit: 0 }), RangeError);
  t.throws(() => index.query({ limit: 1.5 }), RangeError);
});

t.test('paging walks everything once, with and without filters', async (t) => {
  const index = new RecordingIndex('/nonexistent');
  const many: Spec[] = [];
  for (let i = 0; i < 57; i++) {
    // many share a start instant, so the id tie-break is exercised across page boundaries
    many.push({ stream: 100 + i, call: 10 + (i % 4), cti: `cti-${i % 3}`, emp: `emp-${i % 5}`, startedAt: new Date(Date.UTC(2024, 0, 1, 0, 0, Math.floor(i / 4))).toISOString() });
  }
  for (const s of many) index.add(sidecarOf(s), `/r/${recId(s.stream)}.json`);
  const everything = ids(index.query({ limit: 1000 }).items);
  t.equal(everything.length, 57);
  for (const limit of [1, 2, 5, 56, 57, 58]) {
    const { pages, flat } = allPages(index, { limit });
    t.same(flat, everything, `limit ${limit}: no gaps, no duplicates`);
    t.ok(pages.every((p) => p.length <= limit && p.length > 0), `limit ${limit}: pages are full-or-last and never empty`);
    t.equal(pages.length, Math.ceil(57 / limit));
  }
  const filtered = ids(index.query({ limit: 1000, ctiSessionId: 'cti-1', employeeId: 'emp-2' }).items);
  t.ok(filtered.length > 1);
  t.same(allPages(index, { limit: 1, ctiSessionId: 'cti-1', employeeId: 'emp-2' }).flat, filtered);
  const from = new Date(Date.UTC(2024, 0, 1, 0, 0, 3));
  const to = new Date(Date.UTC(2024, 0, 1, 0, 0, 9));
  const window = ids(index.query({ limit: 1000, from, to }).items);
  t.equal(window.length, 24);
  t.same(allPages(index, { limit: 7, from, to }).flat, window);
});

t.test('cursor is a position: adds and removes around it neither repeat nor skip', async (t) => {
  const index = new RecordingIndex('/nonexistent');
  const at = (sec: number) => new Date(Date.UTC(2024, 5, 1, 12, 0, sec)).toISOString();
  for (let i = 0; i < 10; i++) index.add(sidecarOf({ stream: 200 + i, call: 20, startedAt: at(i * 10) }), `/r/${i}.json`);
  const first = index.query({ limit: 4 });
  t.same(ids(first.items), [200, 201, 202, 203].map((s) => recId(s)));
  t.type(first.nextCursor, 'string');

  // added behind the cursor (earlier start): must not shift the next page
  index.add(sidecarOf({ stream: 300, call: 20, startedAt: at(5) }), '/r/300.json');
  index.add(sidecarOf({ stream: 301, call: 20, startedAt: at(0) }), '/r/301.json');
  // the item the cursor points at disappears
  t.equal(index.remove(recId(203)), true);
  t.equal(index.remove(recId(203)), false);
  // added ahead of the cursor: shows up later
  index.add(sidecarOf({ stream: 302, call: 20, startedAt: at(55) }), '/r/302.json');

  const second = index.query({ limit: 4, cursor: first.nextCursor! });
  t.same(ids(second.items), [204, 205, 302, 206].map((s) => recId(s)));
  const third = index.query({ limit: 4, cursor: second.nextCursor! });
  t.same(ids(third.items), [207, 208, 209].map((s) => recId(s)));
  t.equal(third.nextCursor, null);
  // a cursor stays usable and gives the same answer while nothing changes
  t.same(index.query({ limit: 4, cursor: first.nextCursor! }), second);
});

t.test('cursor encoding and malformed cursors', async (t) => {
  const c = encodeCursor({ t: 1717243200000, id: recId(7) });
  t.match(c, /^[A-Za-z0-9_-]+$/, 'base64url');
  t.same(decodeCursor(c), { t: 1717243200000, id: recId(7) });
  const index = new RecordingIndex('/nonexistent');
  const b64 = (s: string) => Buffer.from(s).toString('base64url');
  for (const bad of [
    '', 'not a cursor!', 'x'.repeat(300), b64('{"t":1'), b64('"just a string"'), b64('[1]'),
    b64(`[1.5,"${recId(7)}"]`), b64(`["1","${recId(7)}"]`), b64('[1,"../../etc/passwd"]'), b64(`[1,"${recId(7)}",3]`),
  ]) {
    t.throws(() => index.query({ limit: 1, cursor: bad }), InvalidCursorError, `rejects ${JSON.stringify(bad.slice(0, 30))}`);
  }
  t.throws(() => decodeCursor('%%%'), { name: 'InvalidCursorError', message: /pass the nextCursor/ });
});

t.test('add replaces by id and moves the entry between filter lists; remove cleans up', async (t) => {
  const index = new RecordingIndex('/nonexistent');
  const a = sidecarOf({ stream: 400, call: 40, cti: 'cti-X', emp: 'emp-X', startedAt: '2024-01-01T00:00:00Z' });
  index.add(a, '/r/a.json');
  index.add(sidecarOf({ stream: 401, call: 40, cti: 'cti-X', emp: 'emp-X', startedAt: '2024-01-01T00:00:01Z' }), '/r/b.json');
  const moved = { ...a, ctiSessionId: 'cti-Y', employeeId: null, startedAt: '2024-01-02T00:00:00Z' };
  index.add(moved, '/other/a.json');
  t.equal(index.size, 2);
  t.same(index.get(a.recordingId)!.sidecar, moved);
  t.equal(index.get(a.recordingId)!.sidecarPath, path.resolve('/other/a.json'));
  t.same(index.byCtiSession('cti-X').map((s) => s.recordingId), [recId(401)]);
  t.same(index.byCtiSession('cti-Y').map((s) => s.recordingId), [recId(400)]);
  t.same(ids(index.query({ limit: 10, employeeId: 'emp-X' }).items), [recId(401)]);
  t.same(ids(index.query({ limit: 10 }).items), [recId(401), recId(400)], 're-sorted by the new start');
  t.ok(index.remove(recId(401)));
  t.same(index.byCtiSession('cti-X'), []);
  t.same(ids(index.query({ limit: 10, callSid: callSid(40) }).items), [recId(400)]);
  t.ok(index.remove(recId(400)));
  t.equal(index.size, 0);
  t.same(index.query({ limit: 10, callSid: callSid(40) }), { items: [], nextCursor: null });
});

t.test('add refuses sidecars it cannot place', async (t) => {
  const index = new RecordingIndex('/nonexistent');
  const base = sidecarOf({ stream: 500, call: 50, startedAt: '2024-01-01T00:00:00Z' });
  t.throws(() => index.add({ ...base, recordingId: '../../x' }, '/r/x.json'), InvalidSidecarError);
  t.throws(() => index.add({ ...base, startedAt: 'soon' }, '/r/x.json'), /startedAt/);
  t.throws(() => index.add({ ...base, audioFile: '../../etc/passwd' }, '/r/x.json'), /audioFile/);
  t.throws(() => index.add({ ...base, audioFile: '.hidden.wav' }, '/r/x.json'), /audioFile/);
  t.equal(index.size, 0);
});

t.test('parseSidecar', async (t) => {
  const sc = sidecarOf({ stream: 600, call: 60, cti: 'c', emp: 'e', startedAt: '2024-01-01T00:00:00Z' });
  t.same(parseSidecar(JSON.stringify(sc), `${sc.recordingId}.json`), sc);
  t.throws(() => parseSidecar('null', `${sc.recordingId}.json`), /not a JSON object/);
  t.throws(() => parseSidecar(JSON.stringify({ ...sc, ctiSessionId: 5, encoding: 'flac' }), `${sc.recordingId}.json`), /ctiSessionId, .*encoding/);
  t.throws(() => parseSidecar(JSON.stringify({ ...sc, recordingId: 'x' }), 'x.json'), /recordingId/);
  t.throws(() => parseSidecar(JSON.stringify({ ...sc, audioFile: 'a.mp3' }), `${sc.recordingId}.json`), /audioFile/);
  t.throws(() => parseSidecar(JSON.stringify({ ...sc, audioFile: '.a.wav' }), `${sc.recordingId}.json`), /audioFile/);
  t.throws(() => parseSidecar(JSON.stringify({ ...sc, audioFile: 5 }), `${sc.recordingId}.json`), /audioFile/);
});
