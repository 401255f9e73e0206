// Publishing a finished segment when the process is out of file descriptors (EMFILE): it waits
// for one to free up instead of losing the segment. A real process under `ulimit -n 64` takes
// every descriptor itself (test/fixtures/publish-under-emfile.ts), then releases them.
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { NO_CHILD_COVERAGE, tempDir } from './fixtures/gateway-process.js';
import { decodeWav } from './fixtures/harness.js';
import { retryOnFdShortage, isFdShortage } from '../recorder/fd-retry.js';

const run = promisify(execFile);
const SCRIPT = fileURLToPath(new URL('./fixtures/publish-under-emfile.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

t.test('a segment and its sidecar are published once descriptors free up (EMFILE is waited out)', async (t) => {
  const dir = await tempDir(t, 'gw-emfile-');
  const { stdout } = await run('/bin/sh', ['-c', 'ulimit -n 64 && exec "$0" --import "$1" "$2" "$3" 400', process.execPath, TSX, SCRIPT, dir], {
    env: { PATH: process.env.PATH ?? '', ...NO_CHILD_COVERAGE },
  }).catch((err: { stdout?: string; stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr }));
  const out = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
    error?: string; exhausted?: string[]; result?: { sha256: string; writeError: string | null }; audio?: string; sidecar?: string;
  };
  t.equal(out.error, undefined, 'no error');
  t.same(out.exhausted, ['EMFILE', 'EMFILE'], 'the process really ran out of descriptors both times');
  const wav = await readFile(out.audio as string);
  t.equal(createHash('sha256').update(wav).digest('hex'), out.result?.sha256, 'published file matches its hash');
  const samples = decodeWav(wav).channel[0]!;
  t.equal(samples.length, 8000);
  t.ok(samples.every((x, i) => x === ((i * 7) & 0xff)), 'audio bit-exact');
  t.same(JSON.parse(await readFile(out.sidecar as string, 'utf8')), { sha256: out.result?.sha256 }, 'sidecar written');
});

t.test('other errors are not retried, and a shortage gives up at the deadline', async (t) => {
  let calls = 0;
  await t.rejects(retryOnFdShortage(async () => { calls++; throw Object.assign(new Error('nope'), { code: 'ENOENT' }); }), { code: 'ENOENT' });
  t.equal(calls, 1);
  calls = 0;
  await t.rejects(retryOnFdShortage(async () => { calls++; throw Object.assign(new Error('full'), { code: 'EMFILE' }); }, { baseDelayMs: 5, deadlineMs: 60 }), { code: 'EMFILE' });
  t.ok(calls >= 2, `retried ${calls} times before giving up`);
  t.ok(isFdShortage({ code: 'ENFILE' }) && isFdShortage({ code: 'EAGAIN' }) && !isFdShortage(null));
});
