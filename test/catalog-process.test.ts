// The catalog as an operator meets it, with real processes: a node started on a RECORDINGS_DIR
// that already holds thousands of recordings listens at once and imports them in the background
// (/readyz and /metrics say how far; the log too), `npm run catalog:rebuild` rebuilds the catalog
// from the sidecars with a progress bar, and a restart notices sidecars added or removed by hand.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { startNode } from './fixtures/cluster-procs.js';
import { NO_CHILD_COVERAGE } from './fixtures/gateway-process.js';
import { syntheticSidecar, writeSyntheticRecordings, type SyntheticOptions } from '../loadtest/synthetic-recordings.js';
import { segmentPaths } from '../recorder/storage-layout.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const N = 4000;

const TEMPLATE: RecordingSidecar = {
  recordingId: 'MZ' + '0'.repeat(32) + '-0000', accountSid: 'AC' + 'a'.repeat(32), callSid: 'CA' + '0'.repeat(32),
  streamSid: 'MZ' + '0'.repeat(32), ctiSessionId: null, employeeId: null, segmentIndex: 0, tracks: ['inbound'], channels: 1,
  encoding: 'mulaw', sampleRate: 8000, startedAt: '2025-01-01T00:00:00.000Z', endedAt: '2025-01-01T00:00:01.000Z',
  durationMs: 1000, offsetMs: 0, framesReceived: 50, framesMissing: 0, framesDuplicate: 0, framesLate: 0, framesTooLate: 0,
  frames: { inbound: { received: 50, missing: 0, duplicate: 0, late: 0, tooLate: 0 } }, pausedIntervals: [], closeReason: 'stop',
  customParameters: {}, audioFile: 'x.wav', audioBytes: 52, sha256: 'ab'.repeat(32), nodeId: 'synthetic',
};

async function until<T>(what: string, fn: () => Promise<T | null | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
const total = async (http: string) => ((await (await fetch(`${http}/v1/recordings?count=true&limit=1`)).json()) as { total: number }).total;

t.test('a node on a full RECORDINGS_DIR listens at once, imports in the background; rebuild and reconcile', { timeout: 120_000 }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-catalog-proc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const synth: SyntheticOptions = { recordingsDir: dir, count: N, template: TEMPLATE, days: 28 };
  t.equal(await writeSyntheticRecordings(synth), N);

  const node = await startNode(t, { NODE_ID: 'solo', RECORDINGS_DIR: dir });
  const healthz = await fetch(`${node.http}/healthz`);
  t.equal(healthz.status, 200, '/healthz answers as soon as the node listens');
  const first = await fetch(`${node.http}/readyz`);
  if (first.status === 503) {
    t.match(((await first.json()) as { message: string }).message, /importing: the recording catalog is being filled .* of \d+\+? sidecars/);
  }
  await until('ready', async () => (await fetch(`${node.http}/readyz`)).status === 200);
  const m = await (await fetch(`${node.http}/metrics`)).text();
  t.equal(metric(m, 'gateway_catalog_import_found'), N);
  t.equal(metric(m, 'gateway_catalog_import_done'), N);
  t.equal(metric(m, 'gateway_catalog_import_complete'), 1);
  t.equal(metric(m, 'gateway_catalog_recordings'), N);
  t.equal(await total(node.http), N, 'every recording listed');
  const log = node.log();
  t.ok(log.indexOf('"msg":"gateway listening"') < log.indexOf('"msg":"catalog reconciled with RECORDINGS_DIR"'),
    'the node listened before the import finished');
  await node.kill('SIGTERM');

  // by hand, while the node is down: 10 sidecars removed, 5 recordings added
  for (let i = 0; i < 10; i++) {
    const s = syntheticSidecar(synth, i * 7);
    await unlink(segmentPaths(dir, s.accountSid, s.callSid, new Date(s.startedAt), s.recordingId).sidecar);
  }
  await writeSyntheticRecordings({ ...synth, count: 5, first: N });

  const rebuild = await run(process.execPath, ['--import', 'tsx', 'gateway/catalog-rebuild-cli.ts', '--readers', '2'], {
    cwd: root, env: { PATH: process.env.PATH ?? '', RECORDINGS_DIR: dir, ...NO_CHILD_COVERAGE },
  });
  const summary = JSON.parse(rebuild.stdout.trim()) as Record<string, number | string>;
  t.match(summary, { backend: 'sqlite', readers: 2, found: N - 10 + 5, imported: N - 10 + 5, removed: 10, bad: 0 });
  t.match(rebuild.stderr, /\[#{30}\] 100\.0% 3995\/3995 sidecars/, 'a progress bar that ends at 100 %');

  // the removed ones stay removed after a restart; one more added by hand is noticed by the reconcile at start
  await writeSyntheticRecordings({ ...synth, count: 1, first: N + 5 });
  const again = await startNode(t, { NODE_ID: 'solo', RECORDINGS_DIR: dir });
  const r = await fetch(`${again.http}/readyz`);
  const why = r.status === 200 ? '' : ((await r.json()) as { message: string }).message;
  t.notMatch(why, /importing/, 'a filled catalog does not hold readiness back (the reconcile runs behind)');
  await until('the hand-added recording listed', async () => (await total(again.http)) === N - 10 + 6);
  const gone = syntheticSidecar(synth, 7);
  t.equal((await fetch(`${again.http}/v1/recordings/${gone.recordingId}`)).status, 404);
  await again.kill('SIGTERM');

  const bad = await run(process.execPath, ['--import', 'tsx', 'gateway/catalog-rebuild-cli.ts'], {
    cwd: root, env: { PATH: process.env.PATH ?? '', RECORDINGS_DIR: dir, DATABASE_URL: 'mysql://x', ...NO_CHILD_COVERAGE },
  }).then(() => null, (e: { code: number; stderr: string }) => e);
  t.equal(bad?.code, 78, 'a bad setting stops the command like the node');
  t.match(bad?.stderr, /^config error: DATABASE_URL="mysql:\/\/x" is not valid/);
  const badReaders = await run(process.execPath, ['--import', 'tsx', 'gateway/catalog-rebuild-cli.ts', '--readers', '0'], {
    cwd: root, env: { PATH: process.env.PATH ?? '', RECORDINGS_DIR: dir, ...NO_CHILD_COVERAGE },
  }).then(() => null, (e: { code: number; stderr: string }) => e);
  t.equal(badReaders?.code, 78, '--readers 0 is refused');
  t.match(badReaders?.stderr, /--readers wants a whole number from 1 to 64, got "0"/);
});
