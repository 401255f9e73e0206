// Prometheus view of the catalog and its background import, read when scraped.
import { Gauge, type Registry } from 'prom-client';
import type { Catalog } from './catalog.js';
import type { CatalogSync } from './catalog-sync.js';

export function registerCatalogMetrics(registry: Registry, catalog: Catalog, sync: CatalogSync): void {
  new Gauge({
    name: 'gateway_catalog_recordings', help: 'recordings listed by the catalog', registers: [registry],
    async collect() {
      this.set(await catalog.count().catch(() => Number.NaN));
    },
  });
  new Gauge({
    name: 'gateway_catalog_import_found', help: 'sidecars found on disk by the running (or last) catalog import', registers: [registry],
    collect() { this.set(sync.progress?.found ?? 0); },
  });
  new Gauge({
    name: 'gateway_catalog_import_done', help: 'sidecars handled by the running (or last) catalog import', registers: [registry],
    collect() { this.set(sync.progress?.done ?? 0); },
  });
  new Gauge({
    name: 'gateway_catalog_import_complete', help: '1 once the catalog has been filled from RECORDINGS_DIR', registers: [registry],
    collect() { this.set(sync.complete ? 1 : 0); },
  });
}
