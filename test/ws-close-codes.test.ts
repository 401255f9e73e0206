// A stream whose WebSocket frames break the protocol (over 64 KiB, invalid UTF-8 in a text frame)
// is closed with the code the README names (1009, 1007), also when the client keeps sending
// frames after the bad one, as Twilio does: the close handshake runs, the connection is not reset
// (1006). Such a client error is logged by the stream (warn, once), not as a server error.
// Found by test/fuzz.test.ts: @fastify/websocket's default error handler logged every such frame
// at error level with a stack trace and terminated the socket before the close frame went out.
import t from 'tap';
import { TwilioStreamClient, type CloseInfo } from '../loadtest/twilio-stream-client.js';
import { frameFor } from '../loadtest/audio-fixtures.js';
import { startTestGateway, waitForRecordings, type TestGateway } from './fixtures/harness.js';
import { captureLog } from './fixtures/capture-log.js';


/** Start a stream, send 25 good frames, the bad frame, then keep streaming until closed. */
async function badFrameWhileStreaming(g: TestGateway, bad: (c: TwilioStreamClient) => void): Promise<{ closed: CloseInfo; callSid: string }> {
  const c = await TwilioStreamClient.connect(g.wsUrl);
  c.sendConnected();
  c.sendStart({ tracks: ['inbound'] });
  for (let i = 0; i < 25; i++) c.sendMedia('inbound', frameFor(3, 'inbound', i), i * 20);
  bad(c);
  let i = 25;
  const pump = setInterval(() => {
    for (let k = 0; k < 5 && c.isOpen; k++, i++) c.sendMedia('inbound', frameFor(3, 'inbound', i), i * 20);
  }, 1);
  const closed = await c.closed;
  clearInterval(pump);
  return { closed, callSid: c.callSid };
}

const cases: [name: string, code: number, bad: (c: TwilioStreamClient) => void, warned: (l: Record<string, unknown>) => boolean][] = [
  ['a message over 64 KiB', 1009, (c) => c.sendRaw(JSON.stringify({ event: 'media', streamSid: c.streamSid, pad: 'x'.repeat(70 * 1024) })),
    (l) => l.kind === 'message_too_large'],
  ['a text frame that is not UTF-8', 1007, (c) => c.sendRaw(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), false),
    (l) => l.msg === 'stream socket error' && /UTF-8/.test(String((l.err as { message?: string } | undefined)?.message))],
];

for (const [name, code, bad, warned] of cases) {
  t.test(`${name}, frames still coming: closed ${code}, not reset; no server error logged`, async (t) => {
    const log = captureLog();
    const g = await startTestGateway(t, {}, { logger: log.logger });
    for (let round = 0; round < 5; round++) {
      const { closed, callSid } = await badFrameWhileStreaming(g, bad);
      t.equal(closed.code, code, `round ${round}: the client got close code ${code}`);
      const [rec] = await waitForRecordings(g.http, callSid, 1);
      t.ok(rec.framesReceived >= 25, 'the audio before the bad frame is kept');
    }
    const serverErrors = log.lines().filter((l) => Number(l.level) >= 50 && l.alarm !== true);
    t.same(serverErrors, [], 'a client protocol error is not a server error');
    t.equal(log.lines().filter((l) => l.level === 40 && warned(l)).length, 5, 'each stream logged it once (warn)');
  });
}
