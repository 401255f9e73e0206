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

async function gateway(t: Test, env: Record<string, string> = {}): Promise<{ gw: Gateway; log: CapturedLog }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-inject-'));
  const log = captureLog('info');
  const gw = await buildGateway(loadConfig({ RECORDINGS_DIR: dir, ...env }), { logger: log.logger });
  await gw.recovery;
  // ready once the (empty) catalog's first import has run: /readyz answers 503 before
  await until(() => gw.catalogSync.notReadyReason() === null, 'the first catalog import');
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
