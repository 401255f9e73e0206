// Starts one of the catalog's worker threads (the importer's thread, its sidecar readers) from the
// module beside this one. The compiled worker runs as it is; run from TypeScript source (tests,
// tsx), the worker registers tsx first: `node --import tsx` does not reach worker threads on Node 20.
import { Worker, type ResourceLimits } from 'node:worker_threads';

const FROM_SOURCE = import.meta.url.endsWith('.ts');

/** `name`: the module's file name without extension (`read-worker`, `import-worker`). */
export function startCatalogWorker(name: string, resourceLimits: ResourceLimits, workerData?: unknown): Worker {
  const url = new URL(`./${name}${FROM_SOURCE ? '.ts' : '.js'}`, import.meta.url);
  if (!FROM_SOURCE) return new Worker(url, { resourceLimits, workerData });
  const api = import.meta.resolve('tsx/esm/api');
  const boot = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`;
  return new Worker(boot, { eval: true, resourceLimits, workerData });
}
