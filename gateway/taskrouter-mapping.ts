// Twilio TaskRouter event callbacks (docs/twilio-media-streams.md section 4) mapped to the CTI
// events of contract section 5. Pure: form fields in, CTI events out, or a reason to ignore, or
// a BadTaskRouterEvent naming what is wrong (nothing is applied then).
import type { CtiEvent, CtiEventType } from '../recorder/call-states.js';
import { ACCOUNT_SID_RE, CALL_SID_RE } from '../recorder/storage-layout.js';

export class BadTaskRouterEvent extends Error {
  override name = 'BadTaskRouterEvent';
}

/** Which TaskRouter EventType becomes which CTI type (README documents this table). */
export const TASKROUTER_TO_CTI: Readonly<Record<string, CtiEventType>> = {
  'reservation.created': 'ringing',
  'reservation.accepted': 'connected',
  'reservation.rejected': 'not_responding',
  'reservation.timeout': 'not_responding',
  'task.wrapup': 'wrapup',
  'task.completed': 'ended',
  'worker.activity.update': 'agent_available',
};

export type Mapped =
  | { kind: 'events'; events: CtiEvent[]; workerSid: string | null }
  | { kind: 'ignored'; reason: string };

function json(name: string, text: string | undefined): Record<string, unknown> {
  if (text === undefined || text === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new BadTaskRouterEvent(`${name} is not JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BadTaskRouterEvent(`${name} is not a JSON object`);
  return v as Record<string, unknown>;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 && v.length <= 256 ? v : undefined;
}

/** TimestampMs (ms) or Timestamp (epoch seconds, or ISO 8601) as ISO 8601. */
function when(p: Record<string, string>): string | undefined {
  if (p.TimestampMs !== undefined && p.TimestampMs !== '') {
    const ms = Number(p.TimestampMs);
    if (!Number.isFinite(ms)) throw new BadTaskRouterEvent(`TimestampMs ${JSON.stringify(p.TimestampMs.slice(0, 40))} is not a number`);
    return new Date(ms).toISOString();
  }
  if (p.Timestamp === undefined || p.Timestamp === '') return undefined;
  const t = /^\d+(\.\d+)?$/.test(p.Timestamp) ? Number(p.Timestamp) * 1000 : Date.parse(p.Timestamp);
  if (!Number.isFinite(t)) throw new BadTaskRouterEvent(`Timestamp ${JSON.stringify(p.Timestamp.slice(0, 40))} is not a time`);
  return new Date(t).toISOString();
}

/**
 * `lastCallOfWorker` answers which call a worker last had (worker.activity.update carries no task).
 */
export function mapTaskRouterEvent(p: Record<string, string>, lastCallOfWorker: (workerSid: string) => string | undefined): Mapped {
  const type = p.EventType;
  if (!type) throw new BadTaskRouterEvent('EventType is missing');
  if (p.AccountSid !== undefined && !ACCOUNT_SID_RE.test(p.AccountSid)) throw new BadTaskRouterEvent('AccountSid is not an account SID');
  const cti = TASKROUTER_TO_CTI[type];
  if (cti === undefined) return { kind: 'ignored', reason: `EventType ${type} is not mapped` };
  const at = when(p);
  const task = json('TaskAttributes', p.TaskAttributes);
  const worker = json('WorkerAttributes', p.WorkerAttributes);
  const workerSid = str(p.WorkerSid) ?? null;
  const employeeId = str(worker.employee_id) ?? str(worker.employeeId) ?? workerSid ?? undefined;

  if (type === 'worker.activity.update') {
    if (!/^available$/i.test(p.WorkerActivityName ?? '')) return { kind: 'ignored', reason: `activity ${p.WorkerActivityName ?? '?'} is not Available` };
    const callSid = workerSid === null ? undefined : lastCallOfWorker(workerSid);
    if (callSid === undefined) return { kind: 'ignored', reason: 'the worker has no known call' };
    return { kind: 'events', workerSid, events: [{ type: cti, callSid, employeeId, at, accountSid: p.AccountSid }] };
  }

  const callSid = task.call_sid;
  if (callSid === undefined) return { kind: 'ignored', reason: 'TaskAttributes has no call_sid (not a voice task)' };
  if (typeof callSid !== 'string' || !CALL_SID_RE.test(callSid)) throw new BadTaskRouterEvent('TaskAttributes.call_sid is not a call SID');
  const conversations = task.conversations as Record<string, unknown> | undefined;
  // Flex keeps conversations.conversation_id across transfers: all legs of a contact share it
  const ctiSessionId = str(task.ctiSessionId) ?? str(conversations?.conversation_id) ?? str(p.TaskSid);
  // the agent leg of a Flex conference is its own call: it belongs to the same contact
  const conference = task.conference as { participants?: Record<string, unknown> } | undefined;
  const calls = [callSid];
  const workerLeg = conference?.participants?.worker;
  if (typeof workerLeg === 'string' && CALL_SID_RE.test(workerLeg) && workerLeg !== callSid) calls.push(workerLeg);
  return {
    kind: 'events',
    workerSid,
    events: calls.map((c) => ({ type: cti, callSid: c, ctiSessionId, employeeId, at, accountSid: p.AccountSid })),
  };
}
