// The importer's reader workers (reader-pool.ts, sidecar-reader.ts): sidecars are read and parsed
// on worker threads, the catalog written on the main thread in short transactions. A real SQLite
// file (and a real PostgreSQL for its import statements), real files, real worker threads.
import t, { type Test } from 'tap';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import { InvalidSidecarError, rowFields } from '../recorder/catalog/catalog.js';
import { DEFAULT_BATCH, importSidecars, RECONCILED_AT } from '../recorder/catalog/importer.js';
import { PgCatalog } from '../recorder/catalog/pg-catalog.js';
import { READER_RESOURCE_LIMITS, ReaderPoolError } from '../recorder/catalog/reader-pool.js';
import { SqliteCatalog } from '../recorder/catalog/sqlite-catalog.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { segmentPaths } from '../recorder/storage-layout.js';
import { startPostgres } from './fixtures/postgres.js';
import { ACCOUNT, hex32, recId, sidecarOf, writeRecording } from './fixtures/catalog-sidecars.js';

async function setup(t: Test): Promise<{ dir: string; catalog: SqliteCatalog }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'catalog-readers-'));
  const catalog = new SqliteCatalog(dir);
  await catalog.open();
  t.teardown(async () => {
    await catalog.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, catalog };
}

const listed = async (c: SqliteCatalog) => (await c.query({ limit: 1000 })).items.map((s) => s.recordingId).sort();

t.test('a sidecar that is not JSON, or not a sidecar, is counted and skipped; the others are imported', async (t) => {
  const { dir, catalog } = await setup(t);
  const good = Array.from({ length: 12 }, (_, i) => sidecarOf(i + 1));
  for (const s of good) await writeRecording(dir, s);
  const notJson = await writeRecording(dir, sidecarOf(50), '{"recordingId": "MZ');
  const empty = await writeRecording(dir, sidecarOf(51), '');
  const array = await writeRecording(dir, sidecarOf(52), '[]');
  const noCall = await writeRecording(dir, sidecarOf(53), JSON.stringify({ ...sidecarOf(53), callSid: 7 }));
  const bad: [string, Error][] = [];
  const r = await importSidecars({ catalog, recordingsDir: dir, batchSize: 5, readers: 2, onBadFile: (p, e) => bad.push([p, e]) });
  t.match(r, { ran: true, found: 16, done: 16, imported: 12, bad: 4, removed: 0, walked: true });
  t.same(bad.map(([p]) => p).sort(), [notJson, empty, array, noCall].sort());
  for (const [, e] of bad) t.type(e, InvalidSidecarError);
  const why = (p: string) => bad.find(([q]) => q === p)![1].message;
  t.match(why(notJson), /not JSON/);
  t.match(why(empty), /not JSON/);
  t.match(why(array), /not a JSON object/);
  t.match(why(noCall), /callSid/);
  t.same(await listed(catalog), good.map((s) => s.recordingId).sort());
  t.same((await catalog.get(recId(3)))!.sidecar, good[2], 'the row holds the sidecar as read');
  t.not(await catalog.getMeta(RECONCILED_AT), null);
});

t.test('a sidecar larger than the reader buffer (64 KB) is read whole', async (t) => {
  const { dir, catalog } = await setup(t);
  const big = sidecarOf(1, { customParameters: { note: 'x'.repeat(300_000), more: 'é'.repeat(1000) } });
  const p = await writeRecording(dir, big, JSON.stringify(big, null, 2));
  const small = sidecarOf(2);
  await writeRecording(dir, small);
  t.match(await importSidecars({ catalog, recordingsDir: dir }), { imported: 2, bad: 0 });
  t.same((await catalog.get(big.recordingId))!.sidecar, big);
  t.equal((await catalog.get(big.recordingId))!.sidecarPath, p);
  t.same((await catalog.get(small.recordingId))!.sidecar, small, 'the buffer grown for the big one reads the next one right');
});

t.test('a reader worker that dies mid-import is replaced and its batch read again: counts stay right', async (t) => {
  const { dir, catalog } = await setup(t);
  const all = Array.from({ length: 30 }, (_, i) => sidecarOf(i + 1));
  for (const s of all) await writeRecording(dir, s);
  let started = 0;
  const bad: string[] = [];
  const r = await importSidecars({
    catalog, recordingsDir: dir, batchSize: 4, readers: 2, onBadFile: (p) => bad.push(p),
    // the first worker is ended with its first batch in hand
    onReader: (w) => { if (started++ === 0) void w.terminate(); },
  });
  t.ok(started >= 3, `a replacement worker was started (${started} in all)`);
  t.same(bad, []);
  t.match(r, { found: 30, done: 30, imported: 30, bad: 0, removed: 0 });
  t.same(await listed(catalog), all.map((s) => s.recordingId).sort());
});

t.test('a batch that kills every worker: its sidecars are reported, nothing is removed, the next run finishes the job', async (t) => {
  const { dir, catalog } = await setup(t);
  const all = Array.from({ length: 6 }, (_, i) => sidecarOf(i + 1));
  const paths: string[] = [];
  for (const s of all) paths.push(await writeRecording(dir, s));
  t.match(await importSidecars({ catalog, recordingsDir: dir }), { imported: 6 });
  const reconciledAt = await catalog.getMeta(RECONCILED_AT);
  // one sidecar leaves the disk by hand, two are added
  await rm(paths[0]!);
  const added = [sidecarOf(7), sidecarOf(8)];
  const addedPaths: string[] = [];
  for (const s of added) addedPaths.push(await writeRecording(dir, s));
  const bad: [string, Error][] = [];
  let started = 0;
  const r = await importSidecars({
    catalog, recordingsDir: dir, readers: 1, onBadFile: (p, e) => bad.push([p, e]),
    onReader: (w) => { started++; void w.terminate(); },
  });
  t.equal(started, 2, 'a batch is tried on two workers, then given up');
  t.match(r, { ran: true, found: 7, done: 7, imported: 0, bad: 2, removed: 0 });
  t.same(bad.map(([p]) => p).sort(), addedPaths.sort());
  for (const [, e] of bad) {
    t.type(e, ReaderPoolError);
    t.match(e.message, /died 2 times/);
  }
  t.equal(await catalog.count(), 6, 'a run that could not read everything removes nothing');
  t.equal(await catalog.getMeta(RECONCILED_AT), reconciledAt, 'and does not count as a reconcile');
  t.match(await importSidecars({ catalog, recordingsDir: dir }), { found: 7, imported: 2, removed: 1, bad: 0 });
  t.same(await listed(catalog), [...all.slice(1), ...added].map((s) => s.recordingId).sort());
});

t.test('two sidecars claiming one recordingId in one batch: the first stays, the other is reported', async (t) => {
  const { dir, catalog } = await setup(t);
  const s = sidecarOf(1);
  const first = await writeRecording(dir, s);
  // the same id under another call directory
  const other = segmentPaths(dir, ACCOUNT, `CA${hex32(99)}`, new Date(s.startedAt), s.recordingId);
  await mkdir(path.dirname(other.sidecar), { recursive: true });
  await writeFile(other.audio, Buffer.alloc(66));
  await writeFile(other.sidecar, JSON.stringify({ ...s, callSid: `CA${hex32(99)}` }));
  const bad: [string, Error][] = [];
  const r = await importSidecars({ catalog, recordingsDir: dir, onBadFile: (p, e) => bad.push([p, e]) });
  t.match(r, { found: 2, imported: 1, bad: 1 });
  t.equal(bad.length, 1);
  t.match(bad[0]![1].message, /already catalogued/);
  const kept = (await catalog.get(s.recordingId))!;
  t.equal([first, other.sidecar].includes(kept.sidecarPath), true);
  t.equal(bad[0]![0] === kept.sidecarPath, false, 'the one reported is not the one listed');
});

t.test('insertRows writes in short transactions with the event loop free between them', async (t) => {
  const { dir, catalog } = await setup(t);
  const rows = Array.from({ length: 200 }, (_, i) => {
    const s = sidecarOf(i + 1);
    return rowFields(dir, s, segmentPaths(dir, ACCOUNT, s.callSid, new Date(s.startedAt), s.recordingId).sidecar);
  });
  catalog.sliceMs = 0; // every row its own transaction
  let ticks = 0;
  let on = true;
  const tick = () => { ticks++; if (on) setImmediate(tick); };
  setImmediate(tick);
  t.equal(await catalog.insertRows(rows, Date.now()), 200);
  on = false;
  t.ok(ticks >= 100, `the loop turned between the transactions (${ticks} turns for 200 rows)`);
  t.equal(await catalog.count(), 200);
  catalog.sliceMs = 10_000; // one transaction: the loop does not turn
  ticks = 0;
  on = true;
  setImmediate(tick);
  t.equal(await catalog.insertRows(rows, Date.now()), 200, 'unchanged rows count as listed');
  on = false;
  t.ok(ticks <= 2, `one transaction: a turn before it, none in between (${ticks})`);
});

t.test('PostgreSQL insertRows: statements of a bounded size, the event loop free between them; counts, tombstones, unchanged rows, reconcile', async (t) => {
  const server = await startPostgres(t);
  const dir = '/r';
  const catalog = new PgCatalog(dir, await server.createDatabase(), 2);
  await catalog.open();
  t.teardown(() => catalog.close());
  const rowOf = (s: RecordingSidecar) => rowFields(dir, s, segmentPaths(dir, ACCOUNT, s.callSid, new Date(s.startedAt), s.recordingId).sidecar);
  const rows = Array.from({ length: 200 }, (_, i) => rowOf(sidecarOf(i + 1)));
  // tombstoned before the import: the 150th row, in a late statement
  await catalog.remove(recId(150));
  const putAt = async (n: number) => (await catalog.pool.query<{ put_at: number }>('SELECT put_at FROM recordings WHERE recording_id = $1', [recId(n)])).rows[0]?.put_at;
  // the rows of every statement that marks rows seen, as PostgreSQL saw them (a statement trigger)
  await catalog.pool.query(`CREATE TABLE stmt_rows (at serial, n int);
    CREATE FUNCTION log_stmt() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO stmt_rows (n) SELECT count(*) FROM new_rows; RETURN NULL; END $$;
    CREATE TRIGGER log_stmt AFTER INSERT ON import_seen REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION log_stmt()`);
  const statements = async () => {
    const n = (await catalog.pool.query<{ n: number }>('SELECT n FROM stmt_rows ORDER BY at')).rows.map((r) => r.n);
    await catalog.pool.query('TRUNCATE stmt_rows, import_seen');
    return n;
  };
  t.equal(await catalog.insertRows(rows, 500), 199, 'the default bounds');
  t.same(await statements(), [200], '200 rows: one statement');
  const many = Array.from({ length: 600 }, (_, i) => rowOf(sidecarOf(i + 1001)));
  t.equal(await catalog.insertRows(many, 500), 600);
  t.same(await statements(), [250, 250, 100], `statements of at most ${catalog.chunkRows} rows`);
  await catalog.pool.query(`DELETE FROM recordings WHERE recording_id LIKE 'MZ%'`);

  catalog.chunkRows = 1; // every row its own statement
  let ticks = 0;
  let on = true;
  const tick = () => { ticks++; if (on) setImmediate(tick); };
  setImmediate(tick);
  t.equal(await catalog.insertRows(rows, 1000), 199, 'the tombstoned row is not listed');
  on = false;
  t.same(await statements(), rows.map(() => 1), 'every row its own statement');
  t.ok(ticks >= 200, `the loop turned between the statements (${ticks} turns for 200 rows)`);
  t.equal(await catalog.count(), 199, 'the kept counts (triggers) saw every statement');
  t.equal(await catalog.get(recId(150)), undefined);
  t.same((await catalog.get(recId(200)))!.sidecar, sidecarOf(200));

  // the byte bound: one big sidecar per statement, and chunks that split at other places than
  // before; rows unchanged since the first import are left as they are (put_at stays)
  catalog.chunkRows = 64;
  catalog.chunkBytes = 1;
  const big = sidecarOf(7, { customParameters: { note: 'x'.repeat(300_000) } });
  const again = rows.map((r, i) => (i === 6 ? rowOf(big) : r));
  t.equal(await catalog.insertRows(again, 2000), 199);
  t.same(await statements(), again.map(() => 1), 'a statement ends after the row that passes chunkBytes');
  catalog.chunkBytes = 100_000;
  t.equal(await catalog.insertRows(again.slice(0, 10), 2000), 10);
  t.same(await statements(), [7, 3], 'the big sidecar (the 7th row) ends its statement');
  t.equal(await putAt(6), 1000, 'an unchanged row is not rewritten');
  t.equal(await putAt(7), 2000, 'a changed one is');
  t.same((await catalog.get(recId(7)))!.sidecar, big);
  catalog.chunkBytes = 256 * 1024;
  t.equal(await catalog.insertRows(again.slice(0, 100), 3000), 100);
  t.same(await statements(), [7, 64, 29], 'the big sidecar passes 256 KB: its statement ends there; then 64 rows at most');
  t.equal(await putAt(50), 1000);

  // reconcile: every statement marked its rows seen; rows not in this import are removed
  await catalog.exclusive(async () => {
    t.equal(await catalog.insertRows(again.slice(0, 130), 4000), 130);
    t.equal(await catalog.removeUnseen(4000), 69, 'the 69 listed rows not imported this time are removed');
  });
  t.equal(await catalog.count(), 130);
  t.equal((await catalog.query({ limit: 1000, count: true })).total, 130);
});

t.test('memory bounds: batches of DEFAULT_BATCH sidecars by default, reader workers on a capped heap', async (t) => {
  const { dir, catalog } = await setup(t);
  t.equal(DEFAULT_BATCH, 1000);
  const n = 2 * DEFAULT_BATCH + 500;
  const all = Array.from({ length: n }, (_, i) => sidecarOf(i + 1));
  for (const s of all) await writeRecording(dir, s);
  const limits: (Worker['resourceLimits'] | undefined)[] = [];
  const done: number[] = [];
  const r = await importSidecars({
    catalog, recordingsDir: dir, readers: 1,
    onReader: (w) => { limits.push(w.resourceLimits); },
    onProgress: (p) => { if (done.at(-1) !== p.done) done.push(p.done); },
  });
  t.match(r, { found: n, done: n, imported: n, bad: 0 });
  t.same(done, [DEFAULT_BATCH, 2 * DEFAULT_BATCH, n], 'one batch of at most DEFAULT_BATCH sidecars at a time');
  t.equal(limits.length, 1);
  t.match(limits[0], { maxYoungGenerationSizeMb: READER_RESOURCE_LIMITS.maxYoungGenerationSizeMb, maxOldGenerationSizeMb: READER_RESOURCE_LIMITS.maxOldGenerationSizeMb });
  t.equal(READER_RESOURCE_LIMITS.maxYoungGenerationSizeMb, 8);
  t.equal(await catalog.count(), n);
});

t.test('a run stopped before its first batch (the walk ends early on the stop) removes nothing and is no reconcile', async (t) => {
  const { dir, catalog } = await setup(t);
  for (let i = 1; i <= 5; i++) await writeRecording(dir, sidecarOf(i));
  const listedBefore = sidecarOf(6); // its sidecar is not on disk: only a whole run may unlist it
  await catalog.put(listedBefore, path.join(dir, 'elsewhere.json'));
  const stop = new AbortController();
  stop.abort();
  const r = await importSidecars({ catalog, recordingsDir: dir, signal: stop.signal });
  t.match(r, { ran: true, imported: 0, removed: 0 });
  t.same(await listed(catalog), [listedBefore.recordingId]);
  t.equal(await catalog.getMeta(RECONCILED_AT), null);
});
