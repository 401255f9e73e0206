// Runs one catalog import / reconcile on a worker thread of its own (import-worker.ts). On the
// main thread a 1 M import held the event loop up to 400 ms (p99 176 ms: SQLite's synchronous
// writes and WAL checkpoints) and its batches, promoted to the old generation while they waited,
// grew the main heap to 166 MB before V8 collected it (RSS peak 255 MB). The worker's heap is
// capped, and the main thread only sees progress.
import type { Worker } from 'node:worker_threads';
import type { ImportProgress, ImportResult } from './importer.js';
import type { CatalogSettings } from './open-catalog.js';
import { startCatalogWorker } from './start-worker.js';

export interface ImportJob {
  settings: CatalogSettings;
  /** ids whose deletion is not finished: never listed */
  pending: string[];
}

export type ImportMessage =
  | { type: 'progress'; progress: ImportProgress }
  | { type: 'bad'; file: string; message: string }
  | { type: 'done'; result: ImportResult }
  | { type: 'failed'; message: string; stack: string };

/**
 * The import thread's heap: the walk's listings, two batches of rows in flight, the catalog
 * client. Its old generation is where the batches that wait are promoted; capped, V8 collects
 * them early instead of letting the heap grow.
 */
export const IMPORT_RESOURCE_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8 } as const;
/** after `stop`, how long the thread may take to finish its batch before it is terminated */
const STOP_GRACE_MS = 10_000;

export interface ImportThreadOptions extends ImportJob {
  signal: AbortSignal;
  onProgress: (p: Readonly<ImportProgress>) => void;
  onBadFile: (file: string, message: string) => void;
  /** the thread started (tests end it to show that its death is survived) */
  onWorker?: (w: Worker) => void;
}

export class ImportThreadError extends Error {
  override name = 'ImportThreadError';
}

/** One run; rejects when the thread fails or dies (nothing is removed then: see importer.ts). */
export function importInThread(o: ImportThreadOptions): Promise<ImportResult> {
  return new Promise((resolve, reject) => {
    const worker = startCatalogWorker('import-worker', { ...IMPORT_RESOURCE_LIMITS }, { settings: o.settings, pending: o.pending } satisfies ImportJob);
    let settled = false;
    let kill: NodeJS.Timeout | undefined;
    const onAbort = () => {
      worker.postMessage('stop');
      kill = setTimeout(() => void worker.terminate(), STOP_GRACE_MS);
    };
    const finish = (err: Error | null, r?: ImportResult) => {
      if (settled) return;
      settled = true;
      o.signal.removeEventListener('abort', onAbort);
      clearTimeout(kill);
      if (err) reject(err);
      else resolve(r!); // r is set when err is null
      void worker.terminate();
    };
    if (o.signal.aborted) onAbort();
    else o.signal.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (m: ImportMessage) => {
      switch (m.type) {
        case 'progress': o.onProgress(m.progress); break;
        case 'bad': o.onBadFile(m.file, m.message); break;
        case 'done': finish(null, m.result); break;
        case 'failed': {
          const e = new ImportThreadError(m.message);
          e.stack = m.stack;
          finish(e);
          break;
        }
      }
    });
    worker.on('error', (err) => finish(new ImportThreadError(`the catalog import thread failed: ${err.message}`)));
    worker.on('exit', (code) => finish(new ImportThreadError(`the catalog import thread ended (exit code ${code}) before its run did`)));
    o.onWorker?.(worker);
  });
}
