// `npm run catalog:rebuild`: rebuilds the recording catalog from the sidecars on disk (the source
// of truth, contract section 8): every sidecar is read again and written to the catalog, and
// recordings whose sidecar is gone are unlisted. Same settings as the node (RECORDINGS_DIR,
// DATABASE_URL; in a cluster without DATABASE_URL, NODE_ID + REDIS_URL name the node's own file).
// Safe while nodes run; progress on stderr, a summary line on stdout. Exit 78 on a bad setting.
// `--readers N`: reader worker threads (default: one per core but one, at least one; the main
// thread writes the catalog).
// A process entry point, so it lives at the edge beside main.ts (it reads the gateway's config).
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { loadConfigOrExit } from './config.js';
import { openCatalog } from '../recorder/catalog/open-catalog.js';
import { defaultReaders, importSidecars, type ImportProgress } from '../recorder/catalog/importer.js';
import { Deletions } from '../recorder/deletions.js';

/** Sidecars under `root` (the importer's walk without reading them), for the bar's 100 %. */
async function countSidecars(root: string): Promise<number> {
  let n = 0;
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    const subs: string[] = [];
    for (const d of entries) {
      if (d.name.startsWith('.')) continue;
      if (d.isDirectory()) subs.push(path.join(dir, d.name));
      else if (d.isFile() && d.name.endsWith('.json')) n++;
    }
    for (let i = 0; i < subs.length; i += 16) await Promise.all(subs.slice(i, i + 16).map(walk));
  };
  await walk(root);
  return n;
}

export function progressBar(p: Readonly<ImportProgress>, total: number, elapsedS: number, width = 30): string {
  const frac = total > 0 ? Math.min(1, p.done / total) : 1;
  const filled = Math.round(frac * width);
  const rate = elapsedS > 0 ? Math.round(p.done / elapsedS) : 0;
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(1).padStart(5)}% ${p.done}/${total} sidecars, ${rate}/s, ${p.bad} bad`;
}

function readersArg(argv: readonly string[]): number {
  const i = argv.indexOf('--readers');
  if (i < 0) return defaultReaders();
  const n = Number(argv[i + 1]);
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    process.stderr.write(`catalog:rebuild: --readers wants a whole number from 1 to 64, got ${JSON.stringify(argv[i + 1] ?? '')}\n`);
    process.exit(78);
  }
  return n;
}

async function main(): Promise<void> {
  const readers = readersArg(process.argv.slice(2));
  const config = loadConfigOrExit(process.env);
  const catalog = await openCatalog({
    recordingsDir: config.recordingsDir,
    databaseUrl: config.databaseUrl,
    clusterNodeId: config.redisUrl !== null && config.databaseUrl === null ? config.nodeId : null,
  });
  const tty = process.stderr.isTTY === true;
  process.stderr.write(`catalog:rebuild: ${catalog.backend} catalog, RECORDINGS_DIR=${config.recordingsDir}\ncounting sidecars...\n`);
  const total = await countSidecars(config.recordingsDir);
  const deletions = new Deletions({
    recordingsDir: config.recordingsDir, nodeId: config.nodeId, onlyOwn: false,
    raise: () => undefined, onDeleted: async () => undefined, log: { info: () => undefined, warn: () => undefined },
  });
  const started = performance.now();
  let lastDraw = 0;
  const draw = (p: Readonly<ImportProgress>, force = false) => {
    const now = performance.now();
    if (!force && now - lastDraw < (tty ? 200 : 2000)) return;
    lastDraw = now;
    const line = progressBar(p, Math.max(total, p.found), (now - started) / 1000);
    process.stderr.write(tty ? `\r${line}` : `${line}\n`);
  };
  const r = await importSidecars({
    catalog, recordingsDir: config.recordingsDir, reread: true, readers,
    pendingDeletions: () => deletions.pendingIds(),
    onBadFile: (file, err) => process.stderr.write(`${tty ? '\n' : ''}skipped ${file}: ${err.message}\n`),
    onProgress: (p) => draw(p),
  });
  draw(r, true);
  if (tty) process.stderr.write('\n');
  const seconds = r.elapsedMs / 1000;
  process.stdout.write(`${JSON.stringify({
    backend: catalog.backend, readers, found: r.found, imported: r.imported, removed: r.removed, bad: r.bad,
    seconds: +seconds.toFixed(2), perSecond: Math.round(r.found / Math.max(seconds, 0.001)),
  })}\n`);
  await catalog.close();
}

main().catch((err: Error) => {
  process.stderr.write(`catalog:rebuild failed: ${err.message}\n`);
  process.exit(1);
});
