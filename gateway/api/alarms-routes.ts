// GET /v1/alarms: the recent alarms, newest first. Cluster mode reads every node's from Redis;
// `scope` says whether the answer is cluster-wide or (Redis away) only this node's.
import { Type } from '@sinclair/typebox';
import type { Alarm, Alarms } from '../../recorder/alarms.js';
import { accessOf, canSee } from './api-auth.js';
import type { ApiInstance } from './v1-scope.js';

export interface AlarmRoutesDeps {
  alarms: Alarms;
  /** cluster mode: every node's recent alarms, newest first (throws when unreadable) */
  clusterAlarms?: () => Promise<Alarm[]>;
}

/** On the /v1 scope (v1-scope.ts): paths are relative to /v1. */
export function registerAlarmRoutes(app: ApiInstance, deps: AlarmRoutesDeps): void {
  app.get('/alarms', {
    schema: {
      querystring: Type.Object({
        kind: Type.Optional(Type.String({ maxLength: 64 })),
        limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
      }, { additionalProperties: false }),
    },
  }, async (req) => {
    const q = req.query;
    // a per-source key sees the alarms of its account's calls only (node-wide ones are not its)
    const access = accessOf(req);
    const wanted = (a: Alarm) => (q.kind === undefined || a.kind === q.kind) && (access.accountSid === null || (a.accountSid !== undefined && canSee(access, a.accountSid)));
    if (deps.clusterAlarms) {
      try {
        const all = (await deps.clusterAlarms()).filter(wanted);
        return { items: all.slice(0, q.limit), scope: 'cluster' };
      } catch {
        // Redis away: this node's own alarms are still worth seeing (redis_unavailable among them)
      }
    }
    const all = deps.alarms.recent().filter(wanted);
    // newest first, as an operator reads them
    return { items: all.slice(-q.limit).reverse(), scope: deps.clusterAlarms ? 'node' : 'cluster' };
  });
}
