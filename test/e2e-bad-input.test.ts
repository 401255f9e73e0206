// Bad input, one case each: the gateway answers with a clear error (metric by kind, close code
// where the contract says so) and loses nothing. Every case runs beside a clean concurrent
// stream that must stay bit-exact, and the bad stream's own good audio must survive too.
import t, { type Test } from 'tap';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { TwilioStreamClient, UpgradeRefusedError } from '../loadtest/twilio-stream-client.js';
import { runStream, type RunStreamResult } from '../loadtest/stream-runner.js';
import { frameFor, trackAudio } from '../loadtest/audio-fixtures.js';
import { randomSid } from '../loadtest/sids.js';
import { startTestGateway, waitForRecordings, fetchAudio, decodeWav, type TestGateway } from './fixtures/harness.js';
import { ERROR_BUDGET } from '../gateway/twilio/twilio-route.js';
import { until } from './fixtures/calls.js';

const CLEAN_FRAMES = 200;

/** A clean neighbour stream: started now, checked bit-exact by `verify`. */
function cleanNeighbour(g: TestGateway, seed: number, accountSid?: string) {
  const run = runStream({ url: g.wsUrl, tracks: ['inbound', 'outbound'], seed, frames: CLEAN_FRAMES, realtime: false, accountSid });
  return async (t: Test) => {
    const res: RunStreamResult = await run;
    t.equal(res.closeCode, 1000, 'neighbour closed normally');
    const [rec] = await waitForRecordings(g.http, res.callSid, 1);
    const d = decodeWav(await fetchAudio(g.http, rec.recordingId));
    t.ok(Buffer.from(d.channel[0]!).equals(trackAudio(seed, 'inbound', CLEAN_FRAMES)), 'neighbour inbound bit-exact');
    t.ok(Buffer.from(d.channel[1]!).equals(trackAudio(seed, 'outbound', CLEAN_FRAMES)), 'neighbour outbound bit-exact');
    t.match(rec, { framesReceived: 2 * CLEAN_FRAMES, framesMissing: 0, closeReason: 'stop' });
  };
}

async function protocolErrors(g: TestGateway, kind: string): Promise<number> {
  const text = await (await fetch(`${g.http}/metrics`)).text();
  const m = text.match(new RegExp(`^gateway_protocol_errors_total\\{kind="${kind}"\\} (\\d+)`, 'm'));
  return m ? Number(m[1]) : NaN;
}

/** reasons of the audio_dropped alarms raised so far */
async function droppedAlarms(g: TestGateway): Promise<(string | undefined)[]> {
  const r = await (await fetch(`${g.http}/v1/alarms?kind=audio_dropped`)).json() as { items: { details?: { reason?: string } }[] };
  return r.items.map((a) => a.details?.reason);
}

/** protocol errors that refuse a media message: its audio is dropped, which raises an alarm */
const MEDIA_DROPS = new Set(['bad_base64', 'wrong_stream_sid', 'unexpected_track', 'media_before_start']);

async function open(g: TestGateway, opts: Parameters<typeof TwilioStreamClient.connect>[1] = {}) {
  const c = await TwilioStreamClient.connect(g.wsUrl, opts);
  c.sendConnected();
  return c;
}

function sendFrames(c: TwilioStreamClient, seed: number, from: number, to: number): void {
  for (let i = from; i < to; i++) c.sendMedia('inbound', frameFor(seed, 'inbound', i), i * 20);
}

/** The bad stream's good frames 0..n-1 must be on disk exactly. */
async function expectIntact(t: Test, g: TestGateway, callSid: string, seed: number, n: number, closeReason = 'stop') {
  const [rec] = await waitForRecordings(g.http, callSid, 1);
  t.equal(rec.closeReason, closeReason, `bad stream finalised as ${closeReason}`);
  t.equal(rec.framesReceived, n, 'every good frame counted');
  const d = decodeWav(await fetchAudio(g.http, rec.recordingId));
  t.ok(Buffer.from(d.channel[0]!).equals(trackAudio(seed, 'inbound', n)), 'bad stream audio intact');
}

/** Good frames, the bad message(s), more good frames, stop: the bad part must change nothing. */
const injected: [name: string, kind: string, inject: (c: TwilioStreamClient) => void][] = [
  ['not JSON', 'not_json', (c) => c.sendRaw('{"event":"media", this is not json')],
  ['a binary frame', 'binary_frame', (c) => c.sendRaw(Buffer.from([1, 2, 3, 4]), true)],
  ['wrong field types (timestamp as a number)', 'invalid_message', (c) => c.sendRaw(JSON.stringify({
    event: 'media', sequenceNumber: '99', streamSid: c.streamSid, media: { track: 'inbound', chunk: '1', timestamp: 400, payload: 'AAAA' },
  }))],
  ['wrong field types (unknown track)', 'invalid_message', (c) => c.sendRaw(JSON.stringify({
    event: 'media', sequenceNumber: '99', streamSid: c.streamSid, media: { track: 'both', chunk: '1', timestamp: '400', payload: 'AAAA' },
  }))],
  ['a JSON array', 'invalid_message', (c) => c.sendRaw('[1,2,3]')],
  ['bad base64', 'bad_base64', (c) => c.sendRaw(JSON.stringify({
    event: 'media', sequenceNumber: '99', streamSid: c.streamSid, media: { track: 'inbound', chunk: '1', timestamp: '400', payload: '!!!!not*base64@@' },
  }))],
  ['an empty payload', 'invalid_message', (c) => c.sendRaw(JSON.stringify({
    event: 'media', sequenceNumber: '99', streamSid: c.streamSid, media: { track: 'inbound', chunk: '1', timestamp: '400', payload: '' },
  }))],
  ['a second start', 'duplicate_start', (c) => c.sendStart({ tracks: ['inbound', 'outbound'], callSid: randomSid('CA') })],
  ['a wrong streamSid', 'wrong_stream_sid', (c) => c.sendRaw(JSON.stringify({
    event: 'media', sequenceNumber: '99', streamSid: randomSid('MZ'), media: { track: 'inbound', chunk: '1', timestamp: '400', payload: frameFor(1, 'outbound', 0).toString('base64') },
  }))],
  ['media on a track the stream does not have', 'unexpected_track', (c) => c.sendMedia('outbound', frameFor(1, 'outbound', 0), 400)],
  ['a timestamp jump of hours', 'timestamp_jump', (c) => c.sendMedia('inbound', frameFor(1, 'inbound', 0), 5 * 3600 * 1000)],
];

for (const [name, kind, inject] of injected) {
  t.test(`bad input: ${name}`, async (t) => {
    const g = await startTestGateway(t);
    const verifyNeighbour = cleanNeighbour(g, 500);
    const before = await protocolErrors(g, kind);
    const c = await open(g);
    c.sendStart({ tracks: ['inbound'] });
    const callSid = c.callSid;
    sendFrames(c, 9, 0, 20);
    inject(c);
    sendFrames(c, 9, 20, 40);
    c.sendStop();
    const closed = await c.closed;
    t.equal(closed.code, 1000, 'one bad message does not end the stream');
    await expectIntact(t, g, callSid, 9, 40);
    t.equal(await protocolErrors(g, kind), before + 1, `counted as ${kind}`);
    if (MEDIA_DROPS.has(kind)) t.same(await droppedAlarms(g), [kind], 'the dropped audio raised one alarm');
    else if (kind !== 'timestamp_jump') t.same(await droppedAlarms(g), [], 'no audio dropped, no alarm');
    await verifyNeighbour(t);
  });
}

t.test('bad input: an unknown event is ignored (Twilio adds events)', async (t) => {
  const g = await startTestGateway(t);
  const verifyNeighbour = cleanNeighbour(g, 501);
  const c = await open(g);
  c.sendStart({ tracks: ['inbound'] });
  sendFrames(c, 9, 0, 20);
  c.sendRaw(JSON.stringify({ event: 'transcription', streamSid: c.streamSid, text: 'hello' }));
  c.sendDtmf('5');
  c.sendMark('m1');
  sendFrames(c, 9, 20, 40);
  c.sendStop();
  t.equal((await c.closed).code, 1000);
  await expectIntact(t, g, c.callSid, 9, 40);
  t.equal(await protocolErrors(g, 'unknown_event'), 1, 'counted, not an error for the stream');
  await verifyNeighbour(t);
});

t.test('bad input: media (and stop) before start', async (t) => {
  const g = await startTestGateway(t);
  const verifyNeighbour = cleanNeighbour(g, 502);
  const c = await open(g);
  c.sendMedia('inbound', frameFor(9, 'inbound', 0), 0);
  c.sendStart({ tracks: ['inbound'] });
  sendFrames(c, 9, 0, 40);
  c.sendStop();
  t.equal((await c.closed).code, 1000);
  await expectIntact(t, g, c.callSid, 9, 40);
  t.equal(await protocolErrors(g, 'media_before_start'), 1);
  t.same(await droppedAlarms(g), ['media_before_start'], 'the dropped audio raised one alarm');
  await verifyNeighbour(t);
});

t.test('bad input: an odd-sized payload is placed by its timestamp and overlaps nothing else', async (t) => {
  const g = await startTestGateway(t);
  const verifyNeighbour = cleanNeighbour(g, 503);
  const c = await open(g);
  c.sendStart({ tracks: ['inbound'] });
  sendFrames(c, 9, 0, 10);
  const odd = Buffer.concat([frameFor(9, 'inbound', 10), Buffer.from([0x42])]); // 161 bytes
  c.sendMedia('inbound', odd, 200);
  sendFrames(c, 9, 11, 40); // frame 11 overwrites the extra byte
  c.sendStop();
  await c.closed;
  await expectIntact(t, g, c.callSid, 9, 40);
  await verifyNeighbour(t);
});

t.test('bad input: timestamps going backwards never corrupt written audio', async (t) => {
  const g = await startTestGateway(t);
  const verifyNeighbour = cleanNeighbour(g, 504);
  const c = await open(g);
  c.sendStart({ tracks: ['inbound'] });
  sendFrames(c, 9, 0, 200); // 4 s: the first 3 s are on disk by now
  c.sendMedia('inbound', Buffer.alloc(160, 0x11), 0); // far back, other content: too late
  c.sendMedia('inbound', Buffer.alloc(160, 0x22), 199 * 20); // a re-sent recent frame: duplicate
  sendFrames(c, 9, 200, 250);
  c.sendStop();
  await c.closed;
  const [rec] = await waitForRecordings(g.http, c.callSid, 1);
  t.match(rec, { framesReceived: 250, framesTooLate: 1, framesDuplicate: 1 });
  t.ok(Buffer.from(decodeWav(await fetchAudio(g.http, rec.recordingId)).channel[0]!).equals(trackAudio(9, 'inbound', 250)), 'audio unchanged');
  await verifyNeighbour(t);
});

t.test('bad input: an unknown accountSid is refused (1008) and nothing is recorded', async (t) => {
  const account = randomSid('AC');
  const g = await startTestGateway(t, { TWILIO_ACCOUNT_SID: account });
  const verifyNeighbour = cleanNeighbour(g, 505, account);
  const c = await open(g);
  c.sendStart({ tracks: ['inbound'], accountSid: randomSid('AC') });
  sendFrames(c, 9, 0, 10);
  const closed = await c.closed;
  t.equal(closed.code, 1008);
  t.match(closed.reason, /accountSid/);
  t.equal(await protocolErrors(g, 'unknown_account'), 1);
  const list = await (await fetch(`${g.http}/v1/recordings?callSid=${c.callSid}`)).json() as { items: unknown[] };
  t.same(list.items, [], 'no recording for the refused stream');
  await verifyNeighbour(t);
  const refused = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 6, frames: 5, realtime: false });
  t.equal(refused.closeCode, 1008);
});

t.test('bad input: a message over 64 KiB closes that stream (1009) and keeps its audio', async (t) => {
  const g = await startTestGateway(t);
  const verifyNeighbour = cleanNeighbour(g, 506);
  const c = await open(g);
  c.sendStart({ tracks: ['inbound'] });
  sendFrames(c, 9, 0, 30);
  c.sendRaw(JSON.stringify({ event: 'media', streamSid: c.streamSid, pad: 'x'.repeat(70 * 1024) }));
  const closed = await c.closed;
  t.equal(closed.code, 1009, 'closed as message too big');
  await expectIntact(t, g, c.callSid, 9, 30, 'hangup');
  t.equal(await protocolErrors(g, 'message_too_large'), 1);
  await verifyNeighbour(t);
});

t.test('bad input: a stream that keeps sending garbage is closed (1007) and its audio finalised', async (t) => {
  const g = await startTestGateway(t);
  const verifyNeighbour = cleanNeighbour(g, 507);
  const c = await open(g);
  c.sendStart({ tracks: ['inbound'] });
  sendFrames(c, 9, 0, 30);
  for (let i = 0; i <= ERROR_BUDGET.limit; i++) c.sendRaw(`garbage ${i}`);
  const closed = await c.closed;
  t.equal(closed.code, 1007);
  await expectIntact(t, g, c.callSid, 9, 30, 'hangup');
  await verifyNeighbour(t);
});

t.test('bad input: garbage mixed with valid frames is closed (1007) once the error budget is spent', async (t) => {
  // One valid frame, then three invalid messages, again and again: never 20 bad ones in a row,
  // but 75 bad messages a second. More than ERROR_BUDGET.limit of them within the window close it.
  const g = await startTestGateway(t);
  const verifyNeighbour = cleanNeighbour(g, 510);
  const c = await open(g);
  c.sendStart({ tracks: ['inbound'] });
  const groups = ERROR_BUDGET.limit * 4;
  for (let i = 0; i < groups; i++) {
    sendFrames(c, 9, i, i + 1);
    c.sendRaw(`garbage ${i}`);
    c.sendRaw('[1,2,3]');
    c.sendRaw(Buffer.from([i & 0xff]), true);
  }
  c.sendStop();
  const closed = await c.closed;
  t.equal(closed.code, 1007, 'closed for invalid data, not by the stop at the end');
  // the (limit+1)-th bad message comes in group floor(limit / 3): the frames before it are kept
  const kept = Math.floor(ERROR_BUDGET.limit / 3) + 1;
  await expectIntact(t, g, c.callSid, 9, kept, 'hangup');
  await verifyNeighbour(t);
});

t.test('bad input: metadata never refuses a call (control characters, huge or many customParameters)', async (t) => {
  const g = await startTestGateway(t);
  const verifyNeighbour = cleanNeighbour(g, 511);
  const many: Record<string, string> = {};
  for (let i = 0; i < 150; i++) many[`p${i}`] = `v${i}`;
  const hugeKey = 'k'.repeat(40_000);
  const params: Record<string, string> = {
    ...many,
    ctiSessionId: 'S-\n1042\twith tab',
    employeeId: 'E77',
    longButFine: 'x'.repeat(600),
    huge: 'y'.repeat(5000),
    [hugeKey]: 'value of a huge key',
    ['__proto__']: 'not a prototype',
  };
  t.ok(params.ctiSessionId!.includes('\n') && params.ctiSessionId!.includes('\t'), 'a value with a newline and a tab');
  const c = await open(g);
  c.sendStart({ tracks: ['inbound'], customParameters: params });
  sendFrames(c, 9, 0, 40);
  c.sendStop();
  t.equal((await c.closed).code, 1000, 'recorded and stopped normally');
  await expectIntact(t, g, c.callSid, 9, 40);
  const [rec] = await waitForRecordings(g.http, c.callSid, 1);
  const kept = rec.customParameters;
  t.equal(rec.ctiSessionId, params.ctiSessionId, 'the newline and tab are kept as sent');
  t.equal(kept.longButFine, params.longButFine, 'a 600-character value is kept whole');
  t.match(kept.huge, /^y{1024}…\[clipped 3976 chars\]$/, 'a huge value is clipped with a visible marker');
  const clippedKey = Object.keys(kept).find((k) => k.startsWith('kkkk'));
  t.equal(clippedKey, `${'k'.repeat(256)}…[clipped 39744 chars]`, 'a huge key is clipped with a marker');
  t.equal(kept[clippedKey as string], 'value of a huge key');
  for (let i = 0; i < 150; i++) if (kept[`p${i}`] !== `v${i}`) t.fail(`parameter p${i} kept`);
  t.equal(Object.keys(kept).filter((k) => /^p\d+$/.test(k)).length, 150, 'all 150 parameters kept');
  t.equal(Object.getOwnPropertyDescriptor(kept, '__proto__')?.value, 'not a prototype', '"__proto__" is kept as a plain key');
  t.equal(await protocolErrors(g, 'invalid_message'), 0, 'nothing counted as invalid');
  await verifyNeighbour(t);
});

t.test('bad input: a streamSid shaped as a UUID is recorded (it is path-safe)', async (t) => {
  const g = await startTestGateway(t);
  const uuid = '3f2b8c1e-9d4a-4b7c-8e6f-1a3b5d7c9e0f';
  const c = await open(g, { streamSid: uuid });
  c.sendStart({ tracks: ['inbound'] });
  sendFrames(c, 9, 0, 40);
  c.sendStop();
  t.equal((await c.closed).code, 1000);
  await expectIntact(t, g, c.callSid, 9, 40);
  const [rec] = await waitForRecordings(g.http, c.callSid, 1);
  t.equal(rec.recordingId, `${uuid}-0000`);
  t.equal(rec.streamSid, uuid);
  const one = await fetch(`${g.http}/v1/recordings/${rec.recordingId}`);
  t.equal(one.status, 200, 'found by its id through the API');
});

t.test('bad input: close without stop, in the middle of a frame burst', async (t) => {
  const g = await startTestGateway(t);
  const verifyNeighbour = cleanNeighbour(g, 508);
  const c = await open(g);
  c.sendStart({ tracks: ['inbound'] });
  sendFrames(c, 9, 0, 30);
  // every frame read by the gateway (its newest sample is the 30th frame's end), then cut
  await until(() => (g.gw.recorder.streamsOfCall(c.callSid)[0]?.frontier ?? 0) >= 30 * 160, 'the 30 frames at the gateway');
  await c.terminate();
  await expectIntact(t, g, c.callSid, 9, 30, 'hangup');
  await verifyNeighbour(t);
});

t.test('bad input: ids shaped to escape the recordings folder are refused by shape', async (t) => {
  const g = await startTestGateway(t);
  const verifyNeighbour = cleanNeighbour(g, 509);
  const attempts = [
    { callSid: '../../../../tmp/evil', streamSid: randomSid('MZ') },
    { callSid: randomSid('CA'), streamSid: 'MZ/../../../../../tmp/evil000000000000' },
    { callSid: `CA${'0'.repeat(31)}/`, streamSid: randomSid('MZ') },
    { callSid: randomSid('CA'), streamSid: randomSid('MZ'), accountSid: '..%2F..%2Fetc' },
  ];
  for (const a of attempts) {
    const c = await open(g);
    c.sendRaw(JSON.stringify({
      event: 'start', sequenceNumber: '1', streamSid: a.streamSid,
      start: {
        accountSid: a.accountSid ?? randomSid('AC'), callSid: a.callSid, streamSid: a.streamSid, tracks: ['inbound'],
        customParameters: {}, mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
      },
    }));
    c.sendRaw(JSON.stringify({ event: 'media', sequenceNumber: '2', streamSid: a.streamSid, media: { track: 'inbound', chunk: '1', timestamp: '0', payload: frameFor(1, 'inbound', 0).toString('base64') } }));
    c.sendRaw(JSON.stringify({ event: 'stop', sequenceNumber: '3', streamSid: a.streamSid }));
    await c.close();
  }
  t.ok(await protocolErrors(g, 'invalid_message') >= 4, 'each refused as an invalid start');
  // the gateway's own dot-entries (in-progress, ids, the embedded catalog) are not recordings
  const notOwn = (e: string) => e !== '.inprogress' && e !== '.ids' && !e.startsWith('.catalog.sqlite');
  const top = (await readdir(g.dir)).filter(notOwn);
  await verifyNeighbour(t);
  const after = (await readdir(g.dir)).filter(notOwn);
  t.same(top, [], 'nothing written for the bad ids');
  t.equal(after.length, 1, 'only the neighbour account folder exists');
  t.match(after[0], /^AC[0-9a-f]{32}$/);
  await t.rejects(readdir(path.join(g.dir, '..', 'tmp', 'evil')), 'nothing escaped the folder');
});

t.test('bad input: a signed gateway refuses unsigned, wrongly signed and query-string upgrades before opening', async (t) => {
  const account = randomSid('AC');
  const token = 'f'.repeat(32);
  const g = await startTestGateway(t, { TWILIO_ACCOUNT_SID: account, TWILIO_AUTH_TOKEN: token, WEBSOCKET_TARGET_URL: 'wss://lb.example.com/twilio/v1' });
  const status = async (p: Promise<unknown>) => {
    try {
      await p;
      return 101;
    } catch (err) {
      return err instanceof UpgradeRefusedError ? err.status : -1;
    }
  };
  t.equal(await status(TwilioStreamClient.connect(g.wsUrl)), 403, 'no signature');
  t.equal(await status(TwilioStreamClient.connect(g.wsUrl, { authToken: 'e'.repeat(32), signUrl: 'wss://lb.example.com/twilio/v1' })), 403, 'wrong token');
  t.equal(await status(TwilioStreamClient.connect(g.wsUrl, { authToken: token })), 403, 'signed for the internal URL, not the public one');
  t.equal(await status(TwilioStreamClient.connect(`${g.wsUrl}?token=x`, { authToken: token, signUrl: 'wss://lb.example.com/twilio/v1' })), 400, 'query string');
  const res = await runStream({ url: g.wsUrl, authToken: token, signUrl: 'wss://lb.example.com/twilio/v1', accountSid: account, tracks: ['inbound'], seed: 3, frames: 25, realtime: false });
  t.equal(res.closeCode, 1000, 'a correctly signed stream records');
  const [rec] = await waitForRecordings(g.http, res.callSid, 1);
  t.equal(rec.framesReceived, 25);
  const other = await runStream({ url: g.wsUrl, authToken: token, signUrl: 'wss://lb.example.com/twilio/v1', tracks: ['inbound'], seed: 3, frames: 5, realtime: false });
  t.equal(other.closeCode, 1008, 'signed by this account but start names another: refused');
  const metrics = await (await fetch(`${g.http}/metrics`)).text();
  t.match(metrics, /gateway_upgrades_refused_total\{reason="forbidden"\} 3/);
});
