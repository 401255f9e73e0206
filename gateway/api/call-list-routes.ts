// GET /v1/calls: the streams being recorded. Single node: this node's live sessions. Cluster
// mode: every node's, from the registry in Redis, plus `lost`: streams of nodes whose heartbeat
// stopped (they stay listed until the node restarts and cleans up). Both modes answer
// `{ items, lost }` so clients need not know which mode they talk to.
import { Type } from '@sinclair/typebox';
import { ApiError } from './errors.js';
import { accessOf, canSee } from './api-auth.js';
import type { CallsSnapshot } from '../cluster/cluster-view.js';
import type { ApiInstance } from './v1-scope.js';

export interface CallListRoutesDeps {
  /** the snapshot; throws when the cluster-wide truth cannot be read */
  calls: () => Promise<CallsSnapshot>;
}

/** On the /v1 scope (v1-scope.ts): paths are relative to /v1. */
export function registerCallListRoutes(app: ApiInstance, deps: CallListRoutesDeps): void {
  app.get('/calls', {
    schema: {
      querystring: Type.Object({
        callSid: Type.Optional(Type.String({ pattern: '^CA[0-9a-f]{32}$' })),
      }, { additionalProperties: false }),
    },
  }, async (req) => {
    const { callSid } = req.query;
    let snap: CallsSnapshot;
    try {
      snap = await deps.calls();
    } catch (err) {
      throw new ApiError(503, 'cluster_unavailable', `cannot read the cluster's streams from Redis (${(err as Error).message}); retry shortly`);
    }
    // a per-source key sees only its account's streams
    const access = accessOf(req);
    const shown = (e: { accountSid?: string; callSid: string }) =>
      canSee(access, e.accountSid ?? '') && (callSid === undefined || e.callSid === callSid);
    return { items: snap.items.filter(shown), lost: snap.lost.filter(shown) };
  });
}
