// Which catalog a node uses (contract section 8): PostgreSQL with DATABASE_URL, else SQLite
// under RECORDINGS_DIR (one file per node in a cluster).
import type { Catalog } from './catalog.js';
import { catalogFileFor, SqliteCatalog } from './sqlite-catalog.js';

export interface CatalogSettings {
  recordingsDir: string;
  databaseUrl: string | null;
  /** cluster mode: this node's id (its own SQLite file); null on a single node */
  clusterNodeId: string | null;
  /** PostgreSQL: the pool's connections at most (default 10; the import thread needs a few) */
  poolSize?: number;
}

export async function openCatalog(s: CatalogSettings): Promise<Catalog> {
  let catalog: Catalog;
  if (s.databaseUrl !== null) {
    // loaded only when used: the embedded default needs no PostgreSQL client
    const { PgCatalog } = await import('./pg-catalog.js');
    catalog = new PgCatalog(s.recordingsDir, s.databaseUrl, s.poolSize);
  } else {
    catalog = new SqliteCatalog(s.recordingsDir, catalogFileFor(s.recordingsDir, s.clusterNodeId));
  }
  await catalog.open();
  return catalog;
}
