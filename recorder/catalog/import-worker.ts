// The importer's own thread (import-thread.ts starts it): opens its own connection to the node's
// catalog and runs one import / reconcile (importer.ts), so the batches of rows, the writes and
// SQLite's checkpoints stay off the event loop that carries the media.
import { parentPort, workerData } from 'node:worker_threads';
import { importSidecars, type ImportResult } from './importer.js';
import { openCatalog } from './open-catalog.js';
import type { ImportJob, ImportMessage } from './import-thread.js';

const port = parentPort;
if (port === null) throw new Error('import-worker.ts runs as a worker thread');
const job = workerData as ImportJob;
const stop = new AbortController();
port.on('message', (m: unknown) => {
  if (m === 'stop') stop.abort();
});
const say = (m: ImportMessage) => port.postMessage(m);

try {
  // PostgreSQL: the run's advisory lock holds one connection, a batch's transaction another
  const catalog = await openCatalog({ ...job.settings, poolSize: 4 });
  let result: ImportResult;
  try {
    result = await importSidecars({
      catalog,
      recordingsDir: job.settings.recordingsDir,
      pendingDeletions: async () => job.pending,
      signal: stop.signal,
      onBadFile: (file, err) => say({ type: 'bad', file, message: err.message }),
      onProgress: (progress) => say({ type: 'progress', progress }),
    });
  } finally {
    // closed before the answer: the main thread ends this thread when it has it
    await catalog.close();
  }
  say({ type: 'done', result });
} catch (err) {
  say({ type: 'failed', message: (err as Error).message, stack: (err as Error).stack ?? '' });
}
