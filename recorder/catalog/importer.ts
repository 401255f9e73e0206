// Fills and reconciles the catalog from the sidecars on disk, in the background: the disk is the
// source of truth. A sidecar the catalog does not list yet is read and inserted; one it lists is
// only marked seen (not read again, unless `reread`: catalog:rebuild); a listed recording whose
// sidecar is gone from disk is unlisted at the end. Memory stays flat: the walk (walk.ts) feeds a
// bounded queue, sidecars are read `concurrency` at a time and written in one transaction per batch.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Catalog, CatalogRow } from './catalog.js';
import { InvalidSidecarError, parseSidecar } from './parse-sidecar.js';
import { walkDirectories } from './walk.js';

export interface ImportProgress {
  /** sidecars found on disk so far (final once `walked`) */
  found: number;
  /** of those, handled (listed already, inserted, or refused) */
  done: number;
  /** read from disk and written to the catalog */
  imported: number;
  /** unreadable or invalid sidecars (reported through onBadFile) */
  bad: number;
  /** listed recordings whose sidecar left the disk */
  removed: number;
  /** the walk of RECORDINGS_DIR has finished */
  walked: boolean;
  startedAt: number;
}

export interface ImportOptions {
  catalog: Catalog;
  recordingsDir: string;
  /** sidecars read at once */
  concurrency?: number;
  /** rows per transaction */
  batchSize?: number;
  /** read and rewrite every sidecar, also those listed already (catalog:rebuild) */
  reread?: boolean;
  /** ids whose deletion is not finished: never listed */
  pendingDeletions?: () => Promise<Iterable<string>>;
  onBadFile?: (file: string, err: Error) => void;
  /** stops the run between batches (shutdown); nothing is removed then */
  signal?: AbortSignal;
  /** after each batch */
  onProgress?: (p: Readonly<ImportProgress>) => void;
}

export interface ImportResult extends ImportProgress {
  /** false: another node reconciled the shared catalog after this one asked; nothing done */
  ran: boolean;
  /** ms */
  elapsedMs: number;
}

const DEFAULT_CONCURRENCY = 64;
const DEFAULT_BATCH = 2000;
/** directories listed at once by the walk */
const WALK_CONCURRENCY = 16;
export const RECONCILED_AT = 'reconciled_at';

interface Candidate {
  dir: string;
  name: string;
  /** every file name of the directory (is the audio beside the sidecar?) */
  files: ReadonlySet<string>;
}

/** A bounded queue between the walk and the readers: the walk waits when it is full. */
class Channel<T> {
  private buf: T[] = [];
  private closed = false;
  private producers: (() => void)[] = [];
  private consumer: (() => void) | null = null;

  constructor(private readonly cap: number) {}

  async push(x: T): Promise<void> {
    while (this.buf.length >= this.cap) await new Promise<void>((r) => this.producers.push(r));
    this.buf.push(x);
    this.wakeConsumer();
  }

  close(): void {
    this.closed = true;
    this.wakeConsumer();
  }

  /** Up to n items; null once closed and empty. */
  async take(n: number): Promise<T[] | null> {
    while (this.buf.length < n && !this.closed) await new Promise<void>((r) => { this.consumer = r; });
    if (this.buf.length === 0) return null;
    const out = this.buf.splice(0, n);
    for (const p of this.producers.splice(0)) p();
    return out;
  }

  private wakeConsumer(): void {
    const c = this.consumer;
    this.consumer = null;
    c?.();
  }
}

/** Runs `fn` over `items`, `n` at a time, results in order. */
async function mapLimit<T, R>(items: readonly T[], n: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!); // i < items.length
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/**
 * One import / reconcile run over RECORDINGS_DIR (dot-folders such as `.inprogress` skipped,
 * symlinks not followed). Rows are removed at the end only when every directory could be read:
 * a folder that failed to list must not look like deleted recordings.
 */
export async function importSidecars(o: ImportOptions): Promise<ImportResult> {
  const { catalog } = o;
  const root = path.resolve(o.recordingsDir);
  const concurrency = o.concurrency ?? DEFAULT_CONCURRENCY;
  const batchSize = o.batchSize ?? DEFAULT_BATCH;
  const started = performance.now();
  const asked = await catalog.clock();
  const progress: ImportProgress = { found: 0, done: 0, imported: 0, bad: 0, removed: 0, walked: false, startedAt: Date.now() };
  const report = (file: string, err: Error) => {
    progress.bad++;
    o.onBadFile?.(file, err);
  };

  return catalog.exclusive(async () => {
    // the shared catalog was reconciled by another node since we asked: nothing to do
    const last = Number(await catalog.getMeta(RECONCILED_AT) ?? 'NaN');
    if (!o.reread && Number.isFinite(last) && last >= asked) {
      return { ...progress, walked: true, ran: false, elapsedMs: performance.now() - started };
    }
    const mark = await catalog.clock();
    const pending = new Set(o.pendingDeletions ? await o.pendingDeletions() : []);
    const queue = new Channel<Candidate>(batchSize * 2);
    let walkFailed = false;
    const walking = walkDirectories({
      root,
      concurrency: WALK_CONCURRENCY,
      signal: o.signal,
      onError: (dir, err) => {
        walkFailed = true;
        report(dir, err);
      },
      visit: async (dir, entries) => {
        const files = new Set<string>();
        for (const d of entries) if (d.isFile()) files.add(d.name);
        for (const name of files) {
          if (!name.endsWith('.json')) continue;
          progress.found++;
          await queue.push({ dir, name, files });
        }
      },
    }).finally(() => {
      progress.walked = true;
      queue.close();
    });

    const readOne = async (c: Candidate): Promise<CatalogRow | null> => {
      const sidecarPath = path.join(c.dir, c.name);
      try {
        const sidecar = parseSidecar(await readFile(sidecarPath, 'utf8'), c.name);
        // with ARCHIVE_KEEP_WAV=false the archive stands in for the removed WAV
        if (!c.files.has(sidecar.audioFile) && !(sidecar.archive && c.files.has(sidecar.archive.file))) {
          throw new InvalidSidecarError(`audio file ${sidecar.audioFile} is missing beside the sidecar`);
        }
        return { sidecar, sidecarPath };
      } catch (err) {
        report(sidecarPath, err as Error);
        return null;
      }
    };

    for (;;) {
      const batch = await queue.take(batchSize);
      if (batch === null) break;
      if (o.signal?.aborted) {
        // let the walk finish quickly: drain what it still pushes, read nothing more
        walkFailed = true;
        continue;
      }
      const wanted = batch.filter((c) => !pending.has(c.name.slice(0, -5)));
      const listed = o.reread ? new Set<string>() : await catalog.markSeen(wanted.map((c) => c.name.slice(0, -5)), mark);
      const toRead = wanted.filter((c) => !listed.has(c.name.slice(0, -5)));
      const rows = (await mapLimit(toRead, concurrency, readOne)).filter((r): r is CatalogRow => r !== null);
      // two sidecars claiming one recordingId: the first found stays, the other is reported
      const ids = new Set<string>();
      const unique = rows.filter((r) => {
        if (ids.has(r.sidecar.recordingId)) {
          report(r.sidecarPath, new InvalidSidecarError(`recordingId ${r.sidecar.recordingId} is already catalogued from another sidecar`));
          return false;
        }
        ids.add(r.sidecar.recordingId);
        return true;
      });
      if (unique.length > 0) progress.imported += await catalog.insertBatch(unique, mark);
      progress.done += batch.length;
      o.onProgress?.(progress);
    }
    await walking;
    if (!walkFailed) {
      progress.removed = await catalog.removeUnseen(mark);
      await catalog.setMeta(RECONCILED_AT, String(mark));
      // a catalog that changed by a tenth or more: fresh statistics for the query planner
      const before = await catalog.count() - progress.imported + progress.removed;
      if ((progress.imported + progress.removed) * 10 >= Math.max(before, 1)) await catalog.optimize();
    }
    o.onProgress?.(progress);
    return { ...progress, ran: true, elapsedMs: performance.now() - started };
  });
}
