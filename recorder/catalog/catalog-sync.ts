// Keeps one node's catalog in step with the disk: the background import at start, a reconcile
// after each Redis reconnect (embedded catalogs in a cluster), and the figures /readyz, /metrics
// and the log show meanwhile. Runs never overlap: a reconcile asked for during a run makes one
// more run after it.
import { readdir } from 'node:fs/promises';
import type { Worker } from 'node:worker_threads';
import type { Catalog } from './catalog.js';
import { RECONCILED_AT, type ImportProgress, type ImportResult } from './importer.js';
import { importInThread } from './import-thread.js';
import type { CatalogSettings } from './open-catalog.js';

export interface CatalogSyncOptions {
  catalog: Catalog;
  /** where the import thread opens its own connection to the same catalog */
  settings: CatalogSettings;
  pendingDeletions: () => Promise<Iterable<string>>;
  log: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void; error: (o: object, m: string) => void };
  /** how often a running import logs its progress */
  logEveryMs?: number;
  /** each import thread started (tests end one to show that its death is survived) */
  onWorker?: (w: Worker) => void;
}

export class CatalogSync {
  #running: Promise<void> | null = null;
  #again = false;
  #progress: ImportProgress | null = null;
  #complete = false;
  #lastLog = 0;
  #last: ImportResult | null = null;
  #abort = new AbortController();

  constructor(private readonly o: CatalogSyncOptions) {}

  /** Whether the catalog has been filled from the disk once (then later runs do not block readiness). */
  async init(): Promise<void> {
    this.#complete = (await this.o.catalog.getMeta(RECONCILED_AT)) !== null;
  }

  get complete(): boolean {
    return this.#complete;
  }

  get progress(): Readonly<ImportProgress> | null {
    return this.#progress;
  }

  get lastResult(): ImportResult | null {
    return this.#last;
  }

  /** Why the node is not ready yet, or null. */
  notReadyReason(): string | null {
    if (this.#complete) return null;
    const p = this.#progress;
    return `importing: the recording catalog is being filled from RECORDINGS_DIR (${p?.done ?? 0} of ${p?.found ?? 0}${p?.walked ? '' : '+'} sidecars)`;
  }

  /** Start (or queue) a run; resolves when a run that began after this call has finished. */
  reconcile(): Promise<void> {
    if (this.#abort.signal.aborted) return Promise.resolve();
    if (this.#running) {
      this.#again = true; // #loop runs once more before #running settles
      return this.#running;
    }
    this.#running = this.#loop().finally(() => { this.#running = null; });
    return this.#running;
  }

  /** Stop a running import between batches (shutdown) and wait for it. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.idle();
  }

  /** Resolves when no run is going on. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  async #loop(): Promise<void> {
    do {
      this.#again = false;
      await this.#once();
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- #once() may set it during the await
    } while (this.#again);
  }

  /**
   * No recording on disk and none listed (a new node, a test): the catalog is in step with the disk
   * without a run, and the node is ready at once instead of after the import thread has started.
   */
  async #nothingToImport(): Promise<ImportResult | null> {
    const started = performance.now();
    let names: string[] = [];
    try {
      names = await readdir(this.o.settings.recordingsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return null; // the run reports it
    }
    // dot-names are never recordings (.inprogress, .deletions, the catalog itself)
    if (names.some((n) => !n.startsWith('.')) || await this.o.catalog.count() > 0) return null;
    await this.o.catalog.setMeta(RECONCILED_AT, String(await this.o.catalog.clock()));
    return { found: 0, done: 0, imported: 0, bad: 0, removed: 0, walked: true, startedAt: Date.now(), ran: true, elapsedMs: performance.now() - started };
  }

  async #once(): Promise<void> {
    const every = this.o.logEveryMs ?? 5000;
    try {
      const r = await this.#nothingToImport() ?? await importInThread({
        settings: this.o.settings,
        pending: [...await this.o.pendingDeletions()],
        signal: this.#abort.signal,
        onWorker: this.o.onWorker,
        onBadFile: (file, message) => this.o.log.warn({ file, err: message }, 'skipping unreadable sidecar'),
        onProgress: (p) => {
          this.#progress = p;
          const now = Date.now();
          if (now - this.#lastLog >= every) {
            this.#lastLog = now;
            this.o.log.info({ found: p.found, done: p.done, imported: p.imported, walked: p.walked }, 'catalog import running');
          }
        },
      });
      this.#last = r;
      this.#progress = r;
      if (r.ran) {
        this.o.log.info({
          found: r.found, imported: r.imported, removed: r.removed, bad: r.bad, seconds: +(r.elapsedMs / 1000).toFixed(1),
        }, 'catalog reconciled with RECORDINGS_DIR');
      }
      if (r.walked && !this.#abort.signal.aborted) this.#complete = true;
    } catch (err) {
      this.o.log.error({ err }, 'catalog import failed; the next reconcile tries again');
    }
  }
}
