// GET /v1/alarms: the recent alarms, newest first. Cluster mode reads every node's from Redis;
// `scope` says whether the answer is cluster-wide or (Redis away) only this node's.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Alarm, Alarms } from '../../recorder/alarms.js';

export interface AlarmRoutesDeps {
  alarms: Alarms;
  /** cluster mode: every node's recent alarms, newest first (throws when unreadable) */
  clusterAlarms?: () => Promise<Alarm[]>;
}

export function registerAlarmRoutes(app: FastifyInstance, deps: AlarmRoutesDeps): void {
  app.get('/v1/alarms', {
    schema: {
      querystring: Type.Object({
        kind: Type.Optional(Type.String({ maxLength: 64 })),
        limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
      }, { additionalProperties: false }),
    },
  }, async (req) => {
    const q = req.query as { kind?: string; limit: number };
    if (deps.clusterAlarms) {
      try {
        const all = (await deps.clusterAlarms()).filter((a) => q.kind === undefined || a.kind === q.kind);
        return { items: all.slice(0, q.limit), scope: 'cluster' };
      } catch {
        // Redis away: this node's own alarms are still worth seeing (redis_unavailable among them)
      }
    }
    const all = deps.alarms.recent().filter((a) => q.kind === undefined || a.kind === q.kind);
    // newest first, as an operator reads them
    return { items: all.slice(-q.limit).reverse(), scope: deps.clusterAlarms ? 'node' : 'cluster' };
  });
}
