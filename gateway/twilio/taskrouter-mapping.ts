// Twilio TaskRouter event callbacks (docs/twilio-media-streams.md section 4) mapped to the CTI
// events of contract section 5. Pure: form fields in, CTI events out, or a reason to ignore, or
// a BadTaskRouterEvent naming what is wrong (nothing is applied then).
import type { CtiEvent, CtiEventType } from '../../recorder/call-states.js';
import { ACCOUNT_SID_RE, CALL_SID_RE } from '../../recorder/storage-layout.js';

export class BadTaskRouterEvent extends Error {
  override name = 'BadTaskRouterEvent';
}

/**
 * Which TaskRouter EventType becomes which CTI type (README documents this table). No prototype
 * (and looked up with Object.hasOwn): `constructor` or `__proto__` must not find anything.
 */
export const TASKROUTER_TO_CTI: Readonly<Record<string, CtiEventType>> = Object.freeze(Object.assign(Object.create(null) as Record<string, CtiEventType>, {
  'reservation.created': 'ringing',
  'reservation.accepted': 'connected',
  'reservation.rejected': 'not_responding',
  'reservation.timeout': 'not_responding',
  'task.wrapup': 'wrapup',
  'task.completed': 'ended',
  'worker.activity.update': 'agent_available',
} satisfies Record<string, CtiEventType>));

/** The CTI type of a TaskRouter EventType, or undefined when it is not mapped. */
export function ctiTypeOf(eventType: string): CtiEventType | undefined {
  return Object.hasOwn(TASKROUTER_TO_CTI, eventType) ? TASKROUTER_TO_CTI[eventType] : undefined;
}

/** The form fields of a callback (first value of each), without prototype keys. */
export type FormFields = ReadonlyMap<string, string>;

export type Mapped =
  | { kind: 'events'; events: CtiEvent[]; workerSid: string | null }
  | { kind: 'ignored'; reason: string };

/** An own property of a parsed JSON object (never one of its prototype). */
function own(o: Record<string, unknown> | undefined, key: string): unknown {
  return o !== undefined && Object.hasOwn(o, key) ? o[key] : undefined;
}

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

function objectOrUndefined(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 && v.length <= 256 ? v : undefined;
}

/** TimestampMs (ms) or Timestamp (epoch seconds, or ISO 8601) as ISO 8601. */
function when(p: FormFields): string | undefined {
  const tsMs = p.get('TimestampMs');
  if (tsMs !== undefined && tsMs !== '') {
    const ms = Number(tsMs);
    if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) throw new BadTaskRouterEvent(`TimestampMs ${JSON.stringify(tsMs.slice(0, 40))} is not a number`);
    return new Date(ms).toISOString();
  }
  const ts = p.get('Timestamp');
  if (ts === undefined || ts === '') return undefined;
  const t = /^\d+(\.\d+)?$/.test(ts) ? Number(ts) * 1000 : Date.parse(ts);
  if (!Number.isFinite(t) || Math.abs(t) > 8.64e15) throw new BadTaskRouterEvent(`Timestamp ${JSON.stringify(ts.slice(0, 40))} is not a time`);
  return new Date(t).toISOString();
}

/**
 * `lastCallOfWorker` answers which call a worker last had (worker.activity.update carries no task).
 */
export function mapTaskRouterEvent(fields: FormFields | Readonly<Record<string, string>>, lastCallOfWorker: (workerSid: string) => string | undefined): Mapped {
  // a plain record (the Kinesis adapter) becomes a map of its own properties only
  const p: FormFields = fields instanceof Map ? fields : new Map(Object.entries(fields));
  const type = p.get('EventType');
  if (!type) throw new BadTaskRouterEvent('EventType is missing');
  const accountSid = p.get('AccountSid');
  if (accountSid !== undefined && !ACCOUNT_SID_RE.test(accountSid)) throw new BadTaskRouterEvent('AccountSid is not an account SID');
  const cti = ctiTypeOf(type);
  if (cti === undefined) return { kind: 'ignored', reason: `EventType ${type.slice(0, 64)} is not mapped` };
  const at = when(p);
  const task = json('TaskAttributes', p.get('TaskAttributes'));
  const worker = json('WorkerAttributes', p.get('WorkerAttributes'));
  const workerSid = str(p.get('WorkerSid')) ?? null;
  const employeeId = str(own(worker, 'employee_id')) ?? str(own(worker, 'employeeId')) ?? workerSid ?? undefined;

  if (type === 'worker.activity.update') {
    const activity = p.get('WorkerActivityName') ?? '';
    if (!/^available$/i.test(activity)) return { kind: 'ignored', reason: `activity ${activity.slice(0, 64) || '?'} is not Available` };
    const callSid = workerSid === null ? undefined : lastCallOfWorker(workerSid);
    if (callSid === undefined) return { kind: 'ignored', reason: 'the worker has no known call' };
    return { kind: 'events', workerSid, events: [{ type: cti, callSid, employeeId, at, accountSid }] };
  }

  const callSid = own(task, 'call_sid');
  if (callSid === undefined) return { kind: 'ignored', reason: 'TaskAttributes has no call_sid (not a voice task)' };
  if (typeof callSid !== 'string' || !CALL_SID_RE.test(callSid)) throw new BadTaskRouterEvent('TaskAttributes.call_sid is not a call SID');
  const conversations = objectOrUndefined(own(task, 'conversations'));
  // Flex keeps conversations.conversation_id across transfers: all legs of a contact share it
  const ctiSessionId = str(own(task, 'ctiSessionId')) ?? str(own(conversations, 'conversation_id')) ?? str(p.get('TaskSid'));
  // the agent leg of a Flex conference is its own call: it belongs to the same contact
  const participants = objectOrUndefined(own(objectOrUndefined(own(task, 'conference')), 'participants'));
  const calls = [callSid];
  const workerLeg = own(participants, 'worker');
  if (typeof workerLeg === 'string' && CALL_SID_RE.test(workerLeg) && workerLeg !== callSid) calls.push(workerLeg);
  return {
    kind: 'events',
    workerSid,
    events: calls.map((c) => ({ type: cti, callSid: c, ctiSessionId, employeeId, at, accountSid })),
  };
}
