// A reader worker of the importer (reader-pool.ts): reads and checks the batches of sidecars it is
// sent (sidecar-reader.ts) and answers each with the rows' columns, off the main thread.
import { parentPort } from 'node:worker_threads';
import { readBatch, type ReadRequest } from './sidecar-reader.js';

const port = parentPort;
if (port === null) throw new Error('read-worker.ts runs as a worker thread');
port.on('message', (req: ReadRequest) => {
  port.postMessage(readBatch(req));
});
