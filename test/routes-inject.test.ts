// HTTP routes driven in-process with app.inject (no socket): what probes log, and the API's
// answers on a fresh node (shapes, auth, bad input named). The same routes over real HTTP are
// covered by the end-to-end tests.
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../gateway/config.js';
import { buildGateway, type Gateway } from '../gateway/server.js';
import { captureLog, type CapturedLog } from './fixtures/capture-log.js';
import { until } from './fixtures/calls.js';

const CALL = `CA${'0'.repeat(32)}`;
const KEY = 'an-api-key-long-enough-1234';

async function gateway(t: Test, env: Record<string, string> = {}, prepare?: (gw: Gateway) => void): Promise<{ gw: Gateway; log: CapturedLog }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-inject-'));
  const log = captureLog('info');
  const gw = await buildGateway(loadConfig({ RECORDINGS_DIR: dir, ...env }), { logger: log.logger });
  await gw.recovery;
  // ready once the (empty) catalog's first import has run: /readyz answers 503 before
  await until(() => gw.catalogSync.notReadyReason() === null, 'the first catalog import');
  prepare?.(gw);
  await gw.app.ready();
  t.teardown(async () => {
    await gw.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { gw, log };
}

const isRequestLine = (l: Record<string, unknown>) => l.msg === 'incoming request' || l.msg === 'request completed';

t.test('probes answer without a log line at info; API requests are still logged', async (t) => {
  const { gw, log } = await gateway(t);
  for (const url of ['/healthz', '/readyz', '/metrics']) {
    for (let i = 0; i < 3; i++) t.equal((await gw.app.inject({ url })).statusCode, 200, url);
  }
  t.same(log.lines().filter(isRequestLine), [], 'no per-request lines for /healthz, /readyz, /metrics');
  t.equal((await gw.app.inject({ url: '/v1/calls' })).statusCode, 200);
  const api = log.lines().filter(isRequestLine);
  t.same(api.map((l) => l.msg), ['incoming request', 'request completed'], 'an API request is logged');
  t.equal((api[0]!.req as { url: string }).url, '/v1/calls');
});

t.test('a fresh node: no calls, no recordings, unknown ids are 404 in the API error shape', async (t) => {
  const { gw } = await gateway(t);
  const calls = await gw.app.inject({ url: '/v1/calls' });
  t.same(calls.json(), { items: [], lost: [] });
  const list = await gw.app.inject({ url: '/v1/recordings' });
  t.same(list.json(), { items: [], nextCursor: null });
  const one = await gw.app.inject({ url: '/v1/recordings/MZ00000000000000000000000000000000-0000' });
  t.equal(one.statusCode, 404);
  t.equal(one.json().error, 'not_found');
  const pause = await gw.app.inject({ method: 'POST', url: `/v1/calls/${CALL}/pause` });
  t.equal(pause.statusCode, 404, 'pause of an unknown call');
  t.match(pause.json(), { error: 'not_found', message: String });
});

t.test('bad input, each case named: 400 bad_request with a message', async (t) => {
  const { gw } = await gateway(t);
  const cases: [string, string][] = [
    ['callSid filter not a CallSid', '/v1/calls?callSid=nope'],
    ['limit 0', '/v1/recordings?limit=0'],
    ['limit over 1000', '/v1/recordings?limit=1001'],
    ['from not a date', '/v1/recordings?from=yesterday'],
  ];
  for (const [name, url] of cases) {
    const res = await gw.app.inject({ url });
    t.equal(res.statusCode, 400, name);
    t.equal(res.json().error, 'bad_request', name);
    t.ok(typeof res.json().message === 'string' && res.json().message.length > 0, `${name}: says why`);
  }
});

t.test('with API_KEYS: no key or a wrong key is 401, the key passes; probes stay open', async (t) => {
  const { gw } = await gateway(t, { API_KEYS: KEY });
  t.equal((await gw.app.inject({ url: '/v1/calls' })).statusCode, 401, 'no Authorization');
  t.equal((await gw.app.inject({ url: '/v1/calls', headers: { authorization: 'Bearer wrong-key-wrong-key-wrong' } })).statusCode, 401, 'wrong key');
  t.equal((await gw.app.inject({ url: '/v1/calls', headers: { authorization: `Bearer ${KEY}` } })).statusCode, 200, 'the key');
  t.equal((await gw.app.inject({ url: '/readyz' })).statusCode, 200, 'probes need no key');
});

t.test('the /v1 scope: every path under /v1 needs the key first, routed or not; other paths keep their own rules', async (t) => {
  const { gw } = await gateway(t, { API_KEYS: KEY }, (gw) => {
    gw.addV1Routes((v1) => v1.get('/probe', async () => ({ probe: true })));
  });
  const auth = { authorization: `Bearer ${KEY}` };
  for (const url of ['/v1', '/v1/', '/v1/nothing', '/v1/recordings/', '/v1/calls/x/y/z', '/v1/probe']) {
    for (const method of ['GET', 'POST', 'DELETE'] as const) {
      const res = await gw.app.inject({ method, url });
      t.equal(res.statusCode, 401, `${method} ${url} without a key`);
      t.same(Object.keys(res.json()).sort(), ['error', 'message']);
      t.equal(res.json().error, 'unauthorized');
      t.equal(res.headers['www-authenticate'], 'Bearer realm="recording-gateway"');
    }
  }
  // with the key: an unknown /v1 path is a 404 in the API's shape, an added route answers
  const unknown = await gw.app.inject({ url: '/v1/nothing', headers: auth });
  t.equal(unknown.statusCode, 404);
  t.same(unknown.json(), { error: 'not_found', message: 'no route for GET /v1/nothing' });
  t.same((await gw.app.inject({ url: '/v1/probe', headers: auth })).json(), { probe: true }, 'a route added with addV1Routes');
  t.throws(() => gw.addV1Routes(() => undefined), /before listen/, 'routes cannot join the scope once it is loaded');
  // outside /v1 no API key is asked for: probes, the Twilio WebSocket, the TaskRouter webhook
  t.equal((await gw.app.inject({ url: '/healthz' })).statusCode, 200, '/healthz');
  t.equal((await gw.app.inject({ url: '/metrics' })).statusCode, 200, '/metrics');
  t.equal((await gw.app.inject({ url: '/twilio/v1' })).statusCode, 426, 'GET /twilio/v1 without an upgrade');
  const tr = await gw.app.inject({ method: 'POST', url: '/twilio/v1/events', headers: { 'content-type': 'application/json' }, payload: '{}' });
  t.equal(tr.statusCode, 415, 'the TaskRouter webhook answers by its own rules (form bodies only)');
  const nope = await gw.app.inject({ url: '/nothing' });
  t.equal(nope.statusCode, 404);
  t.equal(nope.json().error, 'not_found');
});

t.test('a /v1 route registered beside the scope (no key, no routing) is refused when it is added', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-inject-'));
  const gw = await buildGateway(loadConfig({ RECORDINGS_DIR: dir, API_KEYS: KEY }), { logger: captureLog('info').logger });
  t.teardown(async () => {
    await gw.close();
    await rm(dir, { recursive: true, force: true });
  });
  t.throws(() => gw.app.get('/v1/open', async () => ({ open: true })), /must be registered in the \/v1 scope/, 'GET /v1/open at the root');
  t.throws(() => gw.app.post('/v1', async () => ({})), /must be registered in the \/v1 scope/, 'POST /v1 at the root');
  gw.app.get('/v1x', async () => ({ fine: true })); // not under /v1: its own rules
  await gw.recovery;
  await gw.app.ready();
  t.equal((await gw.app.inject({ url: '/v1/open' })).statusCode, 401, 'the refused route does not exist: the scope asks for the key');
});
