// CTI events (contract section 5) through POST /v1/cti/events: attribution before and after
// the stream, whole contacts across legs, bad events refused without side effects.
import t from 'tap';
import { access } from 'node:fs/promises';
import { runStream } from '../loadtest/stream-runner.js';
import { randomSid } from '../loadtest/sids.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { startTestGateway, getJson, waitForRecordings, readSidecarFromDisk } from './fixtures/harness.js';
import { post } from './fixtures/calls.js';

t.test('events before the stream attribute its recording; none gives DEFAULT_EMPLOYEE_ID', async (t) => {
  const g = await startTestGateway(t, { DEFAULT_EMPLOYEE_ID: 'E-DEFAULT' });
  const callSid = randomSid('CA');
  const ev = await post(`${g.http}/v1/cti/events`, { type: 'ringing', callSid, ctiSessionId: 'S-100', employeeId: 'E-7' });
  t.equal(ev.status, 200);
  t.match(ev.body, { callSid, ctiSessionId: 'S-100', employeeId: 'E-7', kept: false });
  t.equal((await post(`${g.http}/v1/cti/events`, { type: 'connected', callSid })).status, 200);
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 2, frames: 25, realtime: false, callSid });
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);
  t.match(rec, { ctiSessionId: 'S-100', employeeId: 'E-7' });
  t.match(await readSidecarFromDisk(g.dir, rec), { ctiSessionId: 'S-100', employeeId: 'E-7' }, 'the sidecar on disk too');

  const other = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 3, frames: 25, realtime: false });
  const [plain] = await waitForRecordings(g.http, other.callSid, 1);
  t.match(plain, { ctiSessionId: null, employeeId: 'E-DEFAULT' }, 'no CTI event: the default employee');
});

t.test('events after the stream re-attribute it; all legs of a contact are listed together', async (t) => {
  const g = await startTestGateway(t, { DEFAULT_EMPLOYEE_ID: 'E-DEFAULT' });
  // customer leg, then a transfer: a second call (agent leg) of the same contact
  const leg1 = await runStream({ url: g.wsUrl, tracks: ['inbound', 'outbound'], seed: 4, frames: 25, realtime: false });
  await new Promise((r) => setTimeout(r, 20)); // distinct startedAt
  const leg2 = await runStream({ url: g.wsUrl, tracks: ['outbound'], seed: 5, frames: 25, realtime: false });
  const [r1] = await waitForRecordings(g.http, leg1.callSid, 1);
  await waitForRecordings(g.http, leg2.callSid, 1);
  t.equal(r1.ctiSessionId, null);

  t.equal((await post(`${g.http}/v1/cti/events`, { type: 'connected', callSid: leg1.callSid, ctiSessionId: 'C-9', employeeId: 'A-1' })).status, 200);
  t.equal((await post(`${g.http}/v1/cti/events`, { type: 'transfer', callSid: leg2.callSid, ctiSessionId: 'C-9', employeeId: 'A-2' })).status, 200);

  const contact = await getJson<{ ctiSessionId: string; recordings: RecordingSidecar[] }>(`${g.http}/v1/cti-sessions/C-9`);
  t.equal(contact.status, 200);
  t.same(contact.body.recordings.map((r) => r.callSid), [leg1.callSid, leg2.callSid], 'both legs, in time order');
  t.same(contact.body.recordings.map((r) => r.employeeId), ['A-1', 'A-2']);
  const onDisk = await readSidecarFromDisk(g.dir, contact.body.recordings[0]!);
  t.match(onDisk, { ctiSessionId: 'C-9', employeeId: 'A-1' }, 'sidecar rewritten on disk');
  const byEmployee = await getJson<{ items: RecordingSidecar[] }>(`${g.http}/v1/recordings?employeeId=A-2`);
  t.same(byEmployee.body.items.map((r) => r.callSid), [leg2.callSid], 'the index follows');
  const byDefault = await getJson<{ items: RecordingSidecar[] }>(`${g.http}/v1/recordings?employeeId=E-DEFAULT`);
  t.same(byDefault.body.items, [], 'no longer listed under the default employee');
});

t.test('bad events: 400 with the reason, nothing applied', async (t) => {
  const g = await startTestGateway(t);
  const callSid = randomSid('CA');
  const cases: [unknown, RegExp][] = [
    [{ type: 'exploded', callSid }, /type/],
    [{ type: 'connected', callSid: 'CA123' }, /callSid/],
    [{ type: 'connected' }, /callSid/],
    [{ type: 'connected', callSid, ctiSessionId: 'S-1', at: 'yesterday' }, /at/],
    [{ type: 'connected', callSid, ctiSessionId: '' }, /ctiSessionId/],
  ];
  for (const [body, reason] of cases) {
    const res = await post(`${g.http}/v1/cti/events`, body);
    t.equal(res.status, 400, JSON.stringify(body));
    t.equal(res.body.error, 'bad_request');
    t.match(res.body.message, reason);
  }
  const notJson = await fetch(`${g.http}/v1/cti/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"type":' });
  t.equal(notJson.status, 400);
  // none of them left state behind: the call is unknown, a stream of it stays unattributed
  t.equal((await post(`${g.http}/v1/calls/${callSid}/pause`)).status, 404, 'the call is still unknown');
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 6, frames: 10, realtime: false, callSid });
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);
  t.equal(rec.ctiSessionId, null);
  await access(g.dir);
});
