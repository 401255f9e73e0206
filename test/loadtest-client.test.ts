// The Twilio stream simulator (loadtest/*) must speak the protocol exactly like Twilio: the rest
// of the test-suite and the benchmark trust it.
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import twilio from 'twilio';
import { WebSocketServer, type WebSocket } from 'ws';
import { fillFrame, frameFor, MULAW_SILENCE, trackAudio } from '../loadtest/audio-fixtures.js';
import { startBareServer } from '../loadtest/bare-ws-server.js';
import { isSid, randomSid } from '../loadtest/sids.js';
import { runStream, StreamScheduler, defaultScheduler, type PacedJob } from '../loadtest/stream-runner.js';
import { until } from './fixtures/calls.js';
import { TwilioStreamClient, twilioSignature, UpgradeRefusedError } from '../loadtest/twilio-stream-client.js';

// ---------------------------------------------------------------------------------------------
// a tiny recording WebSocket server

interface Received {
  text: string;
  binary: boolean;
  at: number;
}
interface Conn {
  ws: WebSocket;
  headers: IncomingHttpHeaders;
  path: string | undefined;
  messages: Received[];
  closed: Promise<{ code: number; reason: string }>;
}

async function recordingServer(onConnection?: (c: Conn) => void) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const conns: Conn[] = [];
  const waiters: ((c: Conn) => void)[] = [];
  wss.on('connection', (ws, req) => {
    const messages: Received[] = [];
    ws.on('message', (data, isBinary) => {
      messages.push({ text: (data as Buffer).toString(), binary: isBinary, at: performance.now() }); // ws gives a Buffer
    });
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    const c: Conn = { ws, headers: req.headers, path: req.url, messages, closed };
    conns.push(c);
    onConnection?.(c);
    waiters.shift()?.(c);
  });
  const port = (wss.address() as AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}/twilio/v1`,
    conns,
    next: () => new Promise<Conn>((resolve) => waiters.push(resolve)),
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
  };
}

const parse = (m: Received) => JSON.parse(m.text) as Record<string, any>;

// ---------------------------------------------------------------------------------------------

t.test('sids: prefix + 32 lower-case hex', async (t) => {
  for (const p of ['AC', 'CA', 'MZ'] as const) {
    const sid = randomSid(p);
    t.match(sid, new RegExp(`^${p}[0-9a-f]{32}$`));
    t.ok(isSid(sid, p));
  }
  t.not(randomSid('MZ'), randomSid('MZ'));
  t.notOk(isSid('MZ' + 'A'.repeat(32), 'MZ'));
  t.notOk(isSid(randomSid('CA'), 'MZ'));
  t.notOk(isSid('MZ123', 'MZ'));
});

t.test('audio fixtures: deterministic, distinct, never µ-law zero', async (t) => {
  const a = frameFor(7, 'inbound', 3);
  t.equal(a.length, 160);
  t.same(frameFor(7, 'inbound', 3), a, 'reproducible');
  t.notSame(frameFor(7, 'outbound', 3), a, 'track matters');
  t.notSame(frameFor(8, 'inbound', 3), a, 'seed matters');
  t.notSame(frameFor(7, 'inbound', 4), a, 'frame matters');
  t.equal(frameFor(1, 'inbound', 0, 33).length, 33, 'odd sizes');

  const seen = new Set<string>();
  let zeros = 0;
  for (const seed of [0, 1, -5, 2 ** 31]) {
    for (const track of ['inbound', 'outbound'] as const) {
      for (let f = 0; f < 200; f++) {
        const b = frameFor(seed, track, f);
        seen.add(b.toString('hex'));
        for (const x of b) if (x === MULAW_SILENCE || x === 0x7f) zeros++;
      }
    }
  }
  t.equal(seen.size, 4 * 2 * 200, 'every (seed, track, frame) differs');
  t.equal(zeros, 0, 'no 0xFF / 0x7F byte anywhere');

  const dst = Buffer.alloc(400, 0xaa);
  fillFrame(dst, 7, 'inbound', 3, 100, 160);
  t.same(dst.subarray(100, 260), a, 'fillFrame at an offset = frameFor');
  t.equal(dst[99], 0xaa, 'nothing written before offset');
  t.equal(dst[260], 0xaa, 'nothing written after size');
  t.same(fillFrame(new Uint8Array(160), 7, 'inbound', 3), new Uint8Array(a), 'default offset and size');

  const track = trackAudio(9, 'outbound', 5, 160, 10);
  t.equal(track.length, 800);
  t.same(track.subarray(320, 480), frameFor(9, 'outbound', 12));
  t.same(trackAudio(9, 'outbound', 2), Buffer.concat([frameFor(9, 'outbound', 0), frameFor(9, 'outbound', 1)]));
});

t.test('client messages match the Twilio protocol exactly', async (t) => {
  const srv = await recordingServer();
  t.teardown(srv.close);
  const accountSid = randomSid('AC');
  const callSid = randomSid('CA');
  const streamSid = randomSid('MZ');
  const conn = srv.next();
  const client = await TwilioStreamClient.connect(srv.url, { accountSid, callSid, streamSid });
  const c = await conn;
  t.equal(c.path, '/twilio/v1');
  t.equal(client.accountSid, accountSid);
  t.equal(client.callSid, callSid);
  t.equal(client.streamSid, streamSid);
  t.equal(c.headers['x-twilio-signature'], undefined, 'unsigned without a token');
  t.equal(c.headers['user-agent'], 'Twilio.TmeWs/1.0');
  t.notOk(c.headers['sec-websocket-extensions'], 'no permessage-deflate offer');
  t.ok(client.isOpen);

  const params = { ctiSessionId: 'S-1042', employeeId: 'E77', tricky: 'quote " and \\ and ü' };
  const in0 = frameFor(1, 'inbound', 0);
  const out0 = frameFor(1, 'outbound', 0);
  const in1 = frameFor(1, 'inbound', 1);
  const out1 = frameFor(1, 'outbound', 1).subarray(0, 80); // frame size is not fixed
  client.sendConnected();
  client.sendStart({ tracks: ['inbound', 'outbound'], customParameters: params });
  client.sendMedia('inbound', in0, 21);
  client.sendMedia('outbound', out0, 21);
  client.sendMedia('inbound', in1, 41);
  client.sendDtmf('5');
  client.sendMark('prompt-1');
  client.sendMedia('outbound', out1, 41);
  client.sendStop();
  t.equal(client.sequenceNumber, 8);
  t.same(client.chunks, { inbound: 2, outbound: 2 });
  t.type(client.bufferedAmount, 'number');
  const closed = await client.close();
  t.same(closed, { code: 1000, reason: '' });
  t.same(await c.closed, { code: 1000, reason: '' });
  t.notOk(client.isOpen);

  t.equal(c.messages.length, 9);
  t.ok(c.messages.every((m) => !m.binary), 'all text frames');
  t.equal(c.messages[0]!.text, '{"event":"connected","protocol":"Call","version":"1.0.0"}');
  const [, start, m1, m2, m3, dtmf, mark, m4, stop] = c.messages.map(parse);
  t.strictSame(start, {
    event: 'start',
    sequenceNumber: '1',
    streamSid,
    start: {
      accountSid,
      streamSid,
      callSid,
      tracks: ['inbound', 'outbound'],
      customParameters: params,
      mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
    },
  });
  const media = (seq: string, track: string, chunk: string, timestamp: string, payload: Buffer) => ({
    event: 'media',
    sequenceNumber: seq,
    streamSid,
    media: { track, chunk, timestamp, payload: payload.toString('base64') },
  });
  t.strictSame(m1, media('2', 'inbound', '1', '21', in0));
  t.strictSame(m2, media('3', 'outbound', '1', '21', out0));
  t.strictSame(m3, media('4', 'inbound', '2', '41', in1));
  t.strictSame(dtmf, { event: 'dtmf', sequenceNumber: '5', streamSid, dtmf: { track: 'inbound_track', digit: '5' } });
  t.strictSame(mark, { event: 'mark', sequenceNumber: '6', streamSid, mark: { name: 'prompt-1' } });
  t.strictSame(m4, media('7', 'outbound', '2', '41', out1));
  t.strictSame(stop, { event: 'stop', sequenceNumber: '8', streamSid, stop: { accountSid, callSid } });
  t.same(Buffer.from(m1!.media.payload, 'base64'), in0, 'base64 round trip');
  t.same(Buffer.from(m4!.media.payload, 'base64'), out1, 'base64 round trip (80 bytes)');
  t.equal(m1!.media.payload.length, 216, '160 bytes → 216 base64 chars');
});

t.test('start overrides, random ids, raw frames and server messages', async (t) => {
  const srv = await recordingServer((c) => {
    // sent right with the upgrade: arrives before the test can set a handler
    c.ws.send('{"event":"mark","streamSid":"x","mark":{"name":"m"}}');
    c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    c.ws.on('message', (data) => {
      if ((data as Buffer).toString().includes('"event":"stop"')) c.ws.send('{"event":"clear","streamSid":"x"}');
    });
  });
  t.teardown(srv.close);
  const conn = srv.next();
  const client = await TwilioStreamClient.connect(srv.url, { headers: { 'X-Extra': 'yes' } });
  const c = await conn;
  t.ok(isSid(client.accountSid, 'AC') && isSid(client.callSid, 'CA') && isSid(client.streamSid, 'MZ'), 'random ids');
  t.equal(c.headers['x-extra'], 'yes');
  const texts: string[] = [];
  client.onMessage((d) => texts.push(d));
  const accountSid = randomSid('AC');
  const callSid = randomSid('CA');
  client.sendConnected();
  client.sendStart({
    tracks: ['outbound'],
    accountSid,
    callSid,
    mediaFormat: { encoding: 'audio/x-l16', sampleRate: 16000, channels: 1 },
  });
  client.sendRaw('not json');
  client.sendRaw(Buffer.from([0xff, 0x00]), true);
  client.sendStop();
  await new Promise<void>((resolve) => client.ws.once('message', () => resolve()));
  await client.close(4000, 'bye');
  t.same(await c.closed, { code: 4000, reason: 'bye' });
  const start = parse(c.messages[1]!);
  t.strictSame(start.start.customParameters, {}, 'customParameters always present');
  t.equal(start.start.accountSid, accountSid);
  t.equal(start.start.callSid, callSid);
  t.strictSame(start.start.mediaFormat, { encoding: 'audio/x-l16', sampleRate: 16000, channels: 1 });
  t.strictSame(start.start.tracks, ['outbound']);
  t.same(c.messages[2], { text: 'not json', binary: false, at: c.messages[2]!.at });
  t.equal(c.messages[3]!.binary, true);
  t.strictSame(parse(c.messages[4]!), {
    event: 'stop',
    sequenceNumber: '2',
    streamSid: client.streamSid,
    stop: { accountSid, callSid },
  }, 'raw frames do not count; stop carries the start ids');
  t.same(texts, ['{"event":"mark","streamSid":"x","mark":{"name":"m"}}', '{"event":"clear","streamSid":"x"}'], 'early and later messages');
  t.equal(client.receivedMessages, 3);
  client.onMessage(null);
  await client.close(); // closing twice is harmless
});

t.test('messages before onMessage() are kept up to a limit', async (t) => {
  const srv = await recordingServer((c) => {
    for (let i = 0; i < 1005; i++) c.ws.send(`{"n":${i}}`);
  });
  t.teardown(srv.close);
  const client = await TwilioStreamClient.connect(srv.url);
  while (client.receivedMessages < 1005) await new Promise((r) => setTimeout(r, 5));
  const got: string[] = [];
  client.onMessage((d) => got.push(d));
  t.equal(got.length, 1000);
  t.equal(got[999], '{"n":999}');
  await client.close();
});

t.test('X-Twilio-Signature verifies with the official twilio package', async (t) => {
  const srv = await recordingServer();
  t.teardown(srv.close);
  const token = '12345678901234567890123456789012';
  const publicUrl = 'wss://gw.example.com/twilio/v1';

  let conn = srv.next();
  let client = await TwilioStreamClient.connect(srv.url, { authToken: token, signUrl: publicUrl });
  let sig = (await conn).headers['x-twilio-signature'] as string;
  t.ok(twilio.validateRequest(token, sig, publicUrl, {}), 'valid for the public URL');
  t.notOk(twilio.validateRequest(token, sig, srv.url, {}), 'not for the internal URL');
  t.notOk(twilio.validateRequest('another-token-another-token-1234', sig, publicUrl, {}), 'not with another token');
  await client.close();

  conn = srv.next();
  client = await TwilioStreamClient.connect(srv.url, { authToken: token });
  sig = (await conn).headers['x-twilio-signature'] as string;
  t.ok(twilio.validateRequest(token, sig, srv.url, {}), 'signUrl defaults to the dialled url');
  await client.close();

  conn = srv.next();
  client = await TwilioStreamClient.connect(srv.url, { authToken: token, headers: { 'X-Twilio-Signature': 'forged' } });
  t.equal((await conn).headers['x-twilio-signature'], 'forged', 'headers override the signature (negative tests)');
  await client.close();

  const params = { EventType: 'task.created', AccountSid: 'AC1', Multi: ['b', 'a', 'b'] };
  t.equal(
    twilioSignature(token, 'https://gw.example.com/twilio/v1/events', params),
    twilio.getExpectedTwilioSignature(token, 'https://gw.example.com/twilio/v1/events', params),
    'form-POST signatures (TaskRouter callbacks) match too',
  );
});

t.test('a refused upgrade surfaces the HTTP status', async (t) => {
  const http = createServer();
  http.on('upgrade', (req, socket) => {
    if (req.url === '/teapot') socket.end("HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    else socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"error":"forbidden"}');
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  t.teardown(() => http.close());
  const base = `ws://127.0.0.1:${(http.address() as AddressInfo).port}`;

  const err = await TwilioStreamClient.connect(`${base}/twilio/v1`, { authToken: 'x' }).then(
    () => null,
    (e: unknown) => e,
  );
  t.type(err, UpgradeRefusedError);
  const refused = err as UpgradeRefusedError;
  t.equal(refused.status, 403);
  t.equal(refused.statusCode, 403);
  t.equal(refused.body, '{"error":"forbidden"}');
  t.equal(refused.headers['content-type'], 'application/json');
  t.match(refused.message, /HTTP 403 Forbidden/);
  await t.rejects(TwilioStreamClient.connect(`${base}/teapot`, { handshakeTimeoutMs: 2000 }), {
    status: 418,
    body: '',
    message: "WebSocket upgrade refused: HTTP 418 I'm a teapot",
  });

  // a WebSocketServer refusing in verifyClient
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', verifyClient: (_i, cb) => cb(false, 401) });
  await once(wss, 'listening');
  t.teardown(() => wss.close());
  await t.rejects(TwilioStreamClient.connect(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/twilio/v1`), {
    status: 401,
    name: 'UpgradeRefusedError',
  });

  // nothing listening: the socket error itself
  const port = (http.address() as AddressInfo).port;
  http.close();
  await once(http, 'close');
  await t.rejects(TwilioStreamClient.connect(`ws://127.0.0.1:${port}/twilio/v1`), { code: 'ECONNREFUSED' });
});

t.test('terminate() is an abnormal close at the server (no close frame)', async (t) => {
  const srv = await recordingServer();
  t.teardown(srv.close);
  const conn = srv.next();
  const client = await TwilioStreamClient.connect(srv.url);
  const c = await conn;
  client.sendConnected();
  client.sendStart({ tracks: ['inbound'] });
  client.sendMedia('inbound', frameFor(1, 'inbound', 0), 0);
  await until(() => c.messages.length >= 3, 'the three messages at the server');
  const closed = await client.terminate();
  t.equal(closed.code, 1006);
  t.equal((await c.closed).code, 1006, 'server sees 1006');
  t.equal(c.messages.length, 3);
});

t.test('runStream: real-time pacing follows an absolute 20 ms grid: a late tick catches up, nothing drifts', async (t) => {
  const srv = await recordingServer();
  t.teardown(srv.close);
  const conn = srv.next();
  const frames = 100; // 2 s of audio, paced in virtual time: the test drives the clock and the ticks
  let clock = 5_000;
  let job: PacedJob | null = null;
  const scheduler = { add(j: PacedJob) { job = j; j.onTick(clock); return () => {}; } } as unknown as StreamScheduler;
  const counters = { mediaMessages: 0, messages: 0 };
  const run = runStream({ url: srv.url, tracks: ['inbound'], seed: 42, frames, realtime: true, timestampOffsetMs: 5, scheduler, now: () => clock, counters });
  const paced = await until(() => job, 'the stream to register with the scheduler');
  t.equal(counters.mediaMessages, 1, 'frame 0 at once');
  // [virtual ms since start, frames sent by then]: frame i is due at i*20 whatever the ticks did
  const ticks: [number, number][] = [[10, 1], [19.9, 1], [20, 2], [95, 5], [100, 6], [101, 6], [1000, 51], [1010, 51], [1979, 99]];
  for (const [at, sent] of ticks) {
    clock = 5_000 + at;
    t.equal(paced.onTick(clock), false, `${at} ms: not finished`);
    t.equal(counters.mediaMessages, sent, `${at} ms: ${sent} frames sent`);
  }
  clock = 5_000 + 1980;
  t.equal(paced.onTick(clock), true, 'the last frame at 1980 ms finishes the job');
  t.equal(counters.mediaMessages, frames);
  const res = await run;
  const c = await conn;
  await c.closed;
  t.equal(res.streamSid, parse(c.messages[1]!).streamSid);
  t.same(res.framesSent, { inbound: frames, outbound: 0 });
  t.equal(res.closeCode, 1000);
  t.equal(res.closedEarly, false);

  const media = c.messages.map(parse).filter((m) => m.event === 'media');
  t.equal(media.length, frames);
  t.strictSame(
    media.map((m) => m.media.timestamp),
    Array.from({ length: frames }, (_, i) => String(5 + i * 20)),
    'timestamps on the 20 ms grid',
  );
  t.strictSame(media.map((m) => m.media.chunk), Array.from({ length: frames }, (_, i) => String(i + 1)));
  t.same(Buffer.from(media[57]!.media.payload, 'base64'), frameFor(42, 'inbound', 57));
  t.equal(parse(c.messages.at(-1)!).event, 'stop');
});

t.test('runStream: as fast as the socket drains, both tracks, exact counters', async (t) => {
  const srv = await recordingServer();
  t.teardown(srv.close);
  const conn = srv.next();
  const frames = 3000;
  const counters = { mediaMessages: 0, messages: 0 };
  // not paced at all: a scheduler that would pace it refuses to be used
  const scheduler = { add() { throw new Error('a non-realtime stream must not be paced'); } } as unknown as StreamScheduler;
  const res = await runStream({
    url: srv.url,
    tracks: ['inbound', 'outbound'],
    seed: 3,
    frames,
    realtime: false,
    counters,
    scheduler,
    customParameters: { ctiSessionId: 'S-9' },
  });
  t.same(res.framesSent, { inbound: frames, outbound: frames });
  t.same(counters, { mediaMessages: 2 * frames, messages: 2 * frames + 3 });
  const c = await conn;
  await c.closed;
  const msgs = c.messages.map(parse);
  t.equal(msgs.length, 2 * frames + 3);
  t.strictSame(msgs[1]!.start.customParameters, { ctiSessionId: 'S-9' });
  let seqOk = true;
  const chunk = { inbound: 0, outbound: 0 } as Record<string, number>;
  let chunkOk = true;
  let payloadOk = true;
  for (let i = 1; i < msgs.length; i++) {
    if (msgs[i]!.sequenceNumber !== String(i)) seqOk = false;
    if (msgs[i]!.event !== 'media') continue;
    const { track, timestamp, payload } = msgs[i]!.media;
    const n = ++chunk[track]!;
    if (msgs[i]!.media.chunk !== String(n) || timestamp !== String((n - 1) * 20)) chunkOk = false;
    if (n % 97 === 0 && !Buffer.from(payload, 'base64').equals(frameFor(3, track, n - 1))) payloadOk = false;
  }
  t.ok(seqOk, 'sequenceNumber 1..N without gaps');
  t.ok(chunkOk, 'chunk per track from 1, timestamps per frame');
  t.ok(payloadOk, 'payloads are the fixture frames');
  t.equal(msgs.at(-1)!.event, 'stop');
});

t.test('runStream: abort, abrupt end, server closing early', async (t) => {
  const srv = await recordingServer((c) => {
    if (c.path === '/early') setTimeout(() => c.ws.close(1011, 'overloaded'), 150);
  });
  t.teardown(srv.close);

  // abort: stops early, still stop + orderly close
  const ac = new AbortController();
  let conn = srv.next();
  setTimeout(() => ac.abort(), 200);
  let client: TwilioStreamClient | null = null;
  const aborted = await runStream({
    url: srv.url,
    tracks: ['inbound', 'outbound'],
    seed: 1,
    frames: Infinity,
    realtime: true,
    signal: ac.signal,
    onConnected: (cl) => {
      client = cl;
    },
  });
  t.ok(client, 'onConnected got the client');
  t.ok(aborted.framesSent.inbound >= 5 && aborted.framesSent.inbound <= 20, `sent ${aborted.framesSent.inbound} frames in 200 ms`);
  t.equal(aborted.framesSent.inbound, aborted.framesSent.outbound);
  let c = await conn;
  await c.closed;
  t.equal(parse(c.messages.at(-1)!).event, 'stop');
  t.equal(aborted.closeCode, 1000);

  // abrupt end without stop
  conn = srv.next();
  const lost = await runStream({ url: srv.url, tracks: ['inbound'], seed: 2, frames: 50, realtime: false, sendStop: false, end: 'terminate' });
  c = await conn;
  t.equal((await c.closed).code, 1006);
  t.equal(lost.closeCode, 1006);
  t.equal(c.messages.map(parse).filter((m) => m.event === 'stop').length, 0, 'no stop sent');

  // the server closes the socket while we send (real time and fast)
  for (const realtime of [true, false]) {
    const errors: Error[] = [];
    const early = await runStream({
      url: srv.url.replace('/twilio/v1', '/early'),
      tracks: ['inbound'],
      seed: 3,
      frames: realtime ? 500 : 1e7,
      realtime,
      onError: (e) => errors.push(e),
    });
    t.equal(early.closedEarly, true, `closedEarly (realtime ${realtime})`);
    t.equal(early.closeCode, 1011);
    t.equal(early.closeReason, 'overloaded');
    t.ok(early.framesSent.inbound < (realtime ? 500 : 1e7));
    t.same(errors, []);
  }
});

t.test('runStream: without real time it respects bufferedAmount', async (t) => {
  // the server stops reading for a while: kernel buffers fill, then ws would queue in user space
  const srv = await recordingServer((c) => {
    const sock = (c.ws as unknown as { _socket: import('node:net').Socket })._socket;
    sock.pause();
    setTimeout(() => sock.resume(), 700);
  });
  t.teardown(srv.close);
  let maxBuffered = 0;
  let sampler: NodeJS.Timeout | undefined;
  const frames = 40_000; // 40 000 × ~330 bytes ≈ 13 MB, more than loopback socket buffers hold
  const res = await runStream({
    url: srv.url,
    tracks: ['inbound'],
    seed: 1,
    frames,
    realtime: false,
    onConnected: (client) => {
      sampler = setInterval(() => {
        maxBuffered = Math.max(maxBuffered, client.bufferedAmount);
      }, 1);
    },
  });
  clearInterval(sampler);
  t.equal(res.framesSent.inbound, frames);
  t.ok(maxBuffered < 256 * 1024 + 4096, `user-space queue stayed bounded (max ${maxBuffered} bytes)`);
  const c = srv.conns[0]!;
  await c.closed;
  t.equal(c.messages.length, frames + 3, 'everything arrived');
});

t.test('runStream: socket errors after the upgrade reach onError', async (t) => {
  const srv = await recordingServer((c) => {
    // a frame a client must never receive (masked server frame) → protocol error at the client
    (c.ws as unknown as { _socket: import('node:net').Socket })._socket.write(Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0x61, 0x62]));
  });
  t.teardown(srv.close);
  const errors: Error[] = [];
  const res = await runStream({ url: srv.url, tracks: ['inbound'], seed: 1, frames: 500, realtime: true, onError: (e) => errors.push(e) });
  t.equal(errors.length, 1);
  t.match(errors[0]!.message, /MASK must be clear/);
  t.equal(res.closedEarly, true);
  t.ok(res.closeCode === 1002 || res.closeCode === 1006, `close code ${res.closeCode}`);

  // an error after the handler was set
  const srv2 = await recordingServer((c) => {
    c.ws.on('message', () => {
      (c.ws as unknown as { _socket: import('node:net').Socket })._socket.write(Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0x61, 0x62]));
    });
  });
  t.teardown(srv2.close);
  const client = await TwilioStreamClient.connect(srv2.url);
  const late: Error[] = [];
  client.onError((e) => late.push(e));
  client.sendConnected();
  await client.closed;
  t.equal(late.length, 1);
  t.same(client.errors, late);
});

t.test('StreamScheduler: one shared tick for many jobs', async (t) => {
  const s = new StreamScheduler({ tickMs: 5 });
  t.equal(s.tickMs, 5);
  t.equal(new StreamScheduler().tickMs, 10);
  t.equal(defaultScheduler.tickMs, 10);
  let immediate = 0;
  s.add({
    onTick: () => {
      immediate++;
      return true;
    },
  });
  t.equal(immediate, 1);
  t.equal(s.size, 0, 'a job done at once is never registered');

  const ticksA: number[] = [];
  const ticksB: number[] = [];
  const done = new Promise<void>((resolve) => {
    s.add({
      onTick: (now) => {
        ticksA.push(now);
        if (ticksA.length === 10) resolve();
        return ticksA.length >= 10;
      },
    });
  });
  const removeB = s.add({
    onTick: (now) => {
      ticksB.push(now);
      return false;
    },
  });
  t.equal(s.size, 2);
  await done;
  t.equal(s.size, 1);
  removeB();
  t.equal(s.size, 0);
  const nB = ticksB.length;
  let ticksC = 0;
  await new Promise<void>((resolve) => s.add({ onTick: () => { if (++ticksC === 3) resolve(); return ticksC >= 3; } }));
  t.equal(ticksB.length, nB, 'removed job no longer runs (while the scheduler ticked three more times)');
  t.ok(ticksA.slice(1).every((x, i) => Math.abs(x - ticksB[i + 1]!) < 1), 'both jobs run in the same tick');
  t.ok(s.ticks >= 9);
  t.type(s.maxLateMs, 'number');

  // last job finishing inside a tick stops the timer
  const s2 = new StreamScheduler({ tickMs: 2 });
  let n = 0;
  await new Promise<void>((resolve) =>
    s2.add({
      onTick: () => {
        if (++n === 3) setImmediate(resolve); // after this tick returns
        return n >= 3;
      },
    }),
  );
  t.equal(s2.size, 0);
  s2.stop(); // idempotent
});

t.test('bare ws server: counts media and reports /stats', async (t) => {
  const bare = await startBareServer(0, '127.0.0.1');
  t.teardown(() => bare.close());
  const base = `http://127.0.0.1:${bare.port}`;
  const url = `ws://127.0.0.1:${bare.port}/twilio/v1`;
  const res = await runStream({ url, tracks: ['inbound', 'outbound'], seed: 5, frames: 100, realtime: false });
  t.same(res.framesSent, { inbound: 100, outbound: 100 });

  const client = await TwilioStreamClient.connect(url);
  client.sendRaw('{oops');
  client.sendRaw(Buffer.from([1]), true);
  client.sendRaw('{"event":"media","media":{}}');
  client.sendRaw('{"event":"future-event"}');
  await client.close();

  // the server sees the close after the client does
  for (let i = 0; i < 50 && bare.counters().connections > 0; i++) await new Promise((r) => setTimeout(r, 10));
  const stats = (await (await fetch(`${base}/stats`)).json()) as Record<string, number>;
  t.equal(stats.mediaMessages, 200);
  t.equal(stats.messages, 203 + 4);
  t.equal(stats.payloadBytes, 200 * 160);
  t.equal(stats.badMessages, 3);
  t.equal(stats.connections, 0);
  t.equal(stats.totalConnections, 2);
  t.equal(stats.pid, process.pid);
  for (const k of ['eventLoopDelayP99Ms', 'eventLoopDelayMaxMs', 'rssBytes', 'cpuUserUs', 'cpuSystemUs']) {
    t.type(stats[k], 'number', k);
  }
  t.ok(stats.rssBytes! > 0 && stats.cpuUserUs! > 0);
  t.same(bare.counters(), {
    mediaMessages: 200,
    messages: 207,
    payloadBytes: 32000,
    badMessages: 3,
    connections: 0,
    totalConnections: 2,
  });
  await TwilioStreamClient.connect(url); // left open: close() must not wait for it
  const nf = await fetch(`${base}/nope`);
  t.equal(nf.status, 404);
  t.same(await nf.json(), { error: 'not_found', message: 'only GET /stats and WebSocket upgrades' });
});

t.test('bare ws server runs as a script (PORT env, /stats, SIGTERM)', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'loadtest/bare-ws-server.ts'], {
    // no coverage from the child: it runs the file through tsx, not through tap's loader
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', _TAPJS_PROCESSINFO_COVERAGE_: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on [^:]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
  const res = await runStream({ url: `ws://127.0.0.1:${port}/twilio/v1`, tracks: ['inbound'], seed: 1, frames: 20, realtime: false });
  t.equal(res.closeCode, 1000);
  const stats = (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()) as Record<string, number>;
  t.equal(stats.mediaMessages, 20);
  t.equal(stats.pid, child.pid);
  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number | null];
  t.equal(code, 0);
});
