// Issue 9.10e: answers produced outside the API routes use its error shape too: a request
// whose headers are too large (431, refused by Node's parser before any route) and a plain
// GET of the WebSocket URL (426 with Upgrade: websocket).
import t from 'tap';
import net from 'node:net';
import { startTestGateway } from './fixtures/harness.js';

/** one raw HTTP/1.1 exchange: what the server wrote until it closed */
function raw(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const s = net.connect(port, '127.0.0.1', () => s.write(request));
    s.on('data', (d: Buffer) => { out += d.toString('latin1'); });
    s.on('close', () => resolve(out));
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' && out ? resolve(out) : reject(err)));
  });
}

function parse(response: string): { status: number; headers: Record<string, string>; body: string } {
  const [head, ...rest] = response.split('\r\n\r\n');
  const [statusLine, ...lines] = head!.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: Number(statusLine!.split(' ')[1]), headers, body: rest.join('\r\n\r\n') };
}

t.test('headers over the limit: 431 with { error, message }', async (t) => {
  const g = await startTestGateway(t);
  for (const path of ['/healthz', '/v1/recordings', '/twilio/v1']) {
    const r = parse(await raw(g.port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
    t.equal(r.status, 431, `${path}: 431`);
    t.match(r.headers['content-type'], /^application\/json/);
    t.equal(Number(r.headers['content-length']), Buffer.byteLength(r.body));
    const body = JSON.parse(r.body) as Record<string, unknown>;
    t.same(Object.keys(body).sort(), ['error', 'message'], 'exactly the API error shape');
    t.match(body, { error: 'request_header_fields_too_large', message: /headers are larger than this server accepts/ });
  }
  const garbage = parse(await raw(g.port, 'NOT HTTP AT ALL\r\n\r\n'));
  t.equal(garbage.status, 400);
  t.match(JSON.parse(garbage.body), { error: 'bad_request', message: /not valid HTTP/ });
  const ok = await fetch(`${g.http}/healthz`);
  t.equal(ok.status, 200, 'the server carries on');
});

t.test('a plain GET of the stream URL: 426 with Upgrade: websocket and { error, message }', async (t) => {
  const g = await startTestGateway(t);
  const res = await fetch(`${g.http}/twilio/v1`);
  t.equal(res.status, 426);
  t.equal(res.headers.get('upgrade'), 'websocket');
  t.match(res.headers.get('content-type'), /^application\/json/);
  const body = await res.json() as Record<string, unknown>;
  t.same(Object.keys(body).sort(), ['error', 'message']);
  t.match(body, { error: 'upgrade_required', message: /Twilio Media Streams WebSocket.*Upgrade: websocket/ });
  const metrics = await (await fetch(`${g.http}/metrics`)).text();
  t.notMatch(metrics, /gateway_upgrades_refused_total\{/, 'not counted as a refused upgrade (it was never one)');
});

t.test('an HTTP/1.1 request without Host: 400 with { error, message }, not a bare 400', async (t) => {
  // found by test/fuzz.test.ts: Node answered it by itself with an empty body
  const g = await startTestGateway(t);
  for (const path of ['/healthz', '/v1/recordings', '/twilio/v1/events', '/no/such/route']) {
    const r = parse(await raw(g.port, `GET ${path} HTTP/1.1\r\nAccept: */*\r\n\r\n`));
    t.equal(r.status, 400, `${path}: 400`);
    t.match(r.headers['content-type'], /^application\/json/);
    t.same(JSON.parse(r.body.replace(/^[0-9a-f]+\r\n|\r\n0\r\n\r\n$/g, '')), { error: 'bad_request', message: 'an HTTP/1.1 request needs a Host header (RFC 9112 section 3.2)' });
  }
  const upgrade = parse(await raw(g.port, 'GET /twilio/v1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'));
  t.equal(upgrade.status, 400, 'a WebSocket upgrade without Host: 400 too');
  const http10 = parse(await raw(g.port, 'GET /healthz HTTP/1.0\r\n\r\n'));
  t.equal(http10.status, 200, 'HTTP/1.0 needs no Host');
  t.equal((await fetch(`${g.http}/healthz`)).status, 200, 'the server carries on');
});
