// Fills and reconciles the catalog from the sidecars on disk, in the background: the disk is the
// source of truth. A sidecar the catalog does not list yet is read and inserted; one it lists is
// only marked seen (not read again, unless `reread`: catalog:rebuild); a listed recording whose
// sidecar is gone from disk is unlisted at the end. Memory stays flat: the walk (walk.ts) feeds a
// bounded queue; batches of sidecars are read and parsed on reader worker threads (reader-pool.ts,
// sidecar-reader.ts) while this thread writes the batches read before (the SQLite catalog in
// transactions of ~5 ms, so its event loop is never held long). A node runs it on a thread of its
// own (import-thread.ts); catalog:rebuild in its process.
import os from 'node:os';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import type { Catalog, RowFields } from './catalog.js';
import { InvalidSidecarError } from './parse-sidecar.js';
import { ReaderPool } from './reader-pool.js';
import { errorOf, fieldsAt, ROW_WIDTH, type ReadRequest, type ReadResult } from './sidecar-reader.js';
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
  /**
   * reader worker threads (reading and parsing the sidecars off the main thread); default
   * `defaultReaders()`: one core is left to the thread that writes the catalog and to the media path
   */
  readers?: number;
  /** each reader worker started (tests end one to show that a worker's death is survived) */
  onReader?: (w: Worker) => void;
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

/** Reader workers: the cores but one (the main thread writes the catalog), at least one, at most four. */
export function defaultReaders(): number {
  return Math.max(1, Math.min(4, os.availableParallelism() - 1));
}
/**
 * Sidecars per batch (read by a worker, then written). 2 000 let the main thread's old generation
 * fill with the batches' dead rows (they live across several loop turns, so they are promoted)
 * up to ~110 MB before a full GC: the node peaked at 262-265 MB RSS during a 100 k import
 * (SQLite and PostgreSQL); 1 000 keeps the peak at ~180-215 MB at the same rate.
 */
export const DEFAULT_BATCH = 1000;
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

/** The batch of candidates as a reader worker takes it: each directory and its file names once. */
function requestOf(base: string, cands: readonly Candidate[]): ReadRequest {
  const req: ReadRequest = { base, dirs: [], files: [], dirOf: [], names: [] };
  const index = new Map<string, number>();
  for (const c of cands) {
    let d = index.get(c.dir);
    if (d === undefined) {
      d = req.dirs.length;
      index.set(c.dir, d);
      req.dirs.push(c.dir);
      req.files.push([...c.files]);
    }
    req.dirOf.push(d);
    req.names.push(c.name);
  }
  return req;
}

/**
 * One import / reconcile run over RECORDINGS_DIR (dot-folders such as `.inprogress` skipped,
 * symlinks not followed). Rows are removed at the end only when every directory could be read:
 * a folder that failed to list must not look like deleted recordings.
 */
export async function importSidecars(o: ImportOptions): Promise<ImportResult> {
  const { catalog } = o;
  const root = path.resolve(o.recordingsDir);
  const readers = Math.max(1, o.readers ?? defaultReaders());
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

    // reading and parsing runs on the reader workers, up to `readers + 1` batches ahead of the
    // writes: while the main thread writes one batch, the next ones are being read
    const pool = new ReaderPool(readers, o.onReader);
    const reads: { read: Promise<ReadResult | Error>; size: number; req: ReadRequest }[] = [];
    let readFailed = false as boolean; // set by write()
    const write = async (): Promise<void> => {
      const head = reads.shift()!; // called with reads pending
      const r = await head.read;
      if (r instanceof Error) {
        // two workers died on it: its sidecars are reported, and the run removes nothing
        readFailed = true;
        for (let i = 0; i < head.req.names.length; i++) report(path.join(head.req.dirs[head.req.dirOf[i]!]!, head.req.names[i]!), r);
      } else {
        for (let i = 0; i < r.bad.length; i += 4) report(r.bad[i]!, errorOf(r.bad[i + 1]!, r.bad[i + 2]!, r.bad[i + 3]!));
        // two sidecars claiming one recordingId: the first found stays, the other is reported
        const ids = new Set<string>();
        const rows: RowFields[] = [];
        for (let i = 0; i * ROW_WIDTH < r.rows.length; i++) {
          const f = fieldsAt(r.rows, i);
          if (ids.has(f.id)) {
            report(path.join(catalog.recordingsDir, f.relPath), new InvalidSidecarError(`recordingId ${f.id} is already catalogued from another sidecar`));
            continue;
          }
          ids.add(f.id);
          rows.push(f);
        }
        if (rows.length > 0) progress.imported += await catalog.insertRows(rows, mark);
      }
      progress.done += head.size;
      o.onProgress?.(progress);
    };

    try {
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
        if (toRead.length === 0 && reads.length === 0) {
          progress.done += batch.length;
          o.onProgress?.(progress);
          continue;
        }
        const req = requestOf(catalog.recordingsDir, toRead);
        reads.push({ read: toRead.length === 0 ? Promise.resolve({ rows: [], bad: [] }) : pool.read(req).catch((e: Error) => e), size: batch.length, req });
        while (reads.length > readers) await write();
      }
      while (reads.length > 0) await write();
    } finally {
      await pool.close();
    }
    await walking;
    // a stopped run has not seen the whole disk, even when no batch came after the stop (the walk
    // ends early on it): removing what it did not see would unlist recordings that are there
    if (!walkFailed && !readFailed && !o.signal?.aborted) {
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
