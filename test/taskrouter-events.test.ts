// POST /twilio/v1/events: signed TaskRouter form callbacks mapped to CTI events.
import t from 'tap';
import { runStream } from '../loadtest/stream-runner.js';
import { twilioSignature } from '../loadtest/twilio-stream-client.js';
import { randomSid } from '../loadtest/sids.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { startTestGateway, getJson, waitForRecordings } from './fixtures/harness.js';
import { captureLog } from './fixtures/capture-log.js';

const ACCOUNT = randomSid('AC');
const TOKEN = 'taskrouter-test-token-0123456789';
const PUBLIC_WS = 'wss://rec.example.com/twilio/v1';
const EVENTS_URL = 'https://rec.example.com/twilio/v1/events';

async function send(http: string, params: Record<string, string>, sign: { token?: string; url?: string; tamper?: boolean } = {}) {
  const signature = twilioSignature(sign.token ?? TOKEN, sign.url ?? EVENTS_URL, params);
  const body = new URLSearchParams(sign.tamper ? { ...params, TaskSid: 'WTtampered' } : params);
  const res = await fetch(`${http}/twilio/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': signature },
    body,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) as { error: string; message: string } : null };
}

function reservation(type: string, callSid: string, extra: Record<string, unknown> = {}): Record<string, string> {
  return {
    EventType: type, AccountSid: ACCOUNT, WorkspaceSid: 'WS1', ResourceType: 'reservation', Timestamp: String(Math.floor(Date.now() / 1000)),
    TaskSid: 'WT0001', WorkerSid: 'WK0042', WorkerName: 'alice', ReservationSid: 'WR1',
    TaskAttributes: JSON.stringify({ call_sid: callSid, conversations: { conversation_id: 'WT-contact-1' }, ...extra }),
    WorkerAttributes: JSON.stringify({ employee_id: 'E-42', full_name: 'Alice' }),
  };
}

t.test('signed TaskRouter events attribute the call and drive the rules', async (t) => {
  const log = captureLog('debug');
  const g = await startTestGateway(t, { TWILIO_ACCOUNT_SID: ACCOUNT, TWILIO_AUTH_TOKEN: TOKEN, WEBSOCKET_TARGET_URL: PUBLIC_WS }, { logger: log.logger });
  const callSid = randomSid('CA');
  const agentLeg = randomSid('CA');
  const state = (sid: string) => g.gw.states.get(g.gw.control.scopeOf(ACCOUNT), sid);
  const ignored = () => log.lines().filter((l) => l.msg === 'TaskRouter event ignored').map((l) => l.eventType);
  t.equal((await send(g.http, reservation('reservation.created', callSid))).status, 204, 'ringing');
  t.match(state(callSid), { ctiSessionId: 'WT-contact-1', employeeId: 'E-42', kept: false, discard: false }, 'ringing: the call is attributed, not kept yet');
  t.equal((await send(g.http, reservation('reservation.accepted', callSid, { conference: { participants: { worker: agentLeg } } }))).status, 204, 'connected');
  t.match(state(callSid), { kept: true }, 'connected: the call is kept');
  t.match(state(agentLeg), { ctiSessionId: 'WT-contact-1', employeeId: 'E-42', kept: true }, 'and so is the agent leg, in the same contact');
  const stream = { url: g.wsUrl, authToken: TOKEN, signUrl: PUBLIC_WS, accountSid: ACCOUNT, realtime: false } as const;
  await runStream({ ...stream, tracks: ['inbound', 'outbound'], seed: 1, frames: 20, callSid });
  await runStream({ ...stream, tracks: ['inbound'], seed: 2, frames: 20, callSid: agentLeg });
  const [customer] = await waitForRecordings(g.http, callSid, 1);
  t.match(customer, { ctiSessionId: 'WT-contact-1', employeeId: 'E-42' });
  await waitForRecordings(g.http, agentLeg, 1); // published asynchronously after its socket closed
  const contact = await getJson<{ recordings: RecordingSidecar[] }>(`${g.http}/v1/cti-sessions/WT-contact-1`);
  t.same(contact.body.recordings.map((r) => r.callSid).sort(), [callSid, agentLeg].sort(), 'the agent leg belongs to the same contact');

  const before = { ...state(callSid) };
  const unmapped = await send(g.http, { ...reservation('task.created', callSid, { conversations: { conversation_id: 'other' } }), EventType: 'task.created' });
  t.equal(unmapped.status, 204, 'an unmapped type is acknowledged');
  t.same(state(callSid), before, 'and changes nothing');
  t.same(ignored(), ['task.created'], 'it is the one event ignored so far');
  // Available: applied to the worker's last call (its attributes re-attribute it)
  const available = { EventType: 'worker.activity.update', AccountSid: ACCOUNT, WorkerSid: 'WK0042', WorkerActivityName: 'Available', WorkerAttributes: JSON.stringify({ employee_id: 'E-43' }) };
  t.equal((await send(g.http, available)).status, 204);
  t.equal(state(callSid)?.employeeId, 'E-43', 'the worker\'s last call got the event');
  t.match((await waitForRecordings(g.http, callSid, 1))[0], { employeeId: 'E-43' }, 'its published recording follows');
  t.equal((await send(g.http, { ...available, WorkerActivityName: 'Break' })).status, 204);
  t.same(ignored(), ['task.created', 'worker.activity.update'], 'another activity is acknowledged and ignored');
  // task.completed is `ended`: a hold still open ends with it
  const hold = await fetch(`${g.http}/v1/cti/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ type: 'hold', callSid, accountSid: ACCOUNT }) });
  t.equal(hold.status, 200);
  t.not(state(callSid)?.holdSince, null, 'on hold');
  t.equal((await send(g.http, reservation('task.completed', callSid))).status, 204);
  t.equal(state(callSid)?.holdSince, null, 'task.completed ended the hold');
  t.equal(ignored().length, 2, 'applied, not ignored');
});

t.test('a reservation that times out before any is accepted deletes the audio', async (t) => {
  const g = await startTestGateway(t, { TWILIO_ACCOUNT_SID: ACCOUNT, TWILIO_AUTH_TOKEN: TOKEN, WEBSOCKET_TARGET_URL: PUBLIC_WS });
  const callSid = randomSid('CA');
  await send(g.http, reservation('reservation.created', callSid));
  await runStream({ url: g.wsUrl, authToken: TOKEN, signUrl: PUBLIC_WS, accountSid: ACCOUNT, realtime: false, tracks: ['inbound'], seed: 3, frames: 20, callSid });
  await waitForRecordings(g.http, callSid, 1);
  t.equal((await send(g.http, reservation('reservation.timeout', callSid))).status, 204);
  const list = await getJson<{ items: unknown[] }>(`${g.http}/v1/recordings?callSid=${callSid}`);
  t.same(list.body.items, []);
});

t.test('unsigned, wrongly signed or malformed callbacks are refused', async (t) => {
  const g = await startTestGateway(t, { TWILIO_ACCOUNT_SID: ACCOUNT, TWILIO_AUTH_TOKEN: TOKEN, WEBSOCKET_TARGET_URL: PUBLIC_WS });
  const callSid = randomSid('CA');
  const ok = reservation('reservation.accepted', callSid);
  for (const [why, sign] of [
    ['another token', { token: 'not-the-token-0123456789' }],
    ['another URL', { url: 'https://evil.example.com/twilio/v1/events' }],
    ['a field changed after signing', { tamper: true }],
  ] as const) {
    const res = await send(g.http, ok, sign);
    t.equal(res.status, 403, why);
    t.equal(res.body?.error, 'forbidden');
  }
  const bad = await send(g.http, { ...ok, TaskAttributes: '{call_sid:' });
  t.equal(bad.status, 400);
  t.match(bad.body?.message, /TaskAttributes is not JSON/);
  const badSid = await send(g.http, { ...ok, TaskAttributes: JSON.stringify({ call_sid: 'CA-nope' }) });
  t.match(badSid.body?.message, /call_sid/);
  t.equal((await send(g.http, { ...ok, EventType: '' })).status, 400, 'no EventType');
  // nothing of the refused events was applied: a stream of the call is unattributed
  await runStream({ url: g.wsUrl, authToken: TOKEN, signUrl: PUBLIC_WS, accountSid: ACCOUNT, realtime: false, tracks: ['inbound'], seed: 4, frames: 10, callSid });
  const [rec] = await waitForRecordings(g.http, callSid, 1);
  t.match(rec, { ctiSessionId: null, employeeId: null });
});
