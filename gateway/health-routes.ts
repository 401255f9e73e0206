// Liveness, readiness and metrics: open to the load balancer and Prometheus (not under /v1).
import type { FastifyInstance } from 'fastify';
import type { GatewayMetrics } from './metrics.js';

export interface HealthDeps {
  metrics: GatewayMetrics;
  /** null when ready, else why not (draining, index loading, Redis lost …) */
  notReadyReason: () => string | null;
}

export function registerHealthRoutes(app: FastifyInstance, deps: HealthDeps): void {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const reason = deps.notReadyReason();
    if (reason !== null) return reply.code(503).send({ error: 'not_ready', message: reason });
    return { status: 'ready' };
  });
  app.get('/metrics', async (_req, reply) => {
    const body = await deps.metrics.registry.metrics();
    return reply.type(deps.metrics.registry.contentType).send(body);
  });
}
