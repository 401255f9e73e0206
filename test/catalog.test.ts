import t from 'tap';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { decodeCursor, encodeCursor, InvalidCursorError, InvalidSidecarError, type Catalog, type RecordingQuery } from '../recorder/catalog/catalog.js';
import { parseSidecar } from '../recorder/catalog/parse-sidecar.js';
import { importSidecars } from '../recorder/catalog/importer.js';
import { migrateSqlite, SqliteCatalog } from '../recorder/catalog/sqlite-catalog.js';
import { SQLITE_MIGRATIONS } from '../recorder/catalog/sqlite-migrations.js';
import Database from 'better-sqlite3';
import { migratePg, PgCatalog } from '../recorder/catalog/pg-catalog.js';
import { PG_MIGRATIONS } from '../recorder/catalog/pg-migrations.js';
import { startPostgres } from './fixtures/postgres.js';
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
async function allPages(index: Catalog, q: Omit<RecordingQuery, 'cursor'>): Promise<{ pages: string[][]; flat: string[] }> {
  const pages: string[][] = [];
  let cursor: string | undefined;
  for (let guard = 0; guard < 1000; guard++) {
    const page = await index.query({ ...q, cursor });
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


type Make = (recordingsDir: string) => Promise<Catalog>;

/** The catalog's semantics, the same for every backend. */
export function catalogSuite(label: string, make: Make): void {
  t.test(`${label}: load: real layout, broken files reported and skipped, dot-folders and symlinks ignored`, async (t) => {
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
    const index = await make(dir);
    const n = (await importSidecars({ catalog: index, recordingsDir: dir, onBadFile: (p, err) => bad.push([p, err]) })).imported;
    t.equal(n, SPECS.length, 'every good recording catalogued exactly once');
    t.equal(await index.count(), SPECS.length);

    const badNames = bad.map(([p]) => path.relative(dir, p)).sort();
    const expectedBad = [90, 91, 92, 93, 95, 96].map((s) => path.relative(dir, path.join(callDir, `${recId(s)}.json`)));
    const firstOfDup = bad.find(([, e]) => /already catalogued/.test(e.message));
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

    const got = (await index.get(recId(2)))!;
    t.same(got.sidecar, good[2]);
    t.equal(got.sidecarPath, segmentPaths(dir, ACCOUNT, callSid(2), new Date(SPECS[2]!.startedAt), recId(2)).sidecar);
    t.equal(got.audioPath, got.sidecarPath.replace(/\.json$/, '.wav'));
    t.equal(await index.get(recId(97)), undefined, '.inprogress is skipped');

    // a second load over the same tree replaces instead of duplicating
    const again = await importSidecars({ catalog: index, recordingsDir: dir });
    t.equal(again.imported, 0, 'listed ones are not read again');
    t.equal(again.removed, 0);
    t.equal(await index.count(), SPECS.length);
    t.same(ids((await index.query({ limit: 100 })).items), [recId(5), recId(1), recId(2), recId(1, 1), recId(3), recId(4), recId(6)]);
    const fresh = await make(dir);
    await importSidecars({ catalog: fresh, recordingsDir: dir });
    t.same(await fresh.query({ limit: 100 }), await index.query({ limit: 100 }), 'a fresh load gives the same listing');
  });

  t.test(`${label}: load: missing root is empty, an unreadable root is reported`, async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'recidx-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const bad: string[] = [];
    const nope = path.join(dir, 'nope');
    t.equal((await importSidecars({ catalog: await make(nope), recordingsDir: nope, onBadFile: (p) => bad.push(p) })).imported, 0);
    t.same(bad, []);
    const file = path.join(dir, 'file');
    await writeFile(file, 'x');
    const c = await make(file + '-root');
    await c.put(sidecarOf(SPECS[0]!), path.join(file + '-root', 'a', `${recId(1)}.json`));
    const r = await importSidecars({ catalog: c, recordingsDir: file, onBadFile: (p) => bad.push(p) });
    t.equal(r.imported, 0);
    t.same(bad, [file]);
    t.equal(await c.count(), 1, 'an unreadable root removes nothing');
  });

  t.test(`${label}: ordering is (startedAt, recordingId) whatever the insertion order`, async (t) => {
    const index = await make('/r');
    const shuffled = [...SPECS].sort((a, b) => (a.stream * 7919) % 13 - (b.stream * 7919) % 13).reverse();
    for (const s of shuffled) await index.put(sidecarOf(s), `/r/${recId(s.stream, s.seg)}.json`);
    const expected = SPECS.map(sidecarOf)
      .sort((a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt) || (a.recordingId < b.recordingId ? -1 : 1))
      .map((s) => s.recordingId);
    t.same(ids((await index.query({ limit: 100 })).items), expected);
    t.same(expected.slice(0, 2), [recId(5), recId(1)]);
    // streams 3 and 4 start at the same instant written differently: tie broken by id
    t.same(expected.slice(4, 6), [recId(3), recId(4)]);
    t.equal((await index.get(recId(4)))!.audioPath, path.resolve(`/r/${recId(4)}.wav`));
  });

  t.test(`${label}: filters, alone and combined, use the right candidates`, async (t) => {
    const index = await make('/r');
    for (const s of SPECS) await index.put(sidecarOf(s), `/r/${recId(s.stream, s.seg)}.json`);
    const all = (await index.query({ limit: 100 })).items;
    const expect = (pred: (s: RecordingSidecar) => boolean) => ids(all.filter(pred));

    t.same(ids((await index.query({ limit: 100, callSid: callSid(1) })).items), [recId(1), recId(1, 1)]);
    t.same(ids((await index.query({ limit: 100, callSid: callSid(4) })).items), [recId(5), recId(4)]);
    t.same(ids((await index.query({ limit: 100, ctiSessionId: 'cti-A' })).items), [recId(1), recId(2), recId(1, 1)]);
    t.same(ids((await index.query({ limit: 100, employeeId: 'emp-1' })).items), expect((s) => s.employeeId === 'emp-1'));
    t.same(ids((await index.query({ limit: 100, employeeId: 'emp-2', ctiSessionId: 'cti-B' })).items), [recId(6)]);
    t.same(ids((await index.query({ limit: 100, employeeId: 'emp-1', ctiSessionId: 'cti-A', callSid: callSid(1) })).items), [recId(1), recId(1, 1)]);
    t.same(ids((await index.query({ limit: 100, employeeId: 'emp-1', callSid: callSid(2) })).items), [], 'disjoint filters');
    t.same(ids((await index.query({ limit: 100, ctiSessionId: 'nope' })).items), []);
    t.same(ids((await index.query({ limit: 100, callSid: callSid(999) })).items), []);

    // from inclusive, to exclusive
    const from = new Date('2024-03-01T10:30:00.000Z');
    const to = new Date('2024-03-02T09:00:00.000Z');
    t.same(ids((await index.query({ limit: 100, from, to })).items), [recId(2), recId(1, 1)]);
    t.same(ids((await index.query({ limit: 100, from: to })).items), expect((s) => Date.parse(s.startedAt) >= to.getTime()));
    t.same(ids((await index.query({ limit: 100, to: from })).items), [recId(5), recId(1)]);
    t.same(ids((await index.query({ limit: 100, from, to, employeeId: 'emp-1' })).items), [recId(1, 1)]);

    t.same((await index.byCtiSession('cti-A')).map((s) => s.recordingId), [recId(1), recId(2), recId(1, 1)]);
    t.same(await index.byCtiSession('unknown'), []);
    // every recording of any of the calls, in one query (a batch of CTI events); order not promised
    t.same(ids(await index.byCalls([callSid(1), callSid(4), callSid(999)])).sort(), [recId(1), recId(1, 1), recId(5), recId(4)].sort());
    t.same(ids(await index.byCalls([callSid(2), callSid(2)])), [recId(2)], 'a call named twice: its recordings once');
    t.same(await index.byCalls([]), []);
    t.same(await index.byCalls(['CA\' OR 1=1 --']), [], 'a call SID is a value, never SQL');
    await t.rejects(() => index.query({ limit: 0 }), RangeError);
    await t.rejects(() => index.query({ limit: 1.5 }), RangeError);
  });

  t.test(`${label}: paging walks everything once, with and without filters`, async (t) => {
    const index = await make('/r');
    const many: Spec[] = [];
    for (let i = 0; i < 57; i++) {
      // many share a start instant, so the id tie-break is exercised across page boundaries
      many.push({ stream: 100 + i, call: 10 + (i % 4), cti: `cti-${i % 3}`, emp: `emp-${i % 5}`, startedAt: new Date(Date.UTC(2024, 0, 1, 0, 0, Math.floor(i / 4))).toISOString() });
    }
    for (const s of many) await index.put(sidecarOf(s), `/r/${recId(s.stream)}.json`);
    const everything = ids((await index.query({ limit: 1000 })).items);
    t.equal(everything.length, 57);
    for (const limit of [1, 2, 5, 56, 57, 58]) {
      const { pages, flat } = await allPages(index, { limit });
      t.same(flat, everything, `limit ${limit}: no gaps, no duplicates`);
      t.ok(pages.every((p) => p.length <= limit && p.length > 0), `limit ${limit}: pages are full-or-last and never empty`);
      t.equal(pages.length, Math.ceil(57 / limit));
    }
    const filtered = ids((await index.query({ limit: 1000, ctiSessionId: 'cti-1', employeeId: 'emp-2' })).items);
    t.ok(filtered.length > 1);
    t.same((await allPages(index, { limit: 1, ctiSessionId: 'cti-1', employeeId: 'emp-2' })).flat, filtered);
    const from = new Date(Date.UTC(2024, 0, 1, 0, 0, 3));
    const to = new Date(Date.UTC(2024, 0, 1, 0, 0, 9));
    const window = ids((await index.query({ limit: 1000, from, to })).items);
    t.equal(window.length, 24);
    t.same((await allPages(index, { limit: 7, from, to })).flat, window);
  });

  t.test(`${label}: cursor is a position: adds and removes around it neither repeat nor skip`, async (t) => {
    const index = await make('/r');
    const at = (sec: number) => new Date(Date.UTC(2024, 5, 1, 12, 0, sec)).toISOString();
    for (let i = 0; i < 10; i++) await index.put(sidecarOf({ stream: 200 + i, call: 20, startedAt: at(i * 10) }), `/r/${i}.json`);
    const first = await index.query({ limit: 4 });
    t.same(ids(first.items), [200, 201, 202, 203].map((s) => recId(s)));
    t.type(first.nextCursor, 'string');

    // added behind the cursor (earlier start): must not shift the next page
    await index.put(sidecarOf({ stream: 300, call: 20, startedAt: at(5) }), '/r/300.json');
    await index.put(sidecarOf({ stream: 301, call: 20, startedAt: at(0) }), '/r/301.json');
    // the item the cursor points at disappears
    t.equal(await index.remove(recId(203)), true);
    t.equal(await index.remove(recId(203)), false);
    // added ahead of the cursor: shows up later
    await index.put(sidecarOf({ stream: 302, call: 20, startedAt: at(55) }), '/r/302.json');

    const second = await index.query({ limit: 4, cursor: first.nextCursor! });
    t.same(ids(second.items), [204, 205, 302, 206].map((s) => recId(s)));
    const third = await index.query({ limit: 4, cursor: second.nextCursor! });
    t.same(ids(third.items), [207, 208, 209].map((s) => recId(s)));
    t.equal(third.nextCursor, null);
    // a cursor stays usable and gives the same answer while nothing changes
    t.same(await index.query({ limit: 4, cursor: first.nextCursor! }), second);
  });

  t.test(`${label}: cursor encoding and malformed cursors`, async (t) => {
    const c = encodeCursor({ t: 1717243200000, id: recId(7) });
    t.match(c, /^[A-Za-z0-9_-]+$/, 'base64url');
    t.same(decodeCursor(c), { t: 1717243200000, id: recId(7) });
    const index = await make('/r');
    const b64 = (s: string) => Buffer.from(s).toString('base64url');
    for (const bad of [
      '', 'not a cursor!', 'x'.repeat(300), b64('{"t":1'), b64('"just a string"'), b64('[1]'),
      b64(`[1.5,"${recId(7)}"]`), b64(`["1","${recId(7)}"]`), b64('[1,"../../etc/passwd"]'), b64(`[1,"${recId(7)}",3]`),
    ]) {
      await t.rejects(() => index.query({ limit: 1, cursor: bad }), InvalidCursorError, `rejects ${JSON.stringify(bad.slice(0, 30))}`);
    }
    t.throws(() => decodeCursor('%%%'), { name: 'InvalidCursorError', message: /pass the nextCursor/ });
  });

  t.test(`${label}: add replaces by id and moves the entry between filter lists; remove cleans up`, async (t) => {
    const index = await make('/r');
    const a = sidecarOf({ stream: 400, call: 40, cti: 'cti-X', emp: 'emp-X', startedAt: '2024-01-01T00:00:00Z' });
    await index.put(a, '/r/a.json');
    await index.put(sidecarOf({ stream: 401, call: 40, cti: 'cti-X', emp: 'emp-X', startedAt: '2024-01-01T00:00:01Z' }), '/r/b.json');
    const moved = { ...a, ctiSessionId: 'cti-Y', employeeId: null, startedAt: '2024-01-02T00:00:00Z' };
    await index.put(moved, '/r/other/a.json');
    t.equal(await index.count(), 2);
    t.same((await index.get(a.recordingId))!.sidecar, moved);
    t.equal((await index.get(a.recordingId))!.sidecarPath, path.resolve('/r/other/a.json'));
    t.same((await index.byCtiSession('cti-X')).map((s) => s.recordingId), [recId(401)]);
    t.same((await index.byCtiSession('cti-Y')).map((s) => s.recordingId), [recId(400)]);
    t.same(ids((await index.query({ limit: 10, employeeId: 'emp-X' })).items), [recId(401)]);
    t.same(ids((await index.query({ limit: 10 })).items), [recId(401), recId(400)], 're-sorted by the new start');
    t.ok(await index.remove(recId(401)));
    t.same(await index.byCtiSession('cti-X'), []);
    t.same(ids((await index.query({ limit: 10, callSid: callSid(40) })).items), [recId(400)]);
    t.ok(await index.remove(recId(400)));
    t.equal(await index.count(), 0);
    t.same(await index.query({ limit: 10, callSid: callSid(40) }), { items: [], nextCursor: null });
  });

  t.test(`${label}: add refuses sidecars it cannot place`, async (t) => {
    const index = await make('/r');
    const base = sidecarOf({ stream: 500, call: 50, startedAt: '2024-01-01T00:00:00Z' });
    await t.rejects(() => index.put({ ...base, recordingId: '../../x' }, '/r/x.json'), InvalidSidecarError);
    await t.rejects(() => index.put({ ...base, startedAt: 'soon' }, '/r/x.json'), /startedAt/);
    await t.rejects(() => index.put({ ...base, audioFile: '../../etc/passwd' }, '/r/x.json'), /audioFile/);
    await t.rejects(() => index.put({ ...base, audioFile: '.hidden.wav' }, '/r/x.json'), /audioFile/);
    t.equal(await index.count(), 0);
  });

  t.test(`${label}: new filters (accountSid, closeReason, minimum duration) and the total count`, async (t) => {
    const index = await make('/r');
    const OTHER = 'AC' + '0'.repeat(31) + '2';
    const specs = [
      { ...sidecarOf({ stream: 700, call: 70, startedAt: '2024-04-01T00:00:00Z' }), durationMs: 500, closeReason: 'hangup' as const },
      { ...sidecarOf({ stream: 701, call: 70, startedAt: '2024-04-01T00:00:01Z' }), durationMs: 5000, closeReason: 'stop' as const },
      { ...sidecarOf({ stream: 702, call: 71, startedAt: '2024-04-01T00:00:02Z' }), accountSid: OTHER, durationMs: 9000, closeReason: 'hangup' as const },
      { ...sidecarOf({ stream: 703, call: 71, startedAt: '2024-04-01T00:00:03Z' }), accountSid: OTHER, durationMs: 100, closeReason: 'idle' as const },
    ];
    for (const s of specs) await index.put(s, `/r/${s.recordingId}.json`);
    t.same(ids((await index.query({ limit: 10, accountSid: OTHER })).items), [recId(702), recId(703)]);
    t.same(ids((await index.query({ limit: 10, closeReason: 'hangup' })).items), [recId(700), recId(702)]);
    t.same(ids((await index.query({ limit: 10, minDurationMs: 5000 })).items), [recId(701), recId(702)], 'minimum is inclusive');
    t.same(ids((await index.query({ limit: 10, minDurationMs: 5000, accountSid: ACCOUNT })).items), [recId(701)]);
    t.same(ids((await index.query({ limit: 10, closeReason: 'rotate' })).items), []);
    const counted = await index.query({ limit: 1, count: true, closeReason: 'hangup' });
    t.equal(counted.total, 2, 'total counts every page');
    t.equal(counted.items.length, 1);
    t.equal((await index.query({ limit: 1, count: true, cursor: counted.nextCursor! })).total, 4, 'the total ignores the cursor');
    t.notOk('total' in (await index.query({ limit: 1 })), 'no total unless asked');
  });

  t.test(`${label}: the kept counts (total, per account) follow every insert, replacement, move and removal`, async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'catalog-count-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const index = await make(dir);
    const OTHER = 'AC' + '0'.repeat(31) + '3';
    // what count(*) over the rows says, asked through a filter the kept counts cannot answer
    const counted = async (q: Omit<RecordingQuery, 'limit' | 'count'> = {}) =>
      (await index.query({ ...q, minDurationMs: 0, limit: 1, count: true })).total;
    const check = async (total: number, mine: number, other: number, why: string) => {
      t.equal(await index.count(), total, `${why}: count()`);
      t.equal((await index.query({ limit: 1, count: true })).total, total, `${why}: unfiltered total`);
      t.equal(await counted(), total, `${why}: the kept total is what count(*) says`);
      t.equal((await index.query({ limit: 1, count: true, accountSid: ACCOUNT })).total, mine, `${why}: one account`);
      t.equal((await index.query({ limit: 1, count: true, accountSid: OTHER })).total, other, `${why}: the other account`);
      t.equal(await counted({ accountSid: OTHER }), other, `${why}: the other account's kept count is what count(*) says`);
    };
    await check(0, 0, 0, 'empty');
    const a = sidecarOf({ stream: 900, call: 90, startedAt: '2024-06-01T00:00:00Z' });
    const b = sidecarOf({ stream: 901, call: 90, startedAt: '2024-06-01T00:00:01Z' });
    await index.put(a, `${dir}/${a.recordingId}.json`);
    await index.put(b, `${dir}/${b.recordingId}.json`);
    await check(2, 2, 0, 'two put');
    await index.put(a, `${dir}/${a.recordingId}.json`);
    await check(2, 2, 0, 'a put replacing a listed row');
    await index.put({ ...b, accountSid: OTHER }, `${dir}/${b.recordingId}.json`);
    await check(2, 1, 1, 'a replacement moving a row to another account');
    t.ok(await index.update({ ...b, accountSid: ACCOUNT }));
    await check(2, 2, 0, 'an update moving it back');
    t.ok(await index.remove(a.recordingId));
    t.notOk(await index.remove(a.recordingId));
    await check(1, 1, 0, 'a removal (twice)');
    await index.put(a, `${dir}/${a.recordingId}.json`);
    await check(1, 1, 0, 'a tombstoned put');
    // batches from the importer, and the reconcile's removal of rows whose sidecar left
    const batch = [902, 903, 904].map((n) => sidecarOf({ stream: n, call: 91, startedAt: '2024-06-02T00:00:00Z' }));
    const paths = [];
    for (const s of batch) paths.push(await writeRecording(dir, { ...s, accountSid: OTHER }));
    t.match(await importSidecars({ catalog: index, recordingsDir: dir }), { found: 3, imported: 3, removed: 1 });
    await check(3, 0, 3, 'an import of three, the row without a sidecar removed');
    await rm(paths[0]!);
    t.match(await importSidecars({ catalog: index, recordingsDir: dir, reread: true }), { found: 2, imported: 2, removed: 1 });
    await check(2, 0, 2, 'a rebuild over two unchanged sidecars, removing one');
    // a sidecar changed on disk: the rebuild rewrites its row (the unchanged one is left as it is)
    await writeFile(paths[1]!, JSON.stringify({ ...batch[1]!, accountSid: ACCOUNT, employeeId: 'emp-moved' }));
    t.match(await importSidecars({ catalog: index, recordingsDir: dir, reread: true }), { found: 2, imported: 2, removed: 0 });
    await check(2, 1, 1, 'a rebuild after a sidecar moved to another account');
    t.same(ids((await index.query({ limit: 10, employeeId: 'emp-moved' })).items), [batch[1]!.recordingId]);
  });

  t.test(`${label}: a removed recording never comes back (tombstone), update never inserts`, async (t) => {
    const index = await make('/r');
    const a = sidecarOf({ stream: 800, call: 80, emp: 'emp-old', startedAt: '2024-05-01T00:00:00Z' });
    await index.put(a, `/r/${a.recordingId}.json`);
    t.ok(await index.update({ ...a, employeeId: 'emp-new' }));
    t.equal((await index.get(a.recordingId))!.sidecar.employeeId, 'emp-new');
    t.equal((await index.get(a.recordingId))!.sidecarPath, path.resolve(`/r/${a.recordingId}.json`), 'update keeps the path');
    t.ok(await index.remove(a.recordingId));
    // an attribution arriving after the deletion (CTI, TaskRouter, Kinesis): UPDATE only
    t.equal(await index.update({ ...a, employeeId: 'emp-late' }), false);
    // a late `published` announcement, or an import that read the sidecar before it went
    await index.put(a, `/r/${a.recordingId}.json`);
    t.equal(await index.insertBatch([{ sidecar: a, sidecarPath: `/r/${a.recordingId}.json` }], await index.clock()), 0);
    t.equal(await index.get(a.recordingId), undefined, 'still not listed');
    t.same((await index.query({ limit: 10, employeeId: 'emp-late' })).items, []);
    const b = sidecarOf({ stream: 801, call: 80, startedAt: '2024-05-01T00:00:01Z' });
    t.equal(await index.update(b), false, 'never listed: not inserted by an update');
    t.equal(await index.count(), 0);
    // once the tombstone expires, the disk wins again
    t.equal(await index.pruneTombstones(Date.now() + 1000), 1);
    await index.put(a, `/r/${a.recordingId}.json`);
    t.ok(await index.get(a.recordingId));
  });

  t.test(`${label}: reconcile notices sidecars added and removed by hand; pending deletions are not listed`, async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'catalog-rec-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const index = await make(dir);
    const [s1, s2, s3] = [SPECS[0]!, SPECS[2]!, SPECS[3]!].map(sidecarOf) as [RecordingSidecar, RecordingSidecar, RecordingSidecar];
    const p1 = await writeRecording(dir, s1);
    await writeRecording(dir, s2);
    const first = await importSidecars({ catalog: index, recordingsDir: dir, batchSize: 1 });
    t.match(first, { ran: true, found: 2, imported: 2, removed: 0, walked: true });
    await rm(p1);
    await writeRecording(dir, s3);
    const second = await importSidecars({ catalog: index, recordingsDir: dir });
    t.match(second, { found: 2, imported: 1, removed: 1 });
    t.same(ids((await index.query({ limit: 10 })).items), [s2.recordingId, s3.recordingId]);
    // published while a reconcile runs (put after its mark): not removed by it
    const s4 = sidecarOf(SPECS[6]!);
    const p4 = await writeRecording(dir, s4);
    await rm(p4);
    await index.put(s4, p4);
    // the next run's mark must come after the put (ms clock): rows put at or after it survive
    const putAt = Date.now();
    while (Date.now() <= putAt) await new Promise((r) => setImmediate(r));
    t.equal((await importSidecars({ catalog: index, recordingsDir: dir })).removed, 1, 'its sidecar is gone: removed');
    // a deletion left unfinished by the previous run: never imported
    const s5 = sidecarOf(SPECS[5]!);
    await writeRecording(dir, s5);
    const r = await importSidecars({ catalog: index, recordingsDir: dir, pendingDeletions: async () => [s5.recordingId] });
    t.equal(r.imported, 0);
    t.equal(await index.get(s5.recordingId), undefined);
    // retention's query: oldest first, per account or all but some
    t.same(ids(await index.startedBefore(new Date('2024-03-02T00:00:00Z'), null, [], 10)), [s2.recordingId]);
    t.same(ids(await index.startedBefore(new Date('2030-01-01T00:00:00Z'), ACCOUNT, [], 10)), [s2.recordingId, s3.recordingId]);
    t.same(await index.startedBefore(new Date('2030-01-01T00:00:00Z'), null, [ACCOUNT], 10), []);
  });
}

const opened: Catalog[] = [];
const dbDirs: string[] = [];
t.teardown(async () => {
  for (const c of opened) await c.close();
  for (const d of dbDirs) await rm(d, { recursive: true, force: true });
});
/** A real SQLite file per catalog, outside the recordings tree. */
const makeSqlite: Make = async (recordingsDir) => {
  const d = await mkdtemp(path.join(os.tmpdir(), 'catalog-db-'));
  dbDirs.push(d);
  const c = new SqliteCatalog(recordingsDir, path.join(d, 'catalog.sqlite'));
  await c.open();
  opened.push(c);
  return c;
};
catalogSuite('sqlite', makeSqlite);

t.test('sqlite: migrations are versioned, run once, and a newer schema is refused', async (t) => {
  const d = await mkdtemp(path.join(os.tmpdir(), 'catalog-mig-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  const db = new Database(path.join(d, 'c.sqlite'));
  t.teardown(() => db.close());
  t.same(migrateSqlite(db), SQLITE_MIGRATIONS.map((m) => m.version));
  t.same(migrateSqlite(db), [], 'nothing twice');
  const next = { version: SQLITE_MIGRATIONS.length + 1, name: 'test step', sql: 'CREATE TABLE extra (x INTEGER)' };
  t.same(migrateSqlite(db, [...SQLITE_MIGRATIONS, next]), [next.version], 'a new step runs at the next open');
  t.throws(() => migrateSqlite(db), /newer than this gateway knows/);
  const c = new SqliteCatalog('/r', path.join(d, 'c.sqlite'));
  await t.rejects(c.open(), /newer than this gateway knows/, 'opening refuses it too');
  await c.close();
  const fresh = new SqliteCatalog('/r', path.join(d, 'fresh.sqlite'));
  await fresh.open();
  t.equal(fresh.db.pragma('journal_mode', { simple: true }), 'wal', 'WAL mode');
  t.same(fresh.db.prepare('SELECT version FROM schema_migrations').pluck().all(), SQLITE_MIGRATIONS.map((m) => m.version));
  await fresh.close();
});

t.test('sqlite: the counts migration counts the rows a catalog already holds', async (t) => {
  const d = await mkdtemp(path.join(os.tmpdir(), 'catalog-mig2-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  const db = new Database(path.join(d, 'c.sqlite'));
  t.teardown(() => db.close());
  migrateSqlite(db, SQLITE_MIGRATIONS.filter((m) => m.version === 1));
  const ins = db.prepare(`INSERT INTO recordings (recording_id, account_sid, call_sid, started_ms, duration_ms, rel_path, sidecar, put_at)
    VALUES (?, ?, 'CA1', 0, 0, 'x', '{}', 0)`);
  for (let i = 0; i < 5; i++) ins.run(recId(i), i < 3 ? ACCOUNT : 'AC2');
  migrateSqlite(db);
  t.same(db.prepare('SELECT account_sid, n FROM recording_counts ORDER BY account_sid').all(), [{ account_sid: ACCOUNT, n: 3 }, { account_sid: 'AC2', n: 2 }]);
});

t.test('sqlite: the reconcile unlists what it did not see across many slices of the catalog, sparing rows put meanwhile', async (t) => {
  const d = await mkdtemp(path.join(os.tmpdir(), 'catalog-slices-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  const c = new SqliteCatalog('/r', path.join(d, 'c.sqlite'));
  await c.open();
  t.teardown(() => c.close());
  // more rows than three slices of the removal (20 000 each), many at one start instant
  const N = 45_000;
  const at = (i: number) => new Date(Date.UTC(2024, 0, 1) + Math.floor(i / 7) * 1000).toISOString();
  const rows = Array.from({ length: N }, (_, i) => {
    const sidecar = sidecarOf({ stream: 10_000 + i, call: i, startedAt: at(i) });
    return { sidecar, sidecarPath: `/r/${sidecar.recordingId}.json` };
  });
  const first = await c.clock();
  t.equal(await c.exclusive(() => c.insertBatch(rows, first)), N);
  while (Date.now() <= first) await new Promise((r) => setImmediate(r));
  const kept = new Set<string>();
  const removed = await c.exclusive(async () => {
    const mark = await c.clock();
    // a run that finds every third recording on disk, and one recording published meanwhile
    const found = rows.filter((_, i) => i % 3 === 0).map((r) => r.sidecar.recordingId);
    for (const id of found) kept.add(id);
    for (let i = 0; i < found.length; i += 2000) t.equal((await c.markSeen(found.slice(i, i + 2000), mark)).size, Math.min(2000, found.length - i));
    await c.put(rows[1]!.sidecar, rows[1]!.sidecarPath);
    kept.add(rows[1]!.sidecar.recordingId);
    return c.removeUnseen(mark);
  });
  t.equal(removed, N - kept.size, 'every row not seen and put before the run');
  t.equal(await c.count(), kept.size);
  const listed = c.db.prepare('SELECT recording_id FROM recordings').pluck().all() as string[];
  t.same(new Set(listed), kept);
  // the next run starts with nothing marked: what it does not find goes
  const now = Date.now();
  while (Date.now() <= now) await new Promise((r) => setImmediate(r));
  t.equal(await c.exclusive(async () => c.removeUnseen(await c.clock())), kept.size);
  t.equal(await c.count(), 0);
});

t.test('sqlite: an import that fills the catalog leaves statistics for the query planner', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'catalog-stat-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const c = await makeSqlite(dir);
  const stats = () => (c as SqliteCatalog).db.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").pluck().get();
  t.equal(stats(), 0, 'none before');
  for (const s of SPECS.slice(0, 3)) await writeRecording(dir, sidecarOf(s));
  t.match(await importSidecars({ catalog: c, recordingsDir: dir }), { imported: 3 });
  t.equal(stats(), 1);
  t.ok((c as SqliteCatalog).db.prepare("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'recordings'").pluck().get() as number > 0, 'the recordings table analysed');
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

// The same semantics on a real PostgreSQL (one cluster for this file, a database per catalog).
const pgReady = startPostgres(t);
const makePg: Make = async (recordingsDir) => {
  const server = await pgReady;
  const c = new PgCatalog(recordingsDir, await server.createDatabase());
  await c.open();
  opened.push(c);
  return c;
};
catalogSuite('postgres', makePg);

t.test('postgres: migrations are versioned and run once, also when nodes open together', async (t) => {
  const server = await pgReady;
  const url = await server.createDatabase();
  const nodes = [0, 1, 2].map(() => new PgCatalog('/r', url, 2));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  await Promise.all(nodes.map((n) => n.open()));
  const versions = await nodes[0]!.pool.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version');
  t.same(versions.rows.map((r) => r.version), PG_MIGRATIONS.map((m) => m.version), 'each step once');
  t.same(await migratePg(nodes[1]!.pool), [], 'nothing twice');
  const next = { version: PG_MIGRATIONS.length + 1, name: 'test step', sql: 'CREATE TABLE extra (x integer)' };
  t.same(await migratePg(nodes[1]!.pool, [...PG_MIGRATIONS, next]), [next.version]);
  await t.rejects(migratePg(nodes[2]!.pool), /newer than this gateway knows/);
});

t.test('postgres: the counts migration counts the rows a catalog already holds', async (t) => {
  const server = await pgReady;
  const c = new PgCatalog('/r', await server.createDatabase(), 2);
  t.teardown(() => c.close());
  await migratePg(c.pool, PG_MIGRATIONS.filter((m) => m.version === 1));
  for (let i = 0; i < 5; i++) {
    await c.pool.query(`INSERT INTO recordings (recording_id, account_sid, call_sid, started_ms, duration_ms, rel_path, sidecar, put_at)
      VALUES ($1, $2, 'CA1', 0, 0, 'x', '{}', 0)`, [recId(i), i < 3 ? ACCOUNT : 'AC2']);
  }
  await c.open();
  t.same((await c.pool.query('SELECT account_sid, n FROM recording_counts ORDER BY account_sid')).rows, [{ account_sid: ACCOUNT, n: 3 }, { account_sid: 'AC2', n: 2 }]);
  t.equal(await c.count(), 5);
});

t.test('postgres: one catalog for every node: a put on one is listed by the others at once', async (t) => {
  const server = await pgReady;
  const url = await server.createDatabase();
  const [a, b] = [new PgCatalog('/r', url, 2), new PgCatalog('/mnt/other-mount', url, 2)];
  t.teardown(() => Promise.all([a.close(), b.close()]));
  await a.open();
  await b.open();
  const s = sidecarOf(SPECS[0]!);
  await a.put(s, `/r/x/${s.recordingId}.json`);
  const seen = await b.get(s.recordingId);
  t.same(seen?.sidecar, s);
  t.equal(seen?.sidecarPath, `/mnt/other-mount/x/${s.recordingId}.json`, 'paths are relative to each node\'s RECORDINGS_DIR');
  await b.remove(s.recordingId);
  t.equal(await a.get(s.recordingId), undefined);
  await a.put(s, `/r/x/${s.recordingId}.json`);
  t.equal(await b.count(), 0, 'the tombstone is shared too');
});
