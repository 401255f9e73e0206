// GET /v1/alarms: the recent alarms of this node (cluster mode adds the other nodes').
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Alarms } from '../../recorder/alarms.js';

export function registerAlarmRoutes(app: FastifyInstance, deps: { alarms: Alarms }): void {
  app.get('/v1/alarms', {
    schema: {
      querystring: Type.Object({
        kind: Type.Optional(Type.String({ maxLength: 64 })),
        limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
      }, { additionalProperties: false }),
    },
  }, async (req) => {
    const q = req.query as { kind?: string; limit: number };
    const all = deps.alarms.recent().filter((a) => q.kind === undefined || a.kind === q.kind);
    // newest first, as an operator reads them
    return { items: all.slice(-q.limit).reverse() };
  });
}
