// The importer's reader workers (read-worker.ts): batches of sidecars are read and parsed on
// worker threads while the importer's thread writes the previous batches to the catalog. Workers start
// on the first batch (a reconcile with nothing new to read starts none) and end with the run.
//
// A worker that dies (a crash, out of memory on a monstrous file, terminated) is replaced and its
// batch is given to the new one; a batch that kills two workers fails (the importer reports its
// sidecars as unreadable and skips the reconcile's removal: nothing is lost, the next run tries again).
import type { Worker } from 'node:worker_threads';
import { startCatalogWorker } from './start-worker.js';
import type { ReadRequest, ReadResult } from './sidecar-reader.js';

/** tries per batch: the first worker that dies on it, and one more */
const ATTEMPTS = 2;

/**
 * A reader's heap. Old generation: a runaway file kills the worker, not the node. Young
 * generation: V8's default (semi-spaces of 16 MB) held ~30 MB more RSS than a batch needs (its
 * objects all die young); capped, the node's RSS peak during a 100 k import fell 262 -> 233 MB.
 */
export const READER_RESOURCE_LIMITS = { maxOldGenerationSizeMb: 128, maxYoungGenerationSizeMb: 8 } as const;

interface Job {
  req: ReadRequest;
  attempts: number;
  resolve: (r: ReadResult) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  job: Job | null;
  /** the worker's uncaught error, if it threw one */
  error: Error | null;
}

export class ReaderPoolError extends Error {
  override name = 'ReaderPoolError';
}

export class ReaderPool {
  #slots = new Set<Slot>();
  #queue: Job[] = [];
  #closed = false;

  /**
   * `size` workers at most; `onWorker` sees each worker started (tests end one to show a death is
   * survived).
   */
  constructor(private readonly size: number, private readonly onWorker?: (w: Worker) => void) {}

  read(req: ReadRequest): Promise<ReadResult> {
    if (this.#closed) return Promise.reject(new ReaderPoolError('the reader pool is closed'));
    return new Promise((resolve, reject) => {
      this.#queue.push({ req, attempts: 0, resolve, reject });
      this.#pump();
    });
  }

  /** Ends the workers; batches not answered yet fail. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const j of this.#queue.splice(0)) j.reject(new ReaderPoolError('the reader pool is closed'));
    await Promise.all([...this.#slots].map((s) => s.worker.terminate()));
  }

  #pump(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      let slot: Slot | undefined;
      for (const s of this.#slots) if (s.job === null) { slot = s; break; }
      if (slot === undefined) {
        if (this.#slots.size >= this.size) return;
        slot = this.#spawn();
      }
      const job = this.#queue.shift()!; // length > 0
      job.attempts++;
      slot.job = job;
      slot.worker.postMessage(job.req);
    }
  }

  #spawn(): Slot {
    // a bounded heap: a worker holds a batch at a time (a few MB); a runaway file kills it, not the node
    const worker = startCatalogWorker('read-worker', { ...READER_RESOURCE_LIMITS });
    const slot: Slot = { worker, job: null, error: null };
    this.#slots.add(slot);
    worker.on('message', (r: ReadResult) => {
      const job = slot.job;
      slot.job = null;
      job?.resolve(r);
      this.#pump();
    });
    worker.on('error', (err) => { slot.error = err; });
    worker.on('exit', (code) => {
      this.#slots.delete(slot);
      const job = slot.job;
      slot.job = null;
      if (job === null) return;
      if (this.#closed) {
        job.reject(new ReaderPoolError('the reader pool is closed'));
      } else if (job.attempts >= ATTEMPTS) {
        job.reject(new ReaderPoolError(`a sidecar reader died ${job.attempts} times on a batch from ${job.req.dirs[0] ?? '?'} (exit code ${code}${slot.error ? `: ${slot.error.message}` : ''})`));
      } else {
        this.#queue.unshift(job);
      }
      this.#pump();
    });
    this.onWorker?.(worker);
    return slot;
  }
}
