// Issue 9.10c: a ctiSessionId / employeeId longer than 256 characters was recorded but could not
// be searched (the search parameters stop at 256). One limit at ingest: a longer id is clipped
// with a marker (never refused: metadata must not cost audio), searches are clipped the same way.
import t from 'tap';
import { runStream } from '../loadtest/stream-runner.js';
import { randomSid } from '../loadtest/sids.js';
import { trackAudio } from '../loadtest/audio-fixtures.js';
import { MAX_ID_CHARS, clipId } from '../recorder/ingest-limits.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { startTestGateway, waitForRecordings, getJson, decodeWav, readSidecarFromDisk } from './fixtures/harness.js';
import { post, until } from './fixtures/calls.js';

const chars = (s: string) => [...s].length;
const longId = (prefix: string, n: number) => (prefix + 'x'.repeat(n)).slice(0, n);

t.test('clipId: short ids untouched, long ones clipped to 256 characters with a hash marker', async (t) => {
  t.equal(clipId('S-1042'), 'S-1042');
  const exact = longId('E', 256);
  t.equal(clipId(exact), exact, 'exactly 256 characters stay');
  const a = clipId(longId('A', 257));
  t.equal(chars(a), MAX_ID_CHARS);
  t.match(a, /^Ax+\.\.\.\[sha256:[0-9a-f]{16}\]$/);
  t.equal(clipId(a), a, 'idempotent');
  t.not(clipId(`${'y'.repeat(300)}1`), clipId(`${'y'.repeat(300)}2`), 'ids that differ only past the limit stay distinct');
  // 300 emoji: counted as characters (code points), never split into half a surrogate pair
  const emoji = clipId('😀'.repeat(300));
  t.equal(chars(emoji), MAX_ID_CHARS);
  t.notMatch(emoji, /[\uD800-\uDBFF](?![\uDC00-\uDFFF])/, 'no lone high surrogate');
  t.equal(clipId('😀'.repeat(256)), '😀'.repeat(256), '256 emoji (512 UTF-16 units) are 256 characters: kept');
});

t.test('stream <Parameter>s over 256 characters: the call is recorded in full, searchable by the full value', async (t) => {
  const g = await startTestGateway(t);
  const cti = longId('CTI-', 400);
  const emp = longId('EMP-', 300);
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 5, frames: 50, realtime: false, customParameters: { ctiSessionId: cti, employeeId: emp } });
  t.equal(res.closeCode, 1000);
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);
  t.equal(rec.ctiSessionId, clipId(cti), 'sidecar: the clipped id');
  t.equal(rec.employeeId, clipId(emp));
  t.ok(chars(rec.ctiSessionId!) <= MAX_ID_CHARS && chars(rec.employeeId!) <= MAX_ID_CHARS);
  t.equal(rec.customParameters.ctiSessionId, cti, 'customParameters keep what Twilio sent');
  t.equal(rec.framesReceived, 50, 'every frame recorded');
  const audio = await fetch(`${g.http}/v1/recordings/${rec.recordingId}/audio`);
  t.same(decodeWav(Buffer.from(await audio.arrayBuffer())).channel[0], Array.from(trackAudio(5, 'inbound', 50)), 'the audio, sample by sample');

  for (const [what, q] of [['full ctiSessionId', `ctiSessionId=${encodeURIComponent(cti)}`], ['clipped ctiSessionId', `ctiSessionId=${encodeURIComponent(clipId(cti))}`], ['full employeeId', `employeeId=${encodeURIComponent(emp)}`]]) {
    const found = await getJson<{ items: RecordingSidecar[] }>(`${g.http}/v1/recordings?${q}`);
    t.equal(found.status, 200, `search by ${what}: 200`);
    t.same(found.body.items.map((s) => s.recordingId), [rec.recordingId], `search by ${what} finds it`);
  }
  const session = await getJson<{ recordings: RecordingSidecar[] }>(`${g.http}/v1/cti-sessions/${encodeURIComponent(clipId(cti))}`);
  t.equal(session.status, 200);
  t.equal(session.body.recordings.length, 1, 'the CTI session by its stored id');
  const contact = await fetch(`${g.http}/v1/cti-sessions/${encodeURIComponent(clipId(cti))}/audio`, { method: 'HEAD' });
  t.equal(contact.status, 200, 'and its contact audio');
});

t.test('CTI API ids over 256 characters are clipped the same way (not refused), and re-attribute', async (t) => {
  const g = await startTestGateway(t);
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 6, frames: 25, realtime: false, customParameters: { ctiSessionId: 'short' } });
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);
  const cti = longId('CRM-', 1000);
  const emp = longId('agent-', 257);
  const r = await post(`${g.http}/v1/cti/events`, { type: 'connected', callSid: res.callSid, ctiSessionId: cti, employeeId: emp });
  t.equal(r.status, 200, 'accepted: refusing would lose the event (here: the call is kept)');
  t.match(r.body, { ctiSessionId: clipId(cti), employeeId: clipId(emp), kept: true });
  const found = await until(async () => {
    const l = await getJson<{ items: RecordingSidecar[] }>(`${g.http}/v1/recordings?ctiSessionId=${encodeURIComponent(cti)}`);
    return l.body.items.length === 1 ? l.body.items : null;
  }, 're-attributed recording searchable by the full id');
  t.equal(found[0]!.recordingId, rec.recordingId);
  const onDisk = await readSidecarFromDisk(g.dir, found[0]!);
  t.equal(onDisk.ctiSessionId, clipId(cti), 'the sidecar on disk holds the clipped id');
  t.equal(onDisk.employeeId, clipId(emp));
  const stillRefused = await post(`${g.http}/v1/cti/events`, { type: 'connected', callSid: randomSid('CA'), ctiSessionId: '' });
  t.equal(stillRefused.status, 400, 'an empty id is still a bad event');
});
