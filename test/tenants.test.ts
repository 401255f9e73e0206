// Contract section 7, who may touch what (issue 9): two Twilio accounts on one gateway, each with
// its own token and its own API keys, plus a global key. Real server, real signed streams, real
// signed TaskRouter callbacks, real files: nothing that comes in for account A ever changes,
// re-attributes, pauses, deletes or shows a call or recording of account B.
import t from 'tap';
import { mkdtemp, readFile, rm, writeFile, access } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { runStream } from '../loadtest/stream-runner.js';
import { TwilioStreamClient, twilioSignature } from '../loadtest/twilio-stream-client.js';
import { frameFor } from '../loadtest/audio-fixtures.js';
import { randomSid } from '../loadtest/sids.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { keyId } from '../gateway/api/api-auth.js';
import { startTestGateway, readSidecarFromDisk, audioPathOnDisk, type TestGateway } from './fixtures/harness.js';

const SID_A = randomSid('AC');
const SID_B = randomSid('AC');
const TOKEN_A = 'tenant-a-token-0123456789';
const TOKEN_B = 'tenant-b-token-0123456789';
const KEY_A = 'tenant-a-api-key-0123456789';
const KEY_B = 'tenant-b-api-key-0123456789';
const GLOBAL = 'global-api-key-0123456789';
const PUBLIC_WS = 'wss://rec.example.com/twilio/v1';
const EVENTS_URL = 'https://rec.example.com/twilio/v1/events';
const TOKENS: Record<string, string> = { [SID_A]: TOKEN_A, [SID_B]: TOKEN_B };

/** Log lines the gateway wrote (pino JSON), for the audit and refusal checks. */
function captureLog(): { logger: pino.Logger; lines: () => Record<string, unknown>[]; text: () => string } {
  let buf = '';
  const sink = new Writable({ write(chunk, _enc, cb) { buf += String(chunk); cb(); } });
  return {
    logger: pino({ level: 'info' }, sink),
    lines: () => buf.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>),
    text: () => buf,
  };
}

async function tenantGateway(t: Tap, extra: Record<string, unknown> = {}, logger?: pino.Logger): Promise<TestGateway> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-tenants-cfg-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'gateway.json');
  await writeFile(file, JSON.stringify({
    API_KEYS: GLOBAL,
    TWILIO_ENABLE_PAUSE_RESUME: true,
    dataSources: [
      { TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: TOKEN_A, apiKeys: [KEY_A] },
      { TWILIO_ACCOUNT_SID: SID_B, TWILIO_AUTH_TOKEN: TOKEN_B, apiKeys: [KEY_B] },
    ],
    ...extra,
  }));
  return startTestGateway(t, { GATEWAY_CONFIG: file, WEBSOCKET_TARGET_URL: PUBLIC_WS }, logger ? { logger } : {});
}
type Tap = { teardown(fn: () => unknown): void };

async function api(g: TestGateway, method: string, url: string, key: string | null, body?: unknown): Promise<{ status: number; body: any; bytes: number }> {
  const headers: Record<string, string> = {};
  if (key !== null) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${g.http}${url}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const buf = Buffer.from(await res.arrayBuffer());
  const json = (res.headers.get('content-type') ?? '').includes('json') && buf.length > 0 ? JSON.parse(buf.toString()) : null;
  return { status: res.status, body: json, bytes: buf.length };
}

/** A TaskRouter callback signed with `signer`'s token (AccountSid = signer unless overridden). */
async function taskrouter(g: TestGateway, signer: string, fields: Record<string, string>, headers: Record<string, string> = {}) {
  const params = { AccountSid: signer, WorkspaceSid: 'WS1', TaskSid: 'WT1', WorkerSid: 'WK1', ...fields };
  const res = await fetch(`${g.http}/twilio/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': twilioSignature(TOKENS[signer]!, EVENTS_URL, params), ...headers },
    body: new URLSearchParams(params),
  });
  await res.arrayBuffer();
  return res.status;
}

function reservation(type: string, callSid: string, contact: string): Record<string, string> {
  return {
    EventType: type, Timestamp: String(Math.floor(Date.now() / 1000)),
    TaskAttributes: JSON.stringify({ call_sid: callSid, conversations: { conversation_id: contact } }),
    WorkerAttributes: JSON.stringify({ employee_id: `emp-${contact}` }),
  };
}

/** Record a finished call of `account` and return its recording (read with the global key). */
async function recordCall(g: TestGateway, account: string, opts: { contact?: string; callSid?: string; frames?: number } = {}): Promise<RecordingSidecar> {
  const callSid = opts.callSid ?? randomSid('CA');
  await runStream({
    url: g.wsUrl, authToken: TOKENS[account], signUrl: PUBLIC_WS, accountSid: account, realtime: false,
    tracks: ['inbound', 'outbound'], seed: 7, frames: opts.frames ?? 25, callSid,
    customParameters: { ctiSessionId: opts.contact ?? `contact-${callSid}`, employeeId: 'emp-own' },
  });
  return until(async () => (await api(g, 'GET', `/v1/recordings?callSid=${callSid}`, GLOBAL)).body?.items?.[0] as RecordingSidecar | undefined, `recording of ${callSid}`);
}

/** A live, signed stream of `account` that has sent a second of audio. */
async function liveCall(g: TestGateway, account: string): Promise<TwilioStreamClient> {
  const callSid = randomSid('CA');
  const c = await TwilioStreamClient.connect(g.wsUrl, { authToken: TOKENS[account], signUrl: PUBLIC_WS, accountSid: account, callSid });
  c.sendConnected();
  c.sendStart({ tracks: ['inbound'], callSid });
  for (let i = 0; i < 50; i++) c.sendMedia('inbound', frameFor(3, 'inbound', i), i * 20);
  await until(() => g.gw.recorder.streamsOfCall(callSid).length > 0, 'stream started');
  return c;
}

async function until<T>(fn: () => Promise<T> | T, what: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(() => true, () => false);
}

t.test('an event of account A never reaches a call of account B (keyed by account and callSid)', async (t) => {
  const g = await tenantGateway(t);
  const b = await recordCall(g, SID_B, { contact: 'B-contact' });
  const before = await readFile(path.join(path.dirname(audioPathOnDisk(g.dir, b)), `${b.recordingId}.json`), 'utf8');

  // a TaskRouter callback correctly signed by A, naming B's call
  t.equal(await taskrouter(g, SID_A, reservation('reservation.created', b.callSid, 'A-evil')), 204);
  t.equal(await taskrouter(g, SID_A, reservation('reservation.rejected', b.callSid, 'A-evil')), 204);
  t.equal((await api(g, 'GET', `/v1/recordings/${b.recordingId}`, GLOBAL)).status, 200, "B's recording is still listed");
  t.ok(await exists(audioPathOnDisk(g.dir, b)), "B's audio is still on disk");
  t.equal(await readFile(path.join(path.dirname(audioPathOnDisk(g.dir, b)), `${b.recordingId}.json`), 'utf8'), before, "B's sidecar is untouched (not re-attributed)");

  // the same through the CTI API: a global key naming account A, and A's own key
  t.equal((await api(g, 'POST', '/v1/cti/events', GLOBAL, { type: 'not_responding', callSid: b.callSid, accountSid: SID_A })).status, 200);
  t.equal((await api(g, 'POST', '/v1/cti/events', KEY_A, { type: 'transfer', callSid: b.callSid, ctiSessionId: 'A-evil' })).status, 200);
  t.equal((await api(g, 'POST', '/v1/cti/events', KEY_A, { type: 'ringing', callSid: b.callSid, accountSid: SID_B })).status, 404,
    "A's key naming account B: that call does not exist for it");
  t.equal(await readFile(path.join(path.dirname(audioPathOnDisk(g.dir, b)), `${b.recordingId}.json`), 'utf8'), before, 'still untouched');
  const noAccount = await api(g, 'POST', '/v1/cti/events', GLOBAL, { type: 'ringing', callSid: b.callSid });
  t.equal(noAccount.status, 400, 'several sources and a global key: accountSid is required');
  t.match(noAccount.body.message, /accountSid is required/);

  // B's own events still work
  t.equal(await taskrouter(g, SID_B, reservation('reservation.created', b.callSid, 'B-new')), 204);
  t.equal((await readSidecarFromDisk(g.dir, b)).ctiSessionId, 'B-new', "B's signed event re-attributes B's call");
  t.equal((await api(g, 'POST', '/v1/cti/events', KEY_B, { type: 'transfer', callSid: b.callSid, employeeId: 'emp-b2' })).status, 200);
  t.equal((await readSidecarFromDisk(g.dir, b)).employeeId, 'emp-b2', "B's key reaches B's call without naming the account");
});

t.test('pause: a key of account A cannot find a call of account B (404)', async (t) => {
  const g = await tenantGateway(t);
  const live = await liveCall(g, SID_B);
  const url = `/v1/calls/${live.callSid}/pause`;
  t.equal((await api(g, 'POST', url, KEY_A)).status, 404, "A's key: B's call does not exist");
  t.equal((await api(g, 'POST', `${url}?accountSid=${SID_A}`, GLOBAL)).status, 404, 'global key naming account A: no such call of A');
  t.equal((await api(g, 'POST', url, GLOBAL)).status, 400, 'global key, several sources: accountSid is required');
  t.equal(g.gw.recorder.streamsOfCall(live.callSid)[0]!.paused, false, 'nothing paused so far');
  const ok = await api(g, 'POST', url, KEY_B);
  t.equal(ok.status, 200);
  t.match(ok.body, { accountSid: SID_B, callSid: live.callSid, paused: true });
  t.equal(g.gw.recorder.streamsOfCall(live.callSid)[0]!.paused, true);
  t.equal((await api(g, 'POST', `/v1/calls/${live.callSid}/resume?accountSid=${SID_B}`, GLOBAL)).status, 200, 'the global key with accountSid');
  live.sendStop();
  await live.closed;
});

t.test('per-source API keys see only their own calls, recordings, contacts and alarms', async (t) => {
  const g = await tenantGateway(t);
  const a = await recordCall(g, SID_A, { contact: 'shared-contact' });
  const b = await recordCall(g, SID_B, { contact: 'shared-contact' });
  const bOnly = await recordCall(g, SID_B, { contact: 'B-only' });

  const listA = await api(g, 'GET', '/v1/recordings', KEY_A);
  t.same(listA.body.items.map((r: RecordingSidecar) => r.recordingId), [a.recordingId], 'the list holds only A\'s recordings');
  const listG = await api(g, 'GET', '/v1/recordings', GLOBAL);
  t.equal(listG.body.items.length, 3, 'the global key sees every account');
  t.same((await api(g, 'GET', `/v1/recordings?callSid=${b.callSid}`, KEY_A)).body.items, [], 'filtering by B\'s call finds nothing');
  t.same((await api(g, 'GET', `/v1/recordings?accountSid=${SID_B}&count=true`, KEY_A)).body, { items: [], nextCursor: null, total: 0 },
    'asking for B\'s account with A\'s key finds nothing, not even a count');
  t.same((await api(g, 'GET', `/v1/recordings?accountSid=${SID_A}`, KEY_A)).body.items.map((r: RecordingSidecar) => r.recordingId), [a.recordingId]);
  t.equal((await api(g, 'GET', `/v1/recordings?accountSid=${SID_B}&count=true`, GLOBAL)).body.total, 2, 'the global key filters by account');

  for (const p of [`/v1/recordings/${b.recordingId}`, `/v1/recordings/${b.recordingId}/audio`, `/v1/recordings/${b.recordingId}/audio?format=pcm16`,
    '/v1/cti-sessions/B-only', '/v1/cti-sessions/B-only/audio', '/v1/cti-sessions/B-only/audio?format=opus',
    `/v1/recordings/${b.recordingId}/audio?format=flac`]) {
    const r = await api(g, 'GET', p, KEY_A);
    t.equal(r.status, 404, `${p}: 404 for A's key (never 403: existence does not leak)`);
    t.equal(r.body.error, 'not_found');
  }
  t.equal((await api(g, 'GET', `/v1/recordings/${a.recordingId}/audio`, KEY_A)).status, 200, 'its own audio plays');
  t.equal((await api(g, 'GET', `/v1/recordings/${bOnly.recordingId}`, KEY_B)).status, 200);
  const contactA = await api(g, 'GET', '/v1/cti-sessions/shared-contact', KEY_A);
  t.same(contactA.body.recordings.map((r: RecordingSidecar) => r.recordingId), [a.recordingId], 'a shared contact id shows only A\'s legs');
  const audioA = await api(g, 'GET', '/v1/cti-sessions/shared-contact/audio', KEY_A);
  const audioAll = await api(g, 'GET', '/v1/cti-sessions/shared-contact/audio', GLOBAL);
  t.equal(audioA.status, 200);
  t.ok(audioA.bytes <= audioAll.bytes, 'the contact audio of A mixes A\'s legs only');
  t.equal((await api(g, 'GET', '/v1/cti-sessions/shared-contact', GLOBAL)).body.recordings.length, 2);

  // live calls
  const liveA = await liveCall(g, SID_A);
  const liveB = await liveCall(g, SID_B);
  const callsA = await api(g, 'GET', '/v1/calls', KEY_A);
  t.same(callsA.body.items.map((e: { callSid: string }) => e.callSid), [liveA.callSid], 'GET /v1/calls: A\'s streams only');
  t.equal((await api(g, 'GET', '/v1/calls', GLOBAL)).body.items.length, 2);
  t.same((await api(g, 'GET', `/v1/calls?callSid=${liveB.callSid}`, KEY_A)).body.items, []);

  // alarms of a source
  g.gw.alarms.raise('long_hold', { message: 'B on hold', accountSid: SID_B, callSid: liveB.callSid });
  g.gw.alarms.raise('long_hold', { message: 'A on hold', accountSid: SID_A, callSid: liveA.callSid });
  g.gw.alarms.raise('webhook_failing', { message: 'node-wide' });
  const alarmsA = await api(g, 'GET', '/v1/alarms', KEY_A);
  t.same(alarmsA.body.items.map((x: { message: string }) => x.message), ['A on hold'], 'alarms: A\'s only (node-wide ones are not a source\'s)');
  t.equal((await api(g, 'GET', '/v1/alarms', GLOBAL)).body.items.length, 3);

  for (const c of [liveA, liveB]) {
    c.sendStop();
    await c.closed;
  }
});

t.test('every deletion writes one audit line: recording, rule or event, and who (never the key)', async (t) => {
  const log = captureLog();
  const g = await tenantGateway(t, { dataSources: [
    { TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: TOKEN_A, apiKeys: [KEY_A], MIN_SESSION_LENGTH_S: 2 },
    { TWILIO_ACCOUNT_SID: SID_B, TWILIO_AUTH_TOKEN: TOKEN_B, apiKeys: [KEY_B] },
  ] }, log.logger);

  // rule: A's call of 0.5 s is shorter than MIN_SESSION_LENGTH_S
  const short = randomSid('CA');
  await runStream({ url: g.wsUrl, authToken: TOKEN_A, signUrl: PUBLIC_WS, accountSid: SID_A, realtime: false, tracks: ['inbound'], seed: 1, frames: 25, callSid: short });
  const ruleLine = await until(() => log.lines().find((l) => l.audit === true && l.callSid === short), 'audit line of the rule');
  t.match(ruleLine, { audit: true, accountSid: SID_A, cause: 'rule', reason: 'min_session_length', actor: 'rule', recordingId: /^MZ[0-9a-f]{32}-0000$/ });

  // event: a signed TaskRouter reservation.rejected of B
  const b1 = await recordCall(g, SID_B);
  t.equal(await taskrouter(g, SID_B, reservation('reservation.rejected', b1.callSid, 'x')), 204);
  const evLine = await until(() => log.lines().find((l) => l.audit === true && l.recordingId === b1.recordingId), 'audit line of the event');
  t.match(evLine, { accountSid: SID_B, callSid: b1.callSid, cause: 'event', reason: 'not_responding', actor: `twilio:${SID_B}` });
  t.notOk(await exists(audioPathOnDisk(g.dir, b1)), 'deleted');

  // event through the API with B's key: the key's id, never the key
  const b2 = await recordCall(g, SID_B);
  t.equal((await api(g, 'POST', '/v1/cti/events', KEY_B, { type: 'not_responding', callSid: b2.callSid })).status, 200);
  const keyLine = await until(() => log.lines().find((l) => l.audit === true && l.recordingId === b2.recordingId), 'audit line of the API event');
  t.equal(keyLine.actor, keyId(KEY_B));
  t.match(String(keyLine.actor), /^key:[0-9a-f]{12}$/);
  t.equal(log.lines().filter((l) => l.audit === true).length, 3, 'one line per deletion');
  for (const secret of [KEY_A, KEY_B, GLOBAL, TOKEN_A, TOKEN_B]) t.notOk(log.text().includes(secret), 'no key or token in the log');
});

t.test('POST /twilio/v1/events without a token: loopback only, like /v1 without API_KEYS', async (t) => {
  const log = captureLog();
  const g = await startTestGateway(t, {}, { logger: log.logger });
  const account = randomSid('AC');
  const callSid = randomSid('CA');
  await runStream({ url: g.wsUrl, accountSid: account, realtime: false, tracks: ['inbound'], seed: 2, frames: 25, callSid });
  const rec = await until(async () => (await api(g, 'GET', `/v1/recordings?callSid=${callSid}`, null)).body.items[0] as RecordingSidecar | undefined, 'recording');
  const form = new URLSearchParams({ AccountSid: account, ...reservation('reservation.rejected', callSid, 'x') });

  const proxied = await fetch(`${g.http}/twilio/v1/events`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': '203.0.113.7' }, body: form,
  });
  t.equal(proxied.status, 403, 'relayed by a proxy: refused');
  t.match(await proxied.json(), { error: 'forbidden', message: /loopback/ });
  const remote = await g.gw.app.inject({
    method: 'POST', url: '/twilio/v1/events', remoteAddress: '203.0.113.8',
    headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form.toString(),
  });
  t.equal(remote.statusCode, 403, 'a remote peer: refused');
  t.equal((await api(g, 'GET', `/v1/recordings/${rec.recordingId}`, null)).status, 200, 'nothing was deleted');
  t.ok(await exists(audioPathOnDisk(g.dir, rec)));
  t.ok(log.lines().some((l) => l.status === 403 && String(l.msg).includes('TaskRouter event refused')), 'the refusal is logged');

  const local = await fetch(`${g.http}/twilio/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
  t.equal(local.status, 204, 'a local client is answered as before');
  await until(async () => (await api(g, 'GET', `/v1/recordings/${rec.recordingId}`, null)).status === 404, 'deleted by the local event');
});

t.test('TaskRouter route: capped body, form only, signature before anything, own-property mapping', async (t) => {
  const g = await tenantGateway(t);
  const post = async (body: string, contentType: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`${g.http}/twilio/v1/events`, { method: 'POST', headers: { 'content-type': contentType, ...headers }, body });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) as { error: string } : null };
  };
  // 110 000 fields, about 830 KB, unsigned
  const huge = Array.from({ length: 110_000 }, (_, i) => `f${i}=x`).join('&');
  const big = await post(huge, 'application/x-www-form-urlencoded');
  t.equal(big.status, 413, 'an 830 KB body is refused before it is read');
  t.equal(big.body?.error, 'payload_too_large');
  const many = Array.from({ length: 3000 }, (_, i) => `${i}=`).join('&');
  t.ok(many.length < 64 * 1024);
  t.equal((await post(many, 'application/x-www-form-urlencoded')).status, 413, 'within the size cap but thousands of fields: refused');
  const json = await post(JSON.stringify({ EventType: 'reservation.rejected', AccountSid: SID_A }), 'application/json');
  t.equal(json.status, 415, 'a JSON body on the form route');
  t.equal(json.body?.error, 'unsupported_media_type');
  t.equal((await post('EventType=x', 'text/plain')).status, 415);
  t.equal((await post(`EventType=reservation.rejected&AccountSid=${SID_A}`, 'application/x-www-form-urlencoded')).status, 403, 'unsigned: 403');

  const rec = await recordCall(g, SID_A, { contact: 'A-contact' });
  const before = await readSidecarFromDisk(g.dir, rec);
  for (const type of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
    const fields = {
      EventType: type,
      TaskAttributes: JSON.stringify({ call_sid: rec.callSid, ctiSessionId: `evil-${type}` }),
      WorkerAttributes: JSON.stringify({ employee_id: 'evil-emp' }),
    };
    t.equal(await taskrouter(g, SID_A, fields), 204, `EventType=${type}: acknowledged`);
  }
  const after = await readSidecarFromDisk(g.dir, rec);
  t.same({ ctiSessionId: after.ctiSessionId, employeeId: after.employeeId }, { ctiSessionId: before.ctiSessionId, employeeId: before.employeeId },
    'prototype names are unmapped: no attribution');
  t.equal(g.gw.control.knows(SID_A, rec.callSid), false, 'and no call state was created');
  t.equal((await api(g, 'GET', '/healthz', null)).status, 200);
});

t.test('CTI call state is bounded: a flood of events cannot grow it past the cap', async (t) => {
  const g = await startTestGateway(t, { TWILIO_ENABLE_PAUSE_RESUME: 'true' }, { maxCallStates: 200 });
  const paused = randomSid('CA');
  t.equal((await api(g, 'POST', '/v1/cti/events', null, { type: 'ringing', callSid: paused })).status, 200);
  t.equal((await api(g, 'POST', `/v1/calls/${paused}/pause`, null)).status, 200, 'a call paused before its stream');
  const live = randomSid('CA');
  const client = await TwilioStreamClient.connect(g.wsUrl, { callSid: live });
  client.sendConnected();
  client.sendStart({ tracks: ['inbound'], callSid: live });
  await until(() => g.gw.recorder.streamsOfCall(live).length > 0, 'live stream');
  t.equal((await api(g, 'POST', '/v1/cti/events', null, { type: 'connected', callSid: live, ctiSessionId: 'live-contact' })).status, 200);

  const firstFlood = randomSid('CA');
  for (let i = 0; i < 600; i++) {
    const r = await api(g, 'POST', '/v1/cti/events', null, { type: 'ringing', callSid: i === 0 ? firstFlood : randomSid('CA'), ctiSessionId: `flood-${i}` });
    if (r.status !== 200) t.fail(`event ${i}: ${r.status}`);
  }
  t.ok(g.gw.control.knows('', paused) && g.gw.control.isPaused('', paused), 'the paused call is never evicted');
  t.equal(g.gw.states.get('', live)?.ctiSessionId, 'live-contact', 'nor a live one');
  t.ok(g.gw.states.size <= 200, `at most the cap (${g.gw.states.size})`);
  t.notOk(g.gw.states.get('', firstFlood), 'the oldest flooded state was forgotten');
  client.sendStop();
  await client.closed;
});

