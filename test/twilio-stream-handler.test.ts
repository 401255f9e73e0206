// TwilioStreamHandler as a unit: Twilio's messages pushed in as the route does, a stand-in
// socket (the handler only ever closes it: the real socket is the e2e tests' part) and a clock
// the test moves. The recorder behind it is the real one, writing real files.
import t, { type Test } from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { loadConfig } from '../gateway/config.js';
import { TwilioStreamHandler, type DropReason, type StreamHandlerDeps } from '../gateway/twilio/twilio-stream.js';
import { Recorder } from '../recorder/recorder.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { frameFor, trackAudio } from '../loadtest/audio-fixtures.js';
import { audioPathOnDisk, decodeWav } from './fixtures/harness.js';
import { until } from './fixtures/calls.js';

const ACCOUNT = `AC${'a'.repeat(32)}`;
const CALL = `CA${'c'.repeat(32)}`;
const STREAM = `MZ${'5'.repeat(32)}`;

class FakeSocket {
  closes: { code: number; reason: string }[] = [];
  close(code: number, reason: string): void { this.closes.push({ code, reason }); }
}

interface Rig {
  handler: TwilioStreamHandler;
  socket: FakeSocket;
  recorder: Recorder;
  dir: string;
  clock: { now: number };
  errors: string[];
  dropped: { reason: DropReason; detail: string }[];
  leadRefused: number;
  published: RecordingSidecar[];
}

async function rig(t: Test, deps: Partial<StreamHandlerDeps> = {}): Promise<Rig> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-handler-'));
  const clock = { now: 0 };
  const settings = loadConfig({ RECORDINGS_DIR: dir }).defaults;
  const published: RecordingSidecar[] = [];
  const recorder = new Recorder({
    recordingsDir: dir, nodeId: 'unit', settingsFor: () => settings, idleTimeoutMs: 30_000,
    now: () => clock.now, onRecording: (s) => { published.push(s); },
  });
  const socket = new FakeSocket();
  const r: Rig = { handler: null as unknown as TwilioStreamHandler, socket, recorder, dir, clock, errors: [], dropped: [], leadRefused: 0, published };
  r.handler = new TwilioStreamHandler(socket, {
    recorder,
    acceptAccount: (sid) => sid === ACCOUNT,
    log: pino({ level: 'silent' }),
    onProtocolError: (kind) => { r.errors.push(kind); },
    errorBudget: { limit: 10, windowMs: 10_000 },
    maxLeadMs: 60_000,
    startTimeoutMs: 0,
    now: () => clock.now,
    onAudioDropped: (reason, _ids, detail) => { r.dropped.push({ reason, detail }); },
    onLeadRefused: () => { r.leadRefused++; },
    ...deps,
  });
  t.teardown(async () => {
    // a stream a test left open is ended and written out before its directory goes
    r.handler.endByServer('shutdown');
    await r.handler.finished;
    await rm(dir, { recursive: true, force: true });
  });
  return r;
}

const send = (r: Rig, msg: unknown) => r.handler.onMessage(Buffer.from(JSON.stringify(msg)), false);
const start = (r: Rig, tracks = ['inbound'], accountSid = ACCOUNT) => send(r, {
  event: 'start', sequenceNumber: '1', streamSid: STREAM,
  start: { accountSid, callSid: CALL, tracks, mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 } },
});
const media = (r: Rig, i: number, opts: { track?: string; streamSid?: string; ms?: number } = {}) => send(r, {
  event: 'media', streamSid: opts.streamSid ?? STREAM,
  media: { track: opts.track ?? 'inbound', chunk: String(i + 1), timestamp: String(opts.ms ?? i * 20), payload: frameFor(3, 'inbound', i).toString('base64') },
});

async function samplesOf(r: Rig, s: RecordingSidecar): Promise<Buffer> {
  return Buffer.from(decodeWav(await readFile(audioPathOnDisk(r.dir, s))).channel[0]!);
}

t.test('start, media, stop: recorded bit-exact, socket closed 1000, nothing refused', async (t) => {
  const r = await rig(t);
  send(r, { event: 'connected', protocol: 'Call', version: '1.0.0' });
  start(r);
  t.equal(r.handler.currentState, 'recording');
  for (let i = 0; i < 50; i++) media(r, i);
  send(r, { event: 'mark', streamSid: STREAM, mark: { name: 'm' } });
  send(r, { event: 'stop', streamSid: STREAM });
  t.same(r.socket.closes, [{ code: 1000, reason: 'stopped' }]);
  t.equal(r.handler.currentState, 'ended');
  await r.handler.finished;
  t.equal(r.published.length, 1);
  t.match(r.published[0], { closeReason: 'stop', framesReceived: 50, framesMissing: 0 });
  t.ok((await samplesOf(r, r.published[0]!)).equals(trackAudio(3, 'inbound', 50)), 'bit-exact');
  t.same(r.errors, []);
  t.same(r.dropped, []);
  media(r, 50);
  t.same(r.errors, [], 'messages after the end are ignored');
});

t.test('refused media, each named: one alarm per reason, counted every time, recording untouched', async (t) => {
  const r = await rig(t);
  media(r, 0);
  media(r, 1);
  t.same(r.dropped.map((d) => d.reason), ['media_before_start'], 'media before start: one alarm');
  t.same(r.errors, ['media_before_start', 'media_before_start'], 'counted each time');
  start(r);
  for (let i = 0; i < 10; i++) media(r, i);
  media(r, 10, { streamSid: `MZ${'6'.repeat(32)}` });
  media(r, 11, { streamSid: `MZ${'6'.repeat(32)}` });
  media(r, 12, { track: 'outbound' });
  send(r, { event: 'media', streamSid: STREAM, media: { track: 'inbound', timestamp: '260', payload: '@@@@' } });
  t.same(r.dropped.map((d) => d.reason), ['media_before_start', 'wrong_stream_sid', 'unexpected_track', 'bad_base64']);
  t.same(r.errors.slice(2), ['wrong_stream_sid', 'wrong_stream_sid', 'unexpected_track', 'bad_base64']);
  send(r, { event: 'stop', streamSid: STREAM });
  await r.handler.finished;
  t.match(r.published[0], { framesReceived: 10, framesMissing: 0 });
  t.ok((await samplesOf(r, r.published[0]!)).equals(trackAudio(3, 'inbound', 10)), 'only the good frames, bit-exact');
});

t.test('timestamps ahead of the stream\'s age are refused by the injected clock, not the wall', async (t) => {
  const r = await rig(t, { maxLeadMs: 1000 });
  r.clock.now = 5_000;
  start(r);
  media(r, 0, { ms: 0 });
  media(r, 1, { ms: 980 }); // within 0 s of age + 1 s
  media(r, 2, { ms: 1000 }); // at the bound: refused
  t.equal(r.leadRefused, 1);
  t.same(r.dropped.map((d) => d.reason), ['timestamp_lead']);
  t.same(r.errors, ['timestamp_jump']);
  r.clock.now = 5_500; // the stream is 0.5 s old: 1.5 s ahead is the bound now
  media(r, 3, { ms: 1480 });
  t.equal(r.leadRefused, 1, '1480 ms accepted once the clock moved');
  media(r, 4, { ms: 1500 });
  t.equal(r.leadRefused, 2, '1500 ms refused');
  t.equal(r.dropped.length, 1, 'one alarm per stream and reason');
});

t.test('the error budget closes a stream that keeps sending garbage: 1007 for bad data, recording kept as hangup', async (t) => {
  const r = await rig(t, { errorBudget: { limit: 3, windowMs: 1000 } });
  start(r);
  for (let i = 0; i < 5; i++) media(r, i);
  r.handler.onMessage('{not json', false);
  r.handler.onMessage('{not json', false);
  r.clock.now = 2_000; // outside the window: the first two no longer count
  r.handler.onMessage('{not json', false);
  r.handler.onMessage('{not json', false);
  r.handler.onMessage('{not json', false);
  t.same(r.socket.closes, [], 'three within the window: still open');
  r.handler.onMessage('{not json', false);
  t.same(r.socket.closes, [{ code: 1007, reason: 'too many invalid messages' }], 'the fourth within 1 s closes it');
  await r.handler.finished;
  t.match(r.published[0], { closeReason: 'hangup', framesReceived: 5 });
});

t.test('binary frames, duplicate start, unknown account: named protocol errors and their closes', async (t) => {
  const r = await rig(t);
  r.handler.onMessage(Buffer.from([1, 2, 3]), true);
  t.same(r.errors, ['binary_frame']);
  start(r, ['inbound'], `AC${'b'.repeat(32)}`);
  t.same(r.errors, ['binary_frame', 'unknown_account']);
  t.same(r.socket.closes, [{ code: 1008, reason: 'unknown accountSid' }]);
  t.equal(r.recorder.get(STREAM), undefined, 'nothing recorded for an account that is not configured');

  const r2 = await rig(t);
  start(r2);
  start(r2);
  t.same(r2.errors, ['duplicate_start'], 'a second start is ignored');
  t.equal(r2.handler.currentState, 'recording');
  send(r2, { event: 'future-event', streamSid: STREAM });
  t.same(r2.errors, ['duplicate_start', 'unknown_event'], 'unknown events are counted, not fatal');
  t.same(r2.socket.closes, []);
});

t.test('closed by the node: shutdown is 1001, idle is 1000; a socket that went away is a hangup', async (t) => {
  const r = await rig(t);
  start(r);
  media(r, 0);
  r.handler.endByServer('shutdown');
  t.same(r.socket.closes, [{ code: 1001, reason: 'shutdown' }]);
  r.handler.endByServer('idle');
  t.equal(r.socket.closes.length, 1, 'ended once');
  await r.handler.finished;
  t.equal(r.published[0]!.closeReason, 'shutdown');

  const r2 = await rig(t);
  start(r2);
  media(r2, 0);
  r2.handler.onClose(1006);
  await r2.handler.finished;
  t.same(r2.socket.closes, [], 'the socket is already gone: nothing to close');
  t.equal(r2.published[0]!.closeReason, 'hangup');
});

t.test('a socket that never sends start is closed 1008 after START_TIMEOUT', async (t) => {
  const r = await rig(t, { startTimeoutMs: 30 });
  await until(() => r.socket.closes.length > 0, 'the start timeout');
  t.same(r.socket.closes, [{ code: 1008, reason: 'no start message in time' }]);
  t.same(r.errors, ['start_timeout']);
  const r2 = await rig(t, { startTimeoutMs: 30 });
  start(r2);
  send(r2, { event: 'stop', streamSid: STREAM });
  await r2.handler.finished;
  const r3 = await rig(t, { startTimeoutMs: 30 });
  await until(() => r3.socket.closes.length > 0, 'a later timeout on another handler');
  t.same(r2.errors, [], 'a started stream never times out');
  t.same(r2.socket.closes, [{ code: 1000, reason: 'stopped' }]);
});
