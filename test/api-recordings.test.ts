// The playback API over a real RECORDINGS_DIR and a real socket: listing, filters, paging,
// sidecars, audio with Range, on-the-fly conversion, errors and access control.
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readlink, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import Fastify, { type FastifyInstance } from 'fastify';
import wavefile from 'wavefile';
import { buildWavHeader, parseWavHeader, wavHeaderLength, type WavEncoding } from '../codecs/wav.js';
import { transcode } from '../codecs/transcode.js';
import { MULAW_TO_PCM16, pcm16ToMulawSample } from '../codecs/g711.js';
import { SqliteCatalog } from '../recorder/catalog/sqlite-catalog.js';
import { importSidecars } from '../recorder/catalog/importer.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { segmentPaths } from '../recorder/storage-layout.js';
import { frameworkErrors, installErrorHandling } from '../gateway/api/errors.js';
import { isLoopbackAddress } from '../gateway/api/api-auth.js';
import { registerV1Scope } from '../gateway/api/v1-scope.js';
import { parseRange, registerRecordingRoutes, TranscodeSlice } from '../gateway/api/recordings-routes.js';

const { WaveFile } = wavefile;

// ---------------------------------------------------------------------------------------------
// fixtures

const ACCOUNT = 'AC' + 'a'.repeat(32);
const hex32 = (n: number) => n.toString(16).padStart(32, '0');
const callSid = (n: number) => `CA${hex32(n)}`;
const streamSid = (n: number) => `MZ${hex32(n)}`;
const recId = (stream: number, seg = 0) => `${streamSid(stream)}-${String(seg).padStart(4, '0')}`;

function prng(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let x = Math.imul(s ^ (s >>> 15), s | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Raw sample data: mu-law codes or little-endian int16 covering the full range (and its ends). */
function sampleData(encoding: 'mulaw' | 'pcm16', samples: number, seed: number): Buffer {
  const rnd = prng(seed);
  if (encoding === 'mulaw') return Buffer.from(Uint8Array.from({ length: samples }, () => Math.floor(rnd() * 256)));
  const b = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++) {
    const v = i === 0 ? -32768 : i === 1 ? 32767 : Math.floor(rnd() * 65536) - 32768;
    b.writeInt16LE(v, i * 2);
  }
  return b;
}

interface Fixture {
  stream: number;
  call: number;
  cti: string | null;
  emp: string | null;
  startedAt: string;
  channels: 1 | 2;
  encoding: 'mulaw' | 'pcm16';
  frames: number;
  /** header claims more data than the file has (a writer that died before patching) */
  unpatched?: boolean;
}

const FIXTURES: Fixture[] = [
  // odd sample count: the stored file carries a RIFF pad byte
  { stream: 1, call: 1, cti: 'cti-A', emp: 'emp-1', startedAt: '2024-05-01T08:00:00.000Z', channels: 1, encoding: 'mulaw', frames: 2001 },
  // a second stream of the same call (retry), both tracks
  { stream: 2, call: 1, cti: 'cti-A', emp: 'emp-1', startedAt: '2024-05-01T08:05:00.000Z', channels: 2, encoding: 'mulaw', frames: 1600 },
  // transferred to another agent: new call leg, same CTI session; converts to an odd mu-law size
  { stream: 3, call: 2, cti: 'cti-A', emp: 'emp-2', startedAt: '2024-05-01T08:10:00.000Z', channels: 1, encoding: 'pcm16', frames: 1501 },
  // big enough (160 kB) to stream in several chunks
  { stream: 4, call: 3, cti: 'cti-B', emp: 'emp-2', startedAt: '2024-05-02T09:00:00.000Z', channels: 2, encoding: 'pcm16', frames: 40_000 },
  { stream: 5, call: 4, cti: null, emp: null, startedAt: '2024-05-03T23:59:59.500Z', channels: 1, encoding: 'mulaw', frames: 800 },
  { stream: 6, call: 5, cti: 'cti-C', emp: 'emp-3', startedAt: '2024-05-03T23:59:59.500Z', channels: 1, encoding: 'mulaw', frames: 333, unpatched: true },
];
for (let i = 0; i < 9; i++) {
  FIXTURES.push({
    stream: 20 + i, call: 20 + (i % 3), cti: `cti-P${i % 2}`, emp: `emp-P${i % 4}`,
    startedAt: new Date(Date.UTC(2024, 3, 28 + (i % 3), 12, i)).toISOString(), channels: 1, encoding: 'mulaw', frames: 160,
  });
}

interface Written {
  sidecar: RecordingSidecar;
  file: Buffer;
  audioPath: string;
}

async function writeFixture(dir: string, f: Fixture): Promise<Written> {
  const id = recId(f.stream);
  const data = sampleData(f.encoding, f.frames * f.channels, f.stream);
  const header = buildWavHeader({ encoding: f.encoding, channels: f.channels, sampleRate: 8000, dataBytes: data.length });
  if (f.unpatched) header.writeUInt32LE(0x7fffffff, header.length - 4);
  // a writer that died never wrote the pad byte either
  const file = Buffer.concat([header, data, Buffer.alloc(f.unpatched ? 0 : data.length & 1)]);
  const startedAt = new Date(f.startedAt);
  const p = segmentPaths(dir, ACCOUNT, callSid(f.call), startedAt, id);
  const durationMs = f.frames / 8;
  const sidecar: RecordingSidecar = {
    recordingId: id, accountSid: ACCOUNT, callSid: callSid(f.call), streamSid: streamSid(f.stream),
    ctiSessionId: f.cti, employeeId: f.emp, segmentIndex: 0,
    tracks: f.channels === 2 ? ['inbound', 'outbound'] : ['inbound'], channels: f.channels, encoding: f.encoding,
    sampleRate: 8000, startedAt: f.startedAt, endedAt: new Date(startedAt.getTime() + durationMs).toISOString(),
    durationMs, offsetMs: 0, framesReceived: Math.ceil(durationMs / 20), framesMissing: 0, framesDuplicate: 0,
    framesLate: 0, framesTooLate: 0, frames: {}, pausedIntervals: [], closeReason: 'stop',
    customParameters: f.cti ? { ctiSessionId: f.cti } : {}, audioFile: `${id}.wav`, audioBytes: file.length,
    sha256: createHash('sha256').update(file).digest('hex'), nodeId: 'node-test',
  };
  await mkdir(path.dirname(p.audio), { recursive: true });
  await writeFile(p.audio, file);
  await writeFile(p.sidecar, JSON.stringify(sidecar, null, 2));
  return { sidecar, file, audioPath: p.audio };
}

const written = new Map<string, Written>();
const byStream = (n: number) => written.get(recId(n))!;
// recordings whose audio is damaged in various ways (they are listed like any other)
const BROKEN = { gone: 40, corrupt: 41, empty: 42, loop: 43 } as const;
let dir = '';
let index: SqliteCatalog;
t.teardown(() => (dir ? rm(dir, { recursive: true, force: true }) : undefined));
const badFiles: string[] = [];
let loaded = -1;
let ALL: RecordingSidecar[] = [];
let local: { app: FastifyInstance; base: string };

// all asynchronous set-up runs in a before hook: tap may end the root test while top-level
// awaits are pending under load, and then refuses the subtests that follow
t.before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'api-recordings-'));
  index = new SqliteCatalog(dir);
  await index.open();
  for (const f of FIXTURES) {
    const w = await writeFixture(dir, f);
    written.set(w.sidecar.recordingId, w);
  }
  for (const [what, stream] of Object.entries(BROKEN)) {
    const w = await writeFixture(dir, {
      stream, call: 40, cti: 'cti-broken', emp: 'emp-broken', startedAt: `2024-06-0${stream - 39}T00:00:00.000Z`, channels: 1, encoding: 'mulaw', frames: 10,
    });
    if (what === 'corrupt') await writeFile(w.audioPath, 'this is not a RIFF file at all');
    if (what === 'empty') await writeFile(w.audioPath, '');
    written.set(w.sidecar.recordingId, w);
  }
  loaded = (await importSidecars({ catalog: index, recordingsDir: dir, onBadFile: (p) => badFiles.push(p) })).imported;
  // removed from disk after indexing / replaced by a symlink pointing at itself (open fails ELOOP)
  await unlink(written.get(recId(BROKEN.gone))!.audioPath);
  const loopPath = written.get(recId(BROKEN.loop))!.audioPath;
  await unlink(loopPath);
  await symlink(loopPath, loopPath);

  ALL = [...written.values()].map((w) => w.sidecar)
    .sort((a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt) || (a.recordingId < b.recordingId ? -1 : 1));
  local = await startApp('127.0.0.1', []);
});
t.teardown(async () => {
  await local?.app.close(); // eslint-disable-line @typescript-eslint/no-unnecessary-condition -- unset if startApp failed
  await index?.close(); // eslint-disable-line @typescript-eslint/no-unnecessary-condition -- unset if opening it failed
});

t.test('the fixtures load into the index without complaints', async (t) => {
  t.equal(loaded, FIXTURES.length + 4, 'every fixture indexed');
  t.same(badFiles, []);
  t.equal(await index.count(), FIXTURES.length + 4);
});

const idsOf = (items: RecordingSidecar[]) => items.map((s) => s.recordingId);

// ---------------------------------------------------------------------------------------------
// app and HTTP helpers

async function startApp(host: string, apiKeys: string[]): Promise<{ app: FastifyInstance; base: string }> {
  const app = Fastify({ logger: false, frameworkErrors });
  installErrorHandling(app);
  registerV1Scope(app, { auth: { apiKeys } }, (v1) => {
    registerRecordingRoutes(v1, { index });
    // routes that exist only to exercise the error handler
    v1.get('/test/boom', async () => {
      throw new Error('secret detail: password=hunter2 at /etc/shadow');
    });
    v1.get('/test/teapot', async () => {
      throw Object.assign(new Error('short and stout'), { statusCode: 418 });
    });
    v1.post('/test/echo', async (request) => request.body);
  });
  app.get('/healthz', async () => ({ ok: true }));
  await app.listen({ port: 0, host });
  const { port } = app.server.address() as AddressInfo;
  return { app, base: `http://${host.includes(':') ? `[${host}]` : host}:${port}` };
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A request whose path goes out byte for byte (fetch would normalise `..` and encodings). */
function raw(base: string, rawPath: string, headers: Record<string, string> = {}, method = 'GET'): Promise<RawResponse> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port, path: rawPath, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const json = (r: RawResponse) => JSON.parse(r.body.toString('utf8'));


async function get(p: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(local.base + p, { headers });
}

async function getBytes(p: string, headers: Record<string, string> = {}): Promise<{ res: Response; body: Buffer }> {
  const res = await get(p, headers);
  return { res, body: Buffer.from(await res.arrayBuffer()) };
}

type Asserts = Pick<typeof t, 'equal' | 'same' | 'type' | 'match'>;

async function expectError(t: Asserts, res: Response | RawResponse, status: number, code: string, message?: RegExp): Promise<void> {
  const body = res instanceof Response ? await res.json() : json(res);
  t.equal(res.status, status, `status ${status}`);
  t.same(Object.keys(body).sort(), ['error', 'message'], 'error body has exactly error and message');
  t.equal(body.error, code);
  t.type(body.message, 'string');
  if (message) t.match(body.message, message);
}

// ---------------------------------------------------------------------------------------------
// listing

t.test('GET /v1/recordings lists everything in (startedAt, recordingId) order', async (t) => {
  const res = await get('/v1/recordings');
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^application\/json/);
  const body = await res.json();
  t.same(body, { items: ALL, nextCursor: null }, 'full sidecars, default limit covers all');
  // streams 5 and 6 start at the same instant: ordered by id
  const ids = idsOf(body.items);
  t.ok(ids.indexOf(recId(5)) + 1 === ids.indexOf(recId(6)));
});

t.test('every filter, alone and combined', async (t) => {
  const cases: Array<[string, (s: RecordingSidecar) => boolean]> = [
    [`callSid=${callSid(1)}`, (s) => s.callSid === callSid(1)],
    [`callSid=${callSid(20)}`, (s) => s.callSid === callSid(20)],
    ['ctiSessionId=cti-A', (s) => s.ctiSessionId === 'cti-A'],
    ['ctiSessionId=cti-P1', (s) => s.ctiSessionId === 'cti-P1'],
    ['employeeId=emp-2', (s) => s.employeeId === 'emp-2'],
    ['employeeId=emp-P0&ctiSessionId=cti-P0', (s) => s.employeeId === 'emp-P0' && s.ctiSessionId === 'cti-P0'],
    [`employeeId=emp-1&callSid=${callSid(1)}&ctiSessionId=cti-A`, (s) => s.employeeId === 'emp-1' && s.callSid === callSid(1)],
    ['from=2024-05-01T08:05:00Z', (s) => Date.parse(s.startedAt) >= Date.parse('2024-05-01T08:05:00Z')],
    ['to=2024-05-01T08:05:00Z', (s) => Date.parse(s.startedAt) < Date.parse('2024-05-01T08:05:00Z')],
    ['from=2024-05-01T08:05:00.000Z&to=2024-05-03T23:59:59.500Z', (s) => s.startedAt >= '2024-05-01T08:05:00.000Z' && s.startedAt < '2024-05-03T23:59:59.500Z'],
    // the same instants written with offsets
    ['from=2024-05-01T10:05:00%2B02:00&to=2024-05-03T23:59:59.501Z', (s) => s.startedAt >= '2024-05-01T08:05:00.000Z' && s.startedAt <= '2024-05-03T23:59:59.500Z'],
    ['from=2024-04-29T00:00:00Z&to=2024-04-30T00:00:00Z&employeeId=emp-P1', (s) => s.startedAt.startsWith('2024-04-29') && s.employeeId === 'emp-P1'],
    ['ctiSessionId=nobody', () => false],
    [`callSid=${callSid(999)}`, () => false],
  ];
  for (const [qs, pred] of cases) {
    const res = await get(`/v1/recordings?${qs}`);
    t.equal(res.status, 200, qs);
    const body = await res.json();
    const expected = idsOf(ALL.filter(pred));
    t.same(idsOf(body.items), expected, qs);
    t.equal(body.nextCursor, null);
  }
  // sanity: the filters above are not trivially empty
  t.equal(ALL.filter((s) => s.ctiSessionId === 'cti-A').length, 3);
});

t.test('paging with limit and cursor until exhausted: no duplicates, no gaps', async (t) => {
  for (const [qs, pred] of [
    ['', () => true],
    ['&ctiSessionId=cti-P0', (s: RecordingSidecar) => s.ctiSessionId === 'cti-P0'],
    ['&from=2024-04-29T00:00:00Z&to=2024-05-02T09:00:00Z', (s: RecordingSidecar) => s.startedAt >= '2024-04-29' && s.startedAt < '2024-05-02T09:00:00.000Z'],
  ] as const) {
    const expected = idsOf(ALL.filter(pred));
    for (const limit of [1, 2, 3, 7, expected.length, 1000]) {
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const res = await get(`/v1/recordings?limit=${limit}${qs}${cursor ? `&cursor=${cursor}` : ''}`);
        t.equal(res.status, 200);
        const body = (await res.json()) as { items: RecordingSidecar[]; nextCursor: string | null };
        t.ok(body.items.length <= limit && body.items.length > 0, 'a page is never empty or over the limit');
        seen.push(...idsOf(body.items));
        cursor = body.nextCursor;
        if (cursor !== null) t.match(cursor, /^[A-Za-z0-9_-]+$/, 'cursor is base64url');
        pages++;
      } while (cursor !== null && pages < 100);
      t.same(seen, expected, `limit ${limit}${qs}: all items, in order, once`);
      t.equal(pages, Math.max(1, Math.ceil(expected.length / limit)));
    }
  }
});

t.test('listing: bad parameters are 400 with a message naming the parameter', async (t) => {
  await expectError(t, await get('/v1/recordings?cursor=not-a-cursor'), 400, 'bad_request', /cursor/);
  await expectError(t, await get(`/v1/recordings?cursor=${Buffer.from('[1,"x"]').toString('base64url')}`), 400, 'bad_request', /cursor/);
  await expectError(t, await get('/v1/recordings?cursor=' + encodeURIComponent('a/b+c=')), 400, 'bad_request', /cursor/);
  await expectError(t, await get('/v1/recordings?limit=0'), 400, 'bad_request', /limit/);
  await expectError(t, await get('/v1/recordings?limit=1001'), 400, 'bad_request', /limit/);
  await expectError(t, await get('/v1/recordings?limit=ten'), 400, 'bad_request', /limit/);
  await expectError(t, await get('/v1/recordings?limit=2.5'), 400, 'bad_request', /limit/);
  await expectError(t, await get('/v1/recordings?from=yesterday'), 400, 'bad_request', /from/);
  await expectError(t, await get('/v1/recordings?to=2024-05-01'), 400, 'bad_request', /to/);
  // syntactically a date-time (leap second) but not a representable instant
  await expectError(t, await get('/v1/recordings?from=2016-12-31T23:59:60Z'), 400, 'bad_request', /from/);
  await expectError(t, await get('/v1/recordings?from=2024-05-02T00:00:00Z&to=2024-05-01T00:00:00Z'), 400, 'bad_request', /from .* is after to/);
  await expectError(t, await get('/v1/recordings?callSid=../../etc'), 400, 'bad_request', /callSid/);
  // an id over 256 characters is clipped as at ingest (recorder/ingest-limits.ts), not refused
  const long = await get(`/v1/recordings?employeeId=${'x'.repeat(300)}`);
  t.equal(long.status, 200);
  t.same(await long.json(), { items: [], nextCursor: null });
  await expectError(t, await get('/v1/recordings?employeeId='), 400, 'bad_request', /employeeId/);
  await expectError(t, await get('/v1/recordings?employee=emp-1'), 400, 'bad_request', /unknown query parameter.*"employee".*allowed: callSid/);
  // an empty interval is fine
  const same = await get('/v1/recordings?from=2024-05-01T08:00:00Z&to=2024-05-01T08:00:00Z');
  t.same(await same.json(), { items: [], nextCursor: null });
});

t.test('listing: accountSid, closeReason and minDurationMs filters, and count=true gives the total', async (t) => {
  const list = async (qs: string) => (await (await get(`/v1/recordings?${qs}`)).json()) as { items: RecordingSidecar[]; nextCursor: string | null; total?: number };
  t.same(idsOf((await list(`accountSid=${ACCOUNT}&limit=1000`)).items), idsOf(ALL), 'every fixture is of ACCOUNT');
  t.same((await list(`accountSid=AC${'f'.repeat(32)}`)).items, []);
  t.same(idsOf((await list('closeReason=stop&limit=1000')).items), idsOf(ALL));
  t.same((await list('closeReason=hangup')).items, []);
  const longOnes = ALL.filter((s) => s.durationMs >= 1000);
  t.ok(longOnes.length > 0 && longOnes.length < ALL.length, 'the fixtures straddle the minimum');
  t.same(idsOf((await list('minDurationMs=1000&limit=1000')).items), idsOf(longOnes));
  const counted = await list('count=true&limit=2&ctiSessionId=cti-A');
  t.equal(counted.total, ALL.filter((s) => s.ctiSessionId === 'cti-A').length);
  t.equal(counted.items.length, 2);
  t.notOk('total' in (await list('limit=2')), 'no total unless count=true');
  t.equal((await list('count=false&limit=2')).total, undefined);
  // bad values of the new parameters, each named
  await expectError(t, await get('/v1/recordings?accountSid=AC123'), 400, 'bad_request', /accountSid/);
  await expectError(t, await get('/v1/recordings?closeReason=exploded'), 400, 'bad_request', /closeReason/);
  await expectError(t, await get('/v1/recordings?closeReason='), 400, 'bad_request', /closeReason/);
  await expectError(t, await get('/v1/recordings?minDurationMs=-1'), 400, 'bad_request', /minDurationMs/);
  await expectError(t, await get('/v1/recordings?minDurationMs=1.5'), 400, 'bad_request', /minDurationMs/);
  await expectError(t, await get('/v1/recordings?minDurationMs=soon'), 400, 'bad_request', /minDurationMs/);
  await expectError(t, await get('/v1/recordings?count=maybe'), 400, 'bad_request', /count/);
});

// ---------------------------------------------------------------------------------------------
// single recording

t.test('GET /v1/recordings/:id returns the sidecar', async (t) => {
  for (const n of [1, 4, 6]) {
    const res = await get(`/v1/recordings/${recId(n)}`);
    t.equal(res.status, 200);
    t.same(await res.json(), byStream(n).sidecar);
  }
  await expectError(t, await get(`/v1/recordings/${recId(777)}`), 404, 'not_found', new RegExp(recId(777)));
  await expectError(t, await get(`/v1/recordings/${recId(777)}/audio`), 404, 'not_found');
  await expectError(t, await get(`/v1/recordings/${recId(1)}?x=1`), 400, 'bad_request', /unknown query parameter/);
});

t.test('bad id shapes, path traversal included, are 400 and never touch the disk', async (t) => {
  const attempts = [
    'abc',
    '..',
    '%2e%2e',
    '..%2F..%2F..%2Fetc%2Fpasswd',
    '..%2f..%2fetc%2fpasswd',
    '%2E%2E%5C%2E%2E%5Cwindows',
    '....%2F%2F....%2F%2Fetc',
    `${recId(1)}%00`,
    `${recId(1)}%2F..`,
    `..%2F${callSid(1)}%2F${recId(1)}`,
    recId(1).replace('MZ', 'mz'),
    `MZ${'F'.repeat(32)}-0000`,
    `${recId(1)}-0000`,
    `${recId(1)}.wav`,
    `${recId(1)}.json`,
    `%252e%252e%252f`,
  ];
  for (const a of attempts) {
    for (const suffix of ['', '/audio', '/audio?format=pcm16']) {
      const r = await raw(local.base, `/v1/recordings/${a}${suffix}`);
      await expectError(t, r, 400, 'bad_request', /recording id .* is malformed/);
    }
  }
  // over fastify's maxParamLength: refused before routing, same error shape
  const long = await raw(local.base, `/v1/recordings/..%2F${ACCOUNT}%2F2024%2F05%2F01%2F${callSid(1)}%2F${recId(1)}/audio`);
  await expectError(t, long, 414, 'uri_too_long', /max param length/);
  // an unencoded ../ is a different path: it matches no route (and is not resolved either)
  for (const p of ['/v1/recordings/../../etc/passwd', `/v1/recordings/../recordings/${recId(1)}`, '/v1/recordings/x/../../../etc/passwd']) {
    const r = await raw(local.base, p);
    t.not(r.status, 200, p);
    t.ok(r.status === 400 || r.status === 404, `${p} -> ${r.status}`);
    t.equal(json(r).error, r.status === 400 ? 'bad_request' : 'not_found');
  }
});

// ---------------------------------------------------------------------------------------------
// audio as stored

t.test('audio: whole file, headers, HEAD, ETag and conditional requests', async (t) => {
  for (const n of [1, 2, 3]) {
    const w = byStream(n);
    const { res, body } = await getBytes(`/v1/recordings/${recId(n)}/audio`);
    t.equal(res.status, 200);
    t.equal(res.headers.get('content-type'), 'audio/wav');
    t.equal(res.headers.get('accept-ranges'), 'bytes');
    t.equal(res.headers.get('etag'), `"${w.sidecar.sha256}"`);
    t.equal(res.headers.get('content-length'), String(w.file.length));
    t.equal(res.headers.get('content-disposition'), `inline; filename="${recId(n)}.wav"`);
    t.ok(body.equals(w.file), 'bytes as stored');
    t.equal(createHash('sha256').update(body).digest('hex'), w.sidecar.sha256, 'ETag is the sha256 of the body');
  }
  const w = byStream(1);
  const url = `/v1/recordings/${recId(1)}/audio`;
  const head = await raw(local.base, url, {}, 'HEAD');
  t.equal(head.status, 200);
  t.equal(head.headers['content-length'], String(w.file.length));
  t.equal(head.headers.etag, `"${w.sidecar.sha256}"`);
  t.equal(head.body.length, 0);
  const headRange = await raw(local.base, url, { range: 'bytes=0-9' }, 'HEAD');
  t.equal(headRange.status, 206);
  t.equal(headRange.headers['content-length'], '10');

  const etag = `"${w.sidecar.sha256}"`;
  const notModified = await get(url, { 'if-none-match': etag });
  t.equal(notModified.status, 304);
  t.equal(notModified.headers.get('etag'), etag);
  t.equal((await notModified.arrayBuffer()).byteLength, 0);
  t.equal((await get(url, { 'if-none-match': `"other", W/${etag}` })).status, 304, 'weak comparison in a list');
  t.equal((await get(url, { 'if-none-match': '*' })).status, 304);
  const changed = await getBytes(url, { 'if-none-match': '"something-else"' });
  t.equal(changed.res.status, 200);
  t.ok(changed.body.equals(w.file));

  // If-Range: the range applies only if the client holds this very representation
  const same = await getBytes(url, { range: 'bytes=100-199', 'if-range': etag });
  t.equal(same.res.status, 206);
  t.ok(same.body.equals(w.file.subarray(100, 200)));
  const stale = await getBytes(url, { range: 'bytes=100-199', 'if-range': '"stale"' });
  t.equal(stale.res.status, 200);
  t.ok(stale.body.equals(w.file));
});

t.test('audio: Range forms on the stored file', async (t) => {
  const w = byStream(4); // 160 kB: ranges cross the read-stream chunk size
  const size = w.file.length;
  const url = `/v1/recordings/${recId(4)}/audio`;
  const partial: Array<[string, number, number]> = [
    ['bytes=0-0', 0, 0],
    ['bytes=0-43', 0, 43],
    ['bytes=10-99', 10, 99],
    ['bytes=65530-131080', 65530, 131080],
    [`bytes=${size - 1}-${size - 1}`, size - 1, size - 1],
    ['bytes=1000-', 1000, size - 1],
    [`bytes=5-${size * 10}`, 5, size - 1],
    ['bytes=-1', size - 1, size - 1],
    ['bytes=-100', size - 100, size - 1],
    [`bytes=-${size + 50}`, 0, size - 1],
    ['BYTES = 7 - 8', 7, 8],
  ];
  for (const [range, a, b] of partial) {
    const { res, body } = await getBytes(url, { range });
    t.equal(res.status, 206, range);
    t.equal(res.headers.get('content-range'), `bytes ${a}-${b}/${size}`, range);
    t.equal(res.headers.get('content-length'), String(b - a + 1));
    t.equal(res.headers.get('etag'), `"${w.sidecar.sha256}"`);
    t.ok(body.equals(w.file.subarray(a, b + 1)), `${range}: body is that slice`);
  }
  for (const range of [`bytes=${size}-`, `bytes=${size}-${size + 10}`, 'bytes=-0']) {
    const res = await get(url, { range });
    t.equal(res.headers.get('content-range'), `bytes */${size}`, range);
    await expectError(t, res, 416, 'range_not_satisfiable', new RegExp(`${size} bytes`));
  }
  // malformed, multi-range, other units, reversed: ignored, whole body with 200
  for (const range of ['bytes=0-1,5-6', 'bytes=-5,0-1', 'bytes=abc', 'bytes=-', 'bytes=9-3', 'items=0-5', 'bytes 0-5', 'bytes=1-2-3', 'bytes=0x10-20']) {
    const { res, body } = await getBytes(url, { range });
    t.equal(res.status, 200, range);
    t.equal(res.headers.get('content-range'), null);
    t.ok(body.equals(w.file), `${range}: whole file`);
  }
});

t.test('parseRange unit cases', async (t) => {
  t.equal(parseRange(undefined, 10), null);
  t.same(parseRange('bytes=0-', 10), { start: 0, end: 9 });
  t.same(parseRange('bytes=-3', 10), { start: 7, end: 9 });
  t.equal(parseRange('bytes=-3', 0), 'unsatisfiable');
  t.equal(parseRange('bytes=0-', 0), 'unsatisfiable');
  t.equal(parseRange('bytes=10-', 10), 'unsatisfiable');
  t.equal(parseRange('bytes=3-2', 10), null);
  t.same(parseRange('bytes=2-2', 10), { start: 2, end: 2 });
});

t.test('audio: damaged files', async (t) => {
  await expectError(t, await get(`/v1/recordings/${recId(BROKEN.gone)}/audio`), 404, 'not_found', /no longer on disk/);
  // a symlink loop cannot be opened: an internal error, without paths in the answer
  const loop = await get(`/v1/recordings/${recId(BROKEN.loop)}/audio`);
  const loopBody = await loop.json();
  t.equal(loop.status, 500);
  t.equal(loopBody.error, 'internal');
  t.notMatch(loopBody.message, /ELOOP|\/tmp|api-recordings-/);
  // not a WAV: served as stored, but cannot be converted
  const corrupt = await getBytes(`/v1/recordings/${recId(BROKEN.corrupt)}/audio`);
  t.equal(corrupt.res.status, 200);
  t.equal(corrupt.body.toString(), 'this is not a RIFF file at all');
  await expectError(t, await get(`/v1/recordings/${recId(BROKEN.corrupt)}/audio?format=pcm16`), 500, 'internal', /not a readable WAV/);
  // empty file: 200 with nothing, every range unsatisfiable
  const empty = await getBytes(`/v1/recordings/${recId(BROKEN.empty)}/audio`);
  t.equal(empty.res.status, 200);
  t.equal(empty.res.headers.get('content-length'), '0');
  t.equal(empty.body.length, 0);
  const emptyRange = await get(`/v1/recordings/${recId(BROKEN.empty)}/audio`, { range: 'bytes=-5' });
  t.equal(emptyRange.headers.get('content-range'), 'bytes */0');
  await expectError(t, emptyRange, 416, 'range_not_satisfiable');
});

// ---------------------------------------------------------------------------------------------
// conversion

/** Samples of a WAV as int16, decoded by wavefile (mu-law expanded by wavefile too). */
function decodeWithWavefile(buf: Buffer): { format: number; channels: number; rate: number; samples: Int16Array } {
  const w = new WaveFile(buf);
  const { audioFormat: format, numChannels: channels, sampleRate: rate } = w.fmt as { audioFormat: number; numChannels: number; sampleRate: number };
  if (format === 7) w.fromMuLaw();
  return { format, channels, rate, samples: w.getSamples(true, Int16Array) as unknown as Int16Array };
}

function storedSamples(w: Written, frames: number): Buffer {
  const info = parseWavHeader(w.file);
  return w.file.subarray(info.dataOffset, info.dataOffset + frames * info.blockAlign);
}

t.test('format=pcm16 / mulaw: a complete WAV, equal sample by sample', async (t) => {
  for (const f of FIXTURES.slice(0, 6)) {
    const w = byStream(f.stream);
    const target: WavEncoding = f.encoding === 'mulaw' ? 'pcm16' : 'mulaw';
    const { res, body } = await getBytes(`/v1/recordings/${recId(f.stream)}/audio?format=${target}`);
    const label = `stream ${f.stream} ${f.encoding}/${f.channels}ch -> ${target}`;
    t.equal(res.status, 200, label);
    t.equal(res.headers.get('content-type'), 'audio/wav');
    t.equal(res.headers.get('etag'), `"${w.sidecar.sha256}-${target}"`, 'its own ETag');
    t.equal(res.headers.get('content-disposition'), `inline; filename="${recId(f.stream)}-${target}.wav"`);
    const samples = f.frames * f.channels;
    const dataBytes = samples * (target === 'pcm16' ? 2 : 1);
    t.equal(body.length, wavHeaderLength(target) + dataBytes + (dataBytes & 1), `${label}: size, RIFF pad included`);
    t.equal(res.headers.get('content-length'), String(body.length));
    const info = parseWavHeader(body);
    t.same({ encoding: info.encoding, channels: info.channels, sampleRate: info.sampleRate, dataBytes: info.dataBytes }, {
      encoding: target, channels: f.channels, sampleRate: 8000, dataBytes,
    });
    if (dataBytes & 1) t.equal(body[body.length - 1], 0, 'pad byte is zero');
    t.equal(body.readUInt32LE(4), body.length - 8, 'RIFF size matches the body');

    const source = storedSamples(w, f.frames);
    const conv = decodeWithWavefile(body);
    t.equal(conv.format, target === 'pcm16' ? 1 : 7);
    t.equal(conv.channels, f.channels);
    t.equal(conv.rate, 8000);
    // wavefile reads an odd data chunk's RIFF pad byte as one more 8-bit sample
    t.equal(conv.samples.length, samples + (dataBytes & 1));
    let mismatches = 0;
    if (f.encoding === 'mulaw') {
      // mu-law -> pcm16 is exact: every converted sample is what wavefile decodes from the source
      // (through a clean header: wavefile cannot read an unpatched one)
      const clean = Buffer.concat([buildWavHeader({ encoding: 'mulaw', channels: f.channels, sampleRate: 8000, dataBytes: source.length }), source]);
      const src = decodeWithWavefile(clean).samples;
      for (let i = 0; i < samples; i++) if (conv.samples[i] !== src[i] || conv.samples[i] !== MULAW_TO_PCM16[source[i]!]) mismatches++;
    } else {
      // pcm16 -> mu-law: each code is the G.711 encoding of the source sample, and decodes close to it
      const codes = body.subarray(info.dataOffset, info.dataOffset + samples);
      let worst = 0;
      for (let i = 0; i < samples; i++) {
        const s = source.readInt16LE(i * 2);
        if (codes[i] !== pcm16ToMulawSample(s) || conv.samples[i] !== MULAW_TO_PCM16[codes[i]!]) mismatches++;
        worst = Math.max(worst, Math.abs(conv.samples[i]! - s));
      }
      t.ok(worst <= 1024, `mu-law quantisation error stays within one top-segment step (worst ${worst})`);
    }
    t.equal(mismatches, 0, `${label}: every sample matches`);
  }
});

t.test('format equal to the stored encoding serves the file as stored', async (t) => {
  for (const [n, format] of [[1, 'mulaw'], [3, 'pcm16']] as const) {
    const w = byStream(n);
    const { res, body } = await getBytes(`/v1/recordings/${recId(n)}/audio?format=${format}`);
    t.equal(res.status, 200);
    t.equal(res.headers.get('etag'), `"${w.sidecar.sha256}"`);
    t.ok(body.equals(w.file));
  }
  for (const n of [1, 3]) {
    const { res, body } = await getBytes(`/v1/recordings/${recId(n)}/audio?format=wav`);
    t.equal(res.status, 200);
    t.ok(body.equals(byStream(n).file), 'format=wav is the WAV as stored');
  }
  for (const format of ['alaw', 'PCM16', 'ogg', '']) {
    await expectError(t, await get(`/v1/recordings/${recId(1)}/audio?format=${format}`), 400, 'bad_request', /format .* is not supported; use one of pcm16, mulaw, wav, opus, flac, mp3/);
  }
  await expectError(t, await get(`/v1/recordings/${recId(1)}/audio?fmt=pcm16`), 400, 'bad_request', /unknown query parameter.*"fmt"/);
});

t.test('an unpatched header (writer died) converts what the file really holds', async (t) => {
  const f = FIXTURES.find((x) => x.unpatched)!;
  const { body } = await getBytes(`/v1/recordings/${recId(f.stream)}/audio?format=pcm16`);
  const info = parseWavHeader(body);
  t.equal(info.dataBytes, f.frames * 2);
  t.equal(body.length, info.dataOffset + f.frames * 2);
});

t.test('converted Range equals the same slice of the fully converted body', async (t) => {
  const rnd = prng(99);
  for (const [n, format] of [[1, 'pcm16'], [2, 'pcm16'], [3, 'mulaw'], [4, 'mulaw'], [6, 'pcm16']] as const) {
    const url = `/v1/recordings/${recId(n)}/audio?format=${format}`;
    const { body: whole } = await getBytes(url);
    const size = whole.length;
    const h = wavHeaderLength(format);
    const ranges: Array<[number, number]> = [
      [0, 0], [0, 9], [10, h - 1], [h - 5, h + 4], [h - 1, h], [h, h], [h + 1, h + 1], [h + 1, h + 2], [h + 3, h + 100],
      [h + 1, size - 1], [size - 1, size - 1], [size - 3, size - 1], [0, size - 1],
    ];
    for (let i = 0; i < 25; i++) {
      const a = Math.floor(rnd() * size);
      ranges.push([a, Math.min(size - 1, a + Math.floor(rnd() * 70_000))]);
    }
    for (const [a, b] of ranges) {
      const { res, body } = await getBytes(url, { range: `bytes=${a}-${b}` });
      t.equal(res.status, 206);
      t.equal(res.headers.get('content-range'), `bytes ${a}-${b}/${size}`);
      t.equal(res.headers.get('content-length'), String(b - a + 1));
      if (!body.equals(whole.subarray(a, b + 1))) t.fail(`${url} bytes=${a}-${b} differs from the slice`);
    }
    for (const [range, a] of [['bytes=-1', size - 1], ['bytes=-7', size - 7], [`bytes=${h + 11}-`, h + 11]] as const) {
      const { res, body } = await getBytes(url, { range });
      t.equal(res.headers.get('content-range'), `bytes ${a}-${size - 1}/${size}`);
      t.ok(body.equals(whole.subarray(a)), `${url} ${range}`);
    }
    const res = await get(url, { range: `bytes=${size}-` });
    t.equal(res.headers.get('content-range'), `bytes */${size}`);
    await expectError(t, res, 416, 'range_not_satisfiable');
    t.pass(`${url}: ${ranges.length} ranges checked`);
  }
});

t.test('TranscodeSlice copes with chunks split inside a sample and reports a short source', async (t) => {
  const pcm = sampleData('pcm16', 1000, 7);
  const full = transcode(pcm, 'pcm16', 'mulaw');
  // source fed one odd-sized piece at a time
  const pieces: Buffer[] = [];
  for (let i = 0; i < pcm.length; i += 37) pieces.push(pcm.subarray(i, i + 37));
  const out: Buffer[] = [];
  const slice = new TranscodeSlice('pcm16', 'mulaw', 3, 500, Buffer.from('HDR'), Buffer.from([0]));
  slice.on('data', (c: Buffer) => out.push(c));
  await pipeline(Readable.from(pieces), slice);
  t.ok(Buffer.concat(out).equals(Buffer.concat([Buffer.from('HDR'), full.subarray(3, 503), Buffer.from([0])])));

  const toPcm: Buffer[] = [];
  const up = new TranscodeSlice('mulaw', 'pcm16', 1, 11, Buffer.alloc(0), Buffer.alloc(0));
  up.on('data', (c: Buffer) => toPcm.push(c));
  await pipeline(Readable.from([full.subarray(0, 3), full.subarray(3, 10)]), up);
  t.ok(Buffer.concat(toPcm).equals(transcode(full.subarray(0, 10), 'mulaw', 'pcm16').subarray(1, 12)));

  const short = new TranscodeSlice('mulaw', 'pcm16', 0, 100, Buffer.alloc(0), Buffer.alloc(0));
  const sink = new PassThrough();
  sink.resume();
  await t.rejects(pipeline(Readable.from([full.subarray(0, 10)]), short, sink), /ended 80 converted bytes early/);
});

t.test('no file handle outlives its request (HEAD, 304, 416, header-only ranges, aborted downloads)', async (t) => {
  const openUnderDir = async () => {
    let n = 0;
    for (const fd of await readdir('/proc/self/fd')) {
      const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
      if (target.startsWith(dir)) n++;
    }
    return n;
  };
  const before = await openUnderDir();
  const url = `/v1/recordings/${recId(4)}/audio`;
  const etag = `"${byStream(4).sidecar.sha256}"`;
  await raw(local.base, url, {}, 'HEAD');
  await (await get(url, { 'if-none-match': etag })).arrayBuffer();
  await (await get(url, { range: 'bytes=999999999-' })).arrayBuffer();
  await (await get(`${url}?format=mulaw`, { range: 'bytes=0-20' })).arrayBuffer();
  await (await get(`/v1/recordings/${recId(3)}/audio?format=mulaw`, { range: 'bytes=-1' })).arrayBuffer();
  await (await get(`/v1/recordings/${recId(BROKEN.corrupt)}/audio?format=pcm16`)).arrayBuffer();
  for (const u of [url, `${url}?format=mulaw`, `/v1/recordings/${recId(2)}/audio?format=pcm16`]) {
    const ac = new AbortController();
    const res = await fetch(local.base + u, { signal: ac.signal });
    const reader = res.body!.getReader();
    await reader.read();
    ac.abort();
    await reader.read().catch(() => undefined);
  }
  let after = await openUnderDir();
  for (let i = 0; i < 50 && after > before; i++) {
    await new Promise((r) => setTimeout(r, 20));
    after = await openUnderDir();
  }
  t.equal(after, before, 'every opened audio file was closed');
});

// ---------------------------------------------------------------------------------------------
// CTI sessions

t.test('GET /v1/cti-sessions/:id lists the session in time order', async (t) => {
  const res = await get('/v1/cti-sessions/cti-A');
  t.equal(res.status, 200);
  t.same(await res.json(), { ctiSessionId: 'cti-A', recordings: ALL.filter((s) => s.ctiSessionId === 'cti-A') });
  t.same(idsOf((await (await get('/v1/cti-sessions/cti-A')).json()).recordings), [recId(1), recId(2), recId(3)]);
  const p0 = await (await get('/v1/cti-sessions/cti-P0')).json();
  t.same(idsOf(p0.recordings), idsOf(ALL.filter((s) => s.ctiSessionId === 'cti-P0')));
  t.ok(p0.recordings.length > 2);
  await expectError(t, await get('/v1/cti-sessions/nobody'), 404, 'not_found', /nobody/);
  // longer than fastify's maxParamLength (100 by default): refused before routing
  await expectError(t, await get(`/v1/cti-sessions/${'x'.repeat(257)}`), 414, 'uri_too_long');
  await expectError(t, await get('/v1/cti-sessions/cti-A?limit=1'), 400, 'bad_request', /unknown query parameter/);
});

// ---------------------------------------------------------------------------------------------
// error shape

t.test('errors: unknown routes, unexpected errors, framework and client errors share one shape', async (t) => {
  await expectError(t, await get('/v1/nope?secret=1'), 404, 'not_found', /^no route for GET \/v1\/nope$/);
  await expectError(t, await get('/nope'), 404, 'not_found');
  const long = await get(`/v1/${'a'.repeat(500)}`);
  const longBody = await long.json();
  t.equal(long.status, 404);
  t.ok(longBody.message.length < 260, 'long paths are shortened in messages');

  const boom = await get('/v1/test/boom');
  const boomBody = await boom.json();
  t.equal(boom.status, 500);
  t.equal(boomBody.error, 'internal');
  t.notMatch(JSON.stringify(boomBody), /secret|hunter2|shadow|stack/, 'nothing of the error leaks');
  t.match(boomBody.message, /request id/);

  await expectError(t, await get('/v1/test/teapot'), 418, 'bad_request', /short and stout/);
  const badJson = await fetch(`${local.base}/v1/test/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":' });
  await expectError(t, badJson, 400, 'bad_request');
  const badType = await fetch(`${local.base}/v1/test/echo`, { method: 'POST', headers: { 'content-type': 'application/x-nothing' }, body: 'x' });
  await expectError(t, badType, 415, 'unsupported_media_type');
  // a URL that does not percent-decode never reaches routing
  await expectError(t, await raw(local.base, '/v1/recordings/%E0%A4%A'), 400, 'bad_request');
});

// ---------------------------------------------------------------------------------------------
// access control

t.test('isLoopbackAddress', async (t) => {
  for (const a of ['127.0.0.1', '127.255.3.4', '::1', '::ffff:127.0.0.1', '::FFFF:127.9.9.9']) t.ok(isLoopbackAddress(a), a);
  for (const a of [undefined, '', '10.0.0.1', '192.0.2.2', '::ffff:10.1.2.3', '1127.0.0.1', '127.0.0.1.example', 'fd00::2', '::2']) t.notOk(isLoopbackAddress(a), String(a));
});

t.test('which paths the /v1 scope protects: every path it answers, routed or not, and nothing else', async (t) => {
  const keyed = await startApp('127.0.0.1', ['first-key']);
  t.teardown(() => keyed.app.close());
  const key = { authorization: 'Bearer first-key' };
  // routed and unknown paths under /v1 (a percent-encoded "v" routes there too): 401 without the key
  for (const p of ['/v1', '/v1/', '/v1/recordings?x=1', '/v1/recordings/', '/%761/recordings', '/v1/../v1/recordings', '/v1/calls/x/y/z']) {
    const res = await raw(keyed.base, p);
    t.equal(res.status, 401, p);
    await expectError(t, res, 401, 'unauthorized');
  }
  await expectError(t, await raw(keyed.base, '/v1', key), 404, 'not_found');
  t.equal((await raw(keyed.base, '/v1/recordings?limit=1', key)).status, 200, 'a routed path with the key');
  // outside /v1 no key is asked for. /V1/... is no route (paths are case-sensitive) and nothing
  // under it exists: 404 for everyone, with or without a key
  for (const p of ['/healthz', '/v10/x', '/v1x', '/twilio/v1', '/?/v1/', '/V1/recordings', '//v1/recordings']) {
    const res = await raw(keyed.base, p);
    t.not(res.status, 401, p);
    t.equal(res.status, p === '/healthz' ? 200 : 404, p);
  }
});

t.test('with API keys: bearer required and checked', async (t) => {
  const keyed = await startApp('127.0.0.1', ['', 'first-key', 'second-much-longer-key-0123456789']);
  t.teardown(() => keyed.app.close());
  const url = `${keyed.base}/v1/recordings?limit=1`;

  const missing = await fetch(url);
  t.equal(missing.headers.get('www-authenticate'), 'Bearer realm="recording-gateway"');
  await expectError(t, missing, 401, 'unauthorized', /Authorization: Bearer/);
  for (const authorization of ['Bearer wrong', 'Bearer first-ke', 'Bearer first-key-', 'Basic Zmlyc3Qta2V5', 'first-key', 'Bearer', 'Bearer ']) {
    const res = await fetch(url, { headers: { authorization } });
    t.equal(res.status, 401, authorization);
    t.match(res.headers.get('www-authenticate'), /^Bearer realm="recording-gateway"/);
    await expectError(t, res, 401, 'unauthorized');
  }
  t.match((await fetch(url, { headers: { authorization: 'Bearer nope' } })).headers.get('www-authenticate'), /error="invalid_token"/);
  // the empty key in the list is not a key
  t.equal((await fetch(url, { headers: { authorization: 'Bearer  ' } })).status, 401);

  for (const authorization of ['Bearer first-key', 'bearer second-much-longer-key-0123456789', 'BEARER   first-key']) {
    const res = await fetch(url, { headers: { authorization } });
    t.equal(res.status, 200, authorization);
    t.equal((await res.json()).items.length, 1);
  }
  const audio = await fetch(`${keyed.base}/v1/recordings/${recId(1)}/audio`, { headers: { authorization: 'Bearer first-key', range: 'bytes=0-3' } });
  t.equal(audio.status, 206);
  t.equal(Buffer.from(await audio.arrayBuffer()).toString(), 'RIFF');
  // unknown /v1 routes are not revealed without a key
  await expectError(t, await fetch(`${keyed.base}/v1/does-not-exist`), 401, 'unauthorized');
  await expectError(t, await fetch(`${keyed.base}/v1/does-not-exist`, { headers: { authorization: 'Bearer first-key' } }), 404, 'not_found');
  // health stays open
  t.equal((await fetch(`${keyed.base}/healthz`)).status, 200);
  t.equal((await fetch(`${keyed.base}/nope`)).status, 404);
});

t.test('without API keys: loopback only', async (t) => {
  t.equal((await get('/v1/recordings?limit=1')).status, 200, 'IPv4 loopback peer allowed');

  const v6 = await startApp('::1', []);
  t.teardown(() => v6.app.close());
  t.equal((await fetch(`${v6.base}/v1/recordings?limit=1`)).status, 200, 'IPv6 loopback peer allowed');

  // a loopback peer relaying for someone else (a reverse proxy on the host) is not local
  for (const h of ['x-forwarded-for', 'forwarded', 'x-real-ip']) {
    await expectError(t, await get('/v1/recordings', { [h]: h === 'forwarded' ? 'for=203.0.113.9' : '203.0.113.9' }), 403, 'forbidden', /through a proxy/);
  }

  // listen on this machine's non-loopback address and come from it: the peer really is not loopback
  const ext = Object.values(os.networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal);
  t.ok(ext, 'this machine has a non-loopback IPv4 address');
  const ip = ext!.address;
  t.notOk(isLoopbackAddress(ip));
  const open = await startApp(ip, []);
  t.teardown(() => open.app.close());
  const refused = await fetch(`${open.base}/v1/recordings`);
  t.equal(refused.status, 403);
  const body = await refused.json();
  t.equal(body.error, 'forbidden');
  t.match(body.message, /API_KEYS/);
  t.match(body.message, new RegExp(`request came from ${ip.replace(/\./g, '\\.')}`), 'the server saw the non-loopback peer');
  await expectError(t, await fetch(`${open.base}/v1/recordings/${recId(1)}/audio`), 403, 'forbidden');
  await expectError(t, await fetch(`${open.base}/v1/nope`), 403, 'forbidden');
  t.equal((await fetch(`${open.base}/healthz`)).status, 200, '/healthz stays open');

  // the same remote peer gets in with a key once keys are configured
  const keyed = await startApp(ip, ['remote-key']);
  t.teardown(() => keyed.app.close());
  t.equal((await fetch(`${keyed.base}/v1/recordings`, { headers: { authorization: 'Bearer remote-key' } })).status, 200);
  t.equal((await fetch(`${keyed.base}/v1/recordings`)).status, 401);
});
