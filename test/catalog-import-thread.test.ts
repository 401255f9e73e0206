// The catalog's background import runs on a thread of its own (import-thread.ts, import-worker.ts)
// with its own connection to the node's catalog: real SQLite files and a real PostgreSQL, real
// sidecars on disk, real worker threads. What the main thread's catalog lists is what counts.
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { threadId, type Worker } from 'node:worker_threads';
import type { Catalog } from '../recorder/catalog/catalog.js';
import { CatalogSync } from '../recorder/catalog/catalog-sync.js';
import { IMPORT_RESOURCE_LIMITS } from '../recorder/catalog/import-thread.js';
import { RECONCILED_AT } from '../recorder/catalog/importer.js';
import { openCatalog, type CatalogSettings } from '../recorder/catalog/open-catalog.js';
import { recId, sidecarOf, writeRecording } from './fixtures/catalog-sidecars.js';
import { startPostgres } from './fixtures/postgres.js';

interface Logged { level: string; o: Record<string, unknown>; msg: string }

function logCollector(): { log: CatalogSyncLog; lines: Logged[] } {
  const lines: Logged[] = [];
  const at = (level: string) => (o: object, msg: string) => { lines.push({ level, o: o as Record<string, unknown>, msg }); };
  return { log: { info: at('info'), warn: at('warn'), error: at('error') }, lines };
}
type CatalogSyncLog = ConstructorParameters<typeof CatalogSync>[0]['log'];

async function setup(t: Test, databaseUrl: string | null = null): Promise<{ dir: string; settings: CatalogSettings; catalog: Catalog }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'catalog-thread-'));
  const settings: CatalogSettings = { recordingsDir: dir, databaseUrl, clusterNodeId: null };
  const catalog = await openCatalog(settings);
  t.teardown(async () => {
    await catalog.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, settings, catalog };
}

const listed = async (c: Catalog) => (await c.query({ limit: 1000 })).items.map((s) => s.recordingId).sort();

t.test('the import runs on a thread of its own with a capped heap; the main thread lists what it wrote', async (t) => {
  const { dir, settings, catalog } = await setup(t);
  const all = Array.from({ length: 40 }, (_, i) => sidecarOf(i + 1));
  for (const s of all) await writeRecording(dir, s);
  const workers: Worker[] = [];
  const { log, lines } = logCollector();
  const sync = new CatalogSync({
    catalog, settings, pendingDeletions: async () => [], log, logEveryMs: 0,
    onWorker: (w) => { workers.push(w); },
  });
  await sync.init();
  t.equal(sync.complete, false);
  t.match(sync.notReadyReason(), /importing/);
  await sync.reconcile();
  t.equal(workers.length, 1, 'one thread for the run');
  t.not(workers[0]!.threadId, threadId, 'not the main thread');
  t.match(workers[0]!.resourceLimits, {
    maxOldGenerationSizeMb: IMPORT_RESOURCE_LIMITS.maxOldGenerationSizeMb,
    maxYoungGenerationSizeMb: IMPORT_RESOURCE_LIMITS.maxYoungGenerationSizeMb,
  });
  t.equal(sync.complete, true);
  t.equal(sync.notReadyReason(), null);
  t.match(sync.lastResult, { ran: true, found: 40, done: 40, imported: 40, removed: 0, bad: 0 });
  t.same(await listed(catalog), all.map((s) => s.recordingId).sort(), 'every sidecar listed by the main connection');
  t.not(await catalog.getMeta(RECONCILED_AT), null);
  t.match(sync.progress, { found: 40, done: 40, walked: true });
  t.ok(lines.some((l) => l.msg === 'catalog reconciled with RECORDINGS_DIR' && l.o.imported === 40), 'the run is logged with its figures');
});

t.test('an unreadable sidecar is logged with its path and skipped; the others are listed', async (t) => {
  const { dir, settings, catalog } = await setup(t);
  const good = [sidecarOf(1), sidecarOf(2)];
  for (const s of good) await writeRecording(dir, s);
  const broken = await writeRecording(dir, sidecarOf(3), '{ not json');
  const { log, lines } = logCollector();
  const sync = new CatalogSync({ catalog, settings, pendingDeletions: async () => [], log });
  await sync.reconcile();
  t.same(await listed(catalog), good.map((s) => s.recordingId).sort());
  const warned = lines.filter((l) => l.level === 'warn');
  t.equal(warned.length, 1);
  t.match(warned[0], { msg: 'skipping unreadable sidecar', o: { file: broken, err: /./ } });
  t.match(sync.lastResult, { imported: 2, bad: 1 });
});

t.test('the import thread dying mid-run: the run fails and is logged, nothing is removed, the next reconcile completes', async (t) => {
  const { dir, settings, catalog } = await setup(t);
  const all = Array.from({ length: 30 }, (_, i) => sidecarOf(i + 1));
  const paths: string[] = [];
  for (const s of all) paths.push(await writeRecording(dir, s));
  // listed before the run: a failed run must not unlist it
  await catalog.put(all[0]!, paths[0]!);
  const { log, lines } = logCollector();
  let started = 0;
  const sync = new CatalogSync({
    catalog, settings, pendingDeletions: async () => [], log,
    // the first thread is ended as soon as it runs
    onWorker: (w) => { if (started++ === 0) w.once('online', () => void w.terminate()); },
  });
  await sync.reconcile();
  t.equal(sync.complete, false, 'a failed run does not make the catalog complete');
  const failed = lines.find((l) => l.level === 'error');
  t.match(failed, { msg: /catalog import failed; the next reconcile tries again/ });
  t.match(String((failed?.o.err as Error | undefined)?.message), /import thread/);
  t.ok((await listed(catalog)).includes(all[0]!.recordingId), 'what was listed stays listed');
  await sync.reconcile();
  t.equal(started, 2);
  t.equal(sync.complete, true);
  t.same(await listed(catalog), all.map((s) => s.recordingId).sort());
});

t.test('stop() during a run: the thread reads nothing more, removes nothing and ends; a later start finishes the job', async (t) => {
  const { dir, settings, catalog } = await setup(t);
  const n = 2500;
  for (let i = 1; i <= n; i++) await writeRecording(dir, sidecarOf(i));
  const stale = sidecarOf(n + 1); // listed, its sidecar gone: only a whole run may unlist it
  await catalog.put(stale, path.join(dir, 'gone.json'));
  const { log } = logCollector();
  let stopping: Promise<void> | undefined;
  const stopped = new CatalogSync({
    catalog, settings, pendingDeletions: async () => [], log,
    // the stop is on its way before the thread has run a line: it finds it waiting at its first
    // turn of the loop, before the walk has filled a batch
    onWorker: () => { stopping = stopped.stop(); },
  });
  await stopped.reconcile();
  await stopping;
  t.equal(stopped.complete, false);
  t.match(stopped.lastResult, { ran: true, imported: 0, removed: 0 });
  t.same(await listed(catalog), [stale.recordingId], 'a stopped run removes nothing and adds nothing');
  await stopped.reconcile();
  t.match(stopped.lastResult, { imported: 0 }, 'a stopped sync starts no more runs');
  const next = new CatalogSync({ catalog, settings, pendingDeletions: async () => [], log });
  await next.reconcile();
  t.equal(next.complete, true);
  t.match(next.lastResult, { found: n, done: n, imported: n, removed: 1 });
  t.equal(await catalog.count(), n);
});

t.test('main-thread writes during an import: a recording deleted meanwhile stays deleted, one published meanwhile stays listed', async (t) => {
  const { dir, settings, catalog } = await setup(t);
  const n = 3000;
  for (let i = 1; i <= n; i++) await writeRecording(dir, sidecarOf(i));
  const deleted = recId(n);
  const published = sidecarOf(n + 1);
  const { log } = logCollector();
  let wrote: Promise<void> | undefined;
  const sync = new CatalogSync({
    catalog, settings, pendingDeletions: async () => [], log,
    onWorker: (w) => w.on('message', (m: { type: string }) => {
      if (m.type !== 'progress' || wrote) return;
      // while the thread goes on: the main connection deletes one recording the import has not
      // reached (the deletion tombstones it) and publishes one whose files are written now
      wrote = (async () => {
        await catalog.remove(deleted);
        await catalog.put(published, await writeRecording(dir, published));
      })();
    }),
  });
  await sync.reconcile();
  await wrote;
  t.equal(sync.complete, true);
  t.equal(await catalog.get(deleted), undefined, 'the tombstoned recording is not listed again');
  t.ok(await catalog.get(published.recordingId), 'the recording published during the run stays listed');
  t.equal(await catalog.count(), n, `${n} on disk, one of them deleted, one published`);
});

t.test('PostgreSQL: the import thread opens its own pool on DATABASE_URL', async (t) => {
  const server = await startPostgres(t);
  const { dir, settings, catalog } = await setup(t, await server.createDatabase());
  const all = Array.from({ length: 25 }, (_, i) => sidecarOf(i + 1));
  for (const s of all) await writeRecording(dir, s);
  const { log } = logCollector();
  const sync = new CatalogSync({ catalog, settings, pendingDeletions: async () => [recId(25)], log });
  await sync.init();
  await sync.reconcile();
  t.equal(sync.complete, true);
  t.equal(catalog.backend, 'postgres');
  t.same(await listed(catalog), all.slice(0, 24).map((s) => s.recordingId).sort(), 'a pending deletion is not listed');
  t.match(sync.lastResult, { imported: 24 });
});

t.test('nothing on disk and nothing listed: complete at once without a thread; a listed recording with no sidecar takes a run', async (t) => {
  const { dir, settings, catalog } = await setup(t);
  const workers: Worker[] = [];
  const { log } = logCollector();
  const sync = new CatalogSync({ catalog, settings, pendingDeletions: async () => [], log, onWorker: (w) => { workers.push(w); } });
  await sync.init();
  await sync.reconcile();
  t.equal(workers.length, 0, 'no thread for an empty RECORDINGS_DIR and an empty catalog');
  t.equal(sync.complete, true);
  t.match(sync.lastResult, { ran: true, found: 0, imported: 0, removed: 0 });
  t.not(await catalog.getMeta(RECONCILED_AT), null, 'it counts as a reconcile');
  // a recording listed whose files are gone (removed by hand): the disk is still empty, but the
  // catalog is not in step with it
  const gone = sidecarOf(1);
  await catalog.put(gone, path.join(dir, 'gone.json'));
  await sync.reconcile();
  t.equal(workers.length, 1, 'a run on the thread');
  t.match(sync.lastResult, { found: 0, removed: 1 });
  t.equal(await catalog.count(), 0);
});
