// Call control API (contract sections 4 and 5): CTI events and PCI pause/resume (the list of
// live streams is list-calls-routes.ts). The policy itself is recorder/call-control.ts.
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import {
  PauseDisabledError, UnknownCallError, type CallControl, type PauseResult,
} from '../../recorder/call-control.js';
import { CTI_EVENT_TYPES, type CtiEvent } from '../../recorder/call-states.js';
import { CALL_SID_RE } from '../../recorder/storage-layout.js';
import { ApiError } from './errors.js';
import { eventTime } from '../../recorder/ingest-limits.js';

export interface CallRoutesDeps {
  control: CallControl;
}

// no maxLength: a longer id is clipped with a marker (recorder/ingest-limits.ts), never refused
const Id = Type.String({ minLength: 1 });

export const CtiEventBody = Type.Object({
  type: Type.Union(CTI_EVENT_TYPES.map((t) => Type.Literal(t))),
  callSid: Type.String({ pattern: CALL_SID_RE.source }),
  ctiSessionId: Type.Optional(Id),
  employeeId: Type.Optional(Id),
  at: Type.Optional(Type.String({ format: 'date-time' })),
  // unknown fields are dropped (CTI integrations add their own), not refused
}, { additionalProperties: false });
type CtiEventBody = Static<typeof CtiEventBody>;

const CallParams = Type.Object({ callSid: Type.String({ pattern: CALL_SID_RE.source }) });
type CallParams = Static<typeof CallParams>;

export async function applyCtiEvent(control: CallControl, ev: CtiEvent) {
  try {
    return await control.applyEvent(ev);
  } catch (err) {
    if (err instanceof RangeError) throw new ApiError(400, 'bad_request', err.message);
    throw err;
  }
}

function checkEventTime(at: unknown, control: CallControl): void {
  if (typeof at !== 'string' || !Number.isFinite(Date.parse(at))) return; // the schema names a malformed one
  try {
    eventTime(at, control.now());
  } catch (err) {
    throw new ApiError(400, 'bad_request', (err as Error).message);
  }
}

function pauseCall(control: CallControl, callSid: string, paused: boolean): PauseResult {
  try {
    return paused ? control.pause(callSid) : control.resume(callSid);
  } catch (err) {
    if (err instanceof UnknownCallError) throw new ApiError(404, 'not_found', err.message);
    if (err instanceof PauseDisabledError) throw new ApiError(409, 'pause_disabled', err.message);
    throw err;
  }
}

export function registerCallRoutes(app: FastifyInstance, deps: CallRoutesDeps): void {
  const { control } = deps;

  app.post<{ Body: CtiEventBody }>('/v1/cti/events', {
    schema: { body: CtiEventBody },
    // before the cluster router (a preHandler) forwards or queues the event: a time far from now is refused here
    preValidation: async (req) => checkEventTime((req.body as { at?: unknown } | null)?.at, control),
  }, async (req) => applyCtiEvent(control, req.body));

  for (const action of ['pause', 'resume'] as const) {
    app.post<{ Params: CallParams }>(`/v1/calls/:callSid/${action}`, { schema: { params: CallParams } }, async (req) =>
      pauseCall(control, req.params.callSid, action === 'pause'));
  }
}
