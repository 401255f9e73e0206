// Call control API (contract sections 4, 5 and 7): CTI events and PCI pause/resume (the list of
// live streams is call-list-routes.ts). The policy itself is recorder/call-control.ts.
// Every call is addressed by account and callSid: the account comes from the caller's per-source
// API key, else `accountSid` in the request, else the one configured data source; with several
// sources and a global key it is required. A call of another account does not exist (404).
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import {
  PauseDisabledError, UnknownCallError, type CallControl, type CtiBatch, type PauseResult,
} from '../../recorder/call-control.js';
import { CTI_EVENT_TYPES, TooManyCallsError, type CtiEvent } from '../../recorder/call-states.js';
import { ACCOUNT_SID_RE, CALL_SID_RE } from '../../recorder/storage-layout.js';
import { accessOf, type ApiAccess } from './api-auth.js';
import { ApiError } from './errors.js';
import { eventTime } from '../../recorder/ingest-limits.js';
import type { ApiInstance } from './v1-scope.js';
import { fieldOf, stringFieldOf } from '../untyped.js';

export interface CallControlRoutesDeps {
  control: CallControl;
  /** configured data sources (account sids); empty = the embedded default, no tenants */
  sources: readonly string[];
  /**
   * Cluster mode: the router found the call in Redis (stream, queued events, stored pause) though
   * this node has nothing of it. Absent on a single node.
   */
  knownInCluster?: (req: FastifyRequest) => boolean;
}

// no maxLength: a longer id is clipped with a marker (recorder/ingest-limits.ts), never refused
const Id = Type.String({ minLength: 1 });

export const CtiEventBody = Type.Object({
  type: Type.Union(CTI_EVENT_TYPES.map((t) => Type.Literal(t))),
  callSid: Type.String({ pattern: CALL_SID_RE.source }),
  accountSid: Type.Optional(Type.String({ pattern: ACCOUNT_SID_RE.source })),
  ctiSessionId: Type.Optional(Id),
  employeeId: Type.Optional(Id),
  at: Type.Optional(Type.String({ format: 'date-time' })),
  // unknown fields are dropped (CTI integrations add their own), not refused
}, { additionalProperties: false });

const CallParams = Type.Object({ callSid: Type.String({ pattern: CALL_SID_RE.source }) });
const CallQuery = Type.Object({ accountSid: Type.Optional(Type.String({ pattern: ACCOUNT_SID_RE.source })) }, { additionalProperties: false });

/** A per-call request, resolved: the account scope of the call (see CallControl.scopeOf). */
export interface CallTarget {
  scope: string;
  callSid: string;
}

/**
 * The account scope a request addresses. Throws 404 when a per-source key names another account
 * (for it that call does not exist) and 400 when the account cannot be told.
 */
export function resolveScope(control: CallControl, sources: readonly string[], access: ApiAccess, given: string | undefined, callSid: string): string {
  if (sources.length === 0) return ''; // embedded default: no tenants to keep apart
  if (access.accountSid !== null) {
    if (given !== undefined && given !== access.accountSid) throw new ApiError(404, 'not_found', `no call ${callSid} for this API key`);
    return control.scopeOf(access.accountSid);
  }
  if (given !== undefined) {
    if (!sources.includes(given)) throw new ApiError(400, 'bad_request', `accountSid ${given} is not a configured data source`);
    return control.scopeOf(given);
  }
  if (sources.length === 1) return control.scopeOf(sources[0]);
  throw new ApiError(400, 'bad_request', `accountSid is required: ${sources.length} data sources are configured and this API key may act for any of them`);
}

const targets = new WeakMap<object, CallTarget | null>();

/**
 * Which call a per-call command addresses (POST /v1/calls/:callSid/<verb>, POST /v1/cti/events),
 * or null. Read from any request the cluster router sees, schema or not (tools' probe commands
 * have none), so the fields are read as untyped and checked here, not taken from a route's types.
 */
export function callTargetOf(control: CallControl, sources: readonly string[], req: FastifyRequest): CallTarget | null {
  const cached = targets.get(req.raw);
  if (cached !== undefined) return cached;
  let t: CallTarget | null = null;
  const url = req.routeOptions.url ?? '';
  if (req.method === 'POST' && url.startsWith('/v1/calls/:callSid/')) {
    const callSid = stringFieldOf(req.params, 'callSid');
    const given = stringFieldOf(req.query, 'accountSid');
    if (callSid !== undefined) t = { callSid, scope: resolveScope(control, sources, accessOf(req), given, callSid) };
  } else if (req.method === 'POST' && url === '/v1/cti/events') {
    const callSid = stringFieldOf(req.body, 'callSid');
    if (callSid !== undefined) {
      t = { callSid, scope: resolveScope(control, sources, accessOf(req), stringFieldOf(req.body, 'accountSid'), callSid) };
    }
  }
  targets.set(req.raw, t);
  return t;
}

export async function applyCtiEvent(control: CallControl, ev: CtiEvent, actor?: string) {
  try {
    return await control.applyEvent(ev, actor);
  } catch (err) {
    throw apiErrorOf(err);
  }
}

/** The same inside a batch (CallControl.applyInBatch: the Kinesis reader on a single node). */
export async function applyCtiEventInBatch(control: CallControl, ev: CtiEvent, actor: string, batch: CtiBatch): Promise<void> {
  try {
    await control.applyInBatch(ev, actor, batch);
  } catch (err) {
    throw apiErrorOf(err);
  }
}

function apiErrorOf(err: unknown): unknown {
  if (err instanceof RangeError) return new ApiError(400, 'bad_request', err.message);
  if (err instanceof TooManyCallsError) return new ApiError(503, 'too_many_calls', err.message);
  return err;
}

function checkEventTime(at: unknown, control: CallControl): void {
  if (typeof at !== 'string' || !Number.isFinite(Date.parse(at))) return; // the schema names a malformed one
  try {
    eventTime(at, control.now());
  } catch (err) {
    throw new ApiError(400, 'bad_request', (err as Error).message);
  }
}

async function pauseCall(control: CallControl, t: CallTarget, paused: boolean, knownElsewhere: boolean): Promise<PauseResult> {
  try {
    return await (paused ? control.pause(t.scope, t.callSid, knownElsewhere) : control.resume(t.scope, t.callSid, knownElsewhere));
  } catch (err) {
    if (err instanceof UnknownCallError) throw new ApiError(404, 'not_found', err.message);
    if (err instanceof PauseDisabledError) throw new ApiError(409, 'pause_disabled', err.message);
    if (err instanceof TooManyCallsError) throw new ApiError(503, 'too_many_calls', err.message);
    throw err;
  }
}

/** On the /v1 scope (v1-scope.ts): paths are relative to /v1. */
export function registerCallControlRoutes(app: ApiInstance, deps: CallControlRoutesDeps): void {
  const { control, sources } = deps;
  const target = (req: FastifyRequest) => callTargetOf(control, sources, req) as CallTarget;

  app.post('/cti/events', {
    schema: { body: CtiEventBody },
    // before the cluster router (a preHandler) forwards or queues the event: a time far from now is
    // refused here. Before validation the body is whatever was sent (its type is not the schema's yet).
    preValidation: async (req) => checkEventTime(fieldOf(req.body, 'at'), control),
  }, async (req) => {
    const t = target(req);
    const ev: CtiEvent = { ...req.body, accountSid: t.scope === '' ? undefined : t.scope };
    return applyCtiEvent(control, ev, accessOf(req).actor);
  });

  for (const action of ['pause', 'resume'] as const) {
    app.post(`/calls/:callSid/${action}`, {
      schema: { params: CallParams, querystring: CallQuery },
    }, async (req) => pauseCall(control, target(req), action === 'pause', deps.knownInCluster?.(req) ?? false));
  }
}
