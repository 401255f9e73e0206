// Liveness, readiness and metrics: open to the load balancer and Prometheus (not under /v1).
import type { FastifyInstance } from 'fastify';
import type { GatewayMetrics } from './metrics.js';

export interface HealthDeps {
  metrics: GatewayMetrics;
  /** null when ready, else why not (draining, index loading, Redis lost …) */
  notReadyReason: () => string | null;
}

// Probes come every few seconds from every balancer and scraper: fastify's per-request lines
// ("incoming request", "request completed", info) would bury the log. At warn, their errors
// still show.
const PROBE = { logLevel: 'warn' } as const;

export function registerHealthRoutes(app: FastifyInstance, deps: HealthDeps): void {
  app.get('/healthz', PROBE, async () => ({ status: 'ok' }));
  app.get('/readyz', PROBE, async (_req, reply) => {
    const reason = deps.notReadyReason();
    if (reason !== null) return reply.code(503).send({ error: 'not_ready', message: reason });
    return { status: 'ready' };
  });
  app.get('/metrics', PROBE, async (_req, reply) => {
    const body = await deps.metrics.registry.metrics();
    return reply.type(deps.metrics.registry.contentType).send(body);
  });
}
