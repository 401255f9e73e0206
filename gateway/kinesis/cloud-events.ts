// A Kinesis record as Twilio Event Streams writes it: one CloudEvents JSON event, or an array of
// them. Each TaskRouter event (`com.twilio.taskrouter.<eventtype>`) carries the webhook's fields
// in snake case under `data.payload`; the adapter turns them into the form fields of the webhook
// so the one TaskRouter table (taskrouter-mapping.ts) maps both inputs. Pure.
import { BadTaskRouterEvent, mapTaskRouterEvent, TASKROUTER_TO_CTI } from '../twilio/taskrouter-mapping.js';
import type { CtiEvent } from '../../recorder/call-states.js';
import { ACCOUNT_SID_RE } from '../../recorder/storage-layout.js';
import { isObject } from '../untyped.js';

export const TASKROUTER_TYPE_PREFIX = 'com.twilio.taskrouter.';

/** What became of one event (or of a record that is not JSON at all). */
export type EventResult =
  | 'applied' | 'duplicate' | 'ignored' | 'wrong_account' | 'not_json' | 'unknown_type' | 'invalid' | 'failed';
export const EVENT_RESULTS: readonly EventResult[] = [
  'applied', 'duplicate', 'ignored', 'wrong_account', 'not_json', 'unknown_type', 'invalid', 'failed',
];

export type Decoded =
  | { kind: 'event'; id: string; accountSid: string; eventType: string; fields: Map<string, string> }
  | { kind: 'skip'; result: 'unknown_type' | 'invalid'; reason: string; id?: string };

const MAX_ID = 256;

/** task_attributes -> TaskAttributes, eventtype -> EventType */
function toPascal(key: string): string {
  if (key === 'eventtype') return 'EventType';
  return key.split('_').map((p) => (p === '' ? '' : p[0]!.toUpperCase() + p.slice(1))).join('');
}

/** every event has the same few dozen keys: each is converted once (bounded: keys are input) */
const PASCAL = new Map<string, string>();
const MAX_PASCAL = 1000;
function pascal(key: string): string {
  let p = PASCAL.get(key);
  if (p === undefined) {
    p = toPascal(key);
    if (PASCAL.size < MAX_PASCAL) PASCAL.set(key, p);
  }
  return p;
}

/** null: the bytes are not JSON (the whole record is skipped). */
export function decodeRecord(data: Uint8Array): Decoded[] | null {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'));
  } catch {
    return null;
  }
  return (Array.isArray(v) ? v : [v]).map(decodeEvent);
}

export function decodeEvent(e: unknown): Decoded {
  if (!isObject(e)) return { kind: 'skip', result: 'invalid', reason: 'not a JSON object' };
  const id = e.id;
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID) return { kind: 'skip', result: 'invalid', reason: 'id is missing' };
  const type = e.type;
  if (typeof type !== 'string') return { kind: 'skip', result: 'invalid', reason: 'type is missing', id };
  if (!type.startsWith(TASKROUTER_TYPE_PREFIX)) return { kind: 'skip', result: 'unknown_type', reason: `type ${type.slice(0, 80)} is not a TaskRouter event`, id };
  const data = e.data;
  if (!isObject(data)) return { kind: 'skip', result: 'invalid', reason: 'data is missing', id };
  const accountSid = data.account_sid;
  if (typeof accountSid !== 'string' || !ACCOUNT_SID_RE.test(accountSid)) return { kind: 'skip', result: 'invalid', reason: 'data.account_sid is not an account SID', id };
  let payload = data.payload;
  if (typeof payload === 'string') {
    try {
      payload = JSON.parse(payload);
    } catch {
      return { kind: 'skip', result: 'invalid', reason: 'data.payload is not JSON', id };
    }
  }
  if (!isObject(payload)) return { kind: 'skip', result: 'invalid', reason: 'data.payload is missing', id };
  const eventType = payload.eventtype ?? type.slice(TASKROUTER_TYPE_PREFIX.length);
  if (typeof eventType !== 'string' || `${TASKROUTER_TYPE_PREFIX}${eventType}` !== type) {
    return { kind: 'skip', result: 'invalid', reason: 'data.payload.eventtype does not match type', id };
  }
  if (payload.account_sid !== undefined && payload.account_sid !== accountSid) {
    return { kind: 'skip', result: 'invalid', reason: 'data.payload.account_sid is not data.account_sid', id };
  }
  // the form fields of the webhook, as the table reads them (a Map: no prototype keys)
  const fields = new Map<string, string>();
  for (const k in payload) {
    if (!Object.hasOwn(payload, k)) continue;
    const val = payload[k];
    if (val === null || val === undefined) continue;
    // attributes usually come as JSON text (as in the webhook); an object is taken as well
    // eslint-disable-next-line @typescript-eslint/no-base-to-string -- what is left after string and object are JSON primitives
    fields.set(pascal(k), typeof val === 'string' ? val : typeof val === 'object' ? JSON.stringify(val) : String(val));
  }
  fields.set('EventType', eventType);
  fields.set('AccountSid', accountSid);
  if (!fields.has('Timestamp') && typeof e.time === 'string') fields.set('Timestamp', e.time);
  return { kind: 'event', id, accountSid, eventType, fields };
}

export type Mapped =
  | { kind: 'events'; events: CtiEvent[]; workerSid: string | null }
  | { kind: 'skip'; result: 'ignored' | 'invalid'; reason: string };

/** The TaskRouter table applied to a decoded event. */
export function mapCloudEvent(ev: Extract<Decoded, { kind: 'event' }>, lastCallOfWorker: (workerSid: string) => string | undefined): Mapped {
  // own properties only: an event type such as "constructor" must not find Object's prototype
  if (!Object.hasOwn(TASKROUTER_TO_CTI, ev.eventType)) return { kind: 'skip', result: 'ignored', reason: `${ev.eventType} is not mapped` };
  try {
    const m = mapTaskRouterEvent(ev.fields, lastCallOfWorker);
    if (m.kind === 'ignored') return { kind: 'skip', result: 'ignored', reason: m.reason };
    return m;
  } catch (err) {
    if (err instanceof BadTaskRouterEvent) return { kind: 'skip', result: 'invalid', reason: err.message };
    throw err;
  }
}
