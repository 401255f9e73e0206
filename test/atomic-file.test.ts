// fsyncDir coalesces: callers that arrive while a directory's fsync runs share the single next
// one (it starts after their renames), so a burst of publications into one folder costs two
// syncs; each caller still gets an fsync that began after its call, or that fsync's error.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fsyncDir, writeFileAtomic } from '../recorder/atomic-file.js';
import { readFile } from 'node:fs/promises';

t.test('a burst of fsyncDir calls on one directory shares the sync queued behind the running one', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fsyncdir-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const first = fsyncDir(dir);
  const burst = Array.from({ length: 20 }, () => fsyncDir(dir));
  t.not(burst[0], first, 'a call during a running sync does not join it (its rename may have come after that sync began)');
  t.ok(burst.every((p) => p === burst[0]), 'every later caller shares the one queued sync');
  await Promise.all([first, ...burst]);
  const other = mkdtempSync(path.join(tmpdir(), 'fsyncdir-'));
  t.teardown(() => rmSync(other, { recursive: true, force: true }));
  t.not(fsyncDir(dir), fsyncDir(other), 'directories do not share');
  await fsyncDir(dir);
  // a burst of atomic writes into one folder: every file is complete
  await Promise.all(Array.from({ length: 30 }, (_, i) => writeFileAtomic(path.join(dir, `f${i}.json`), JSON.stringify({ i }))));
  for (let i = 0; i < 30; i++) t.same(JSON.parse(await readFile(path.join(dir, `f${i}.json`), 'utf8')), { i });
});

t.test('a failed directory sync rejects its callers and the next call syncs again', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fsyncdir-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const missing = path.join(dir, 'gone');
  const a = fsyncDir(missing);
  const b = fsyncDir(missing);
  await t.rejects(a, { code: 'ENOENT' }, 'the running sync fails');
  await t.rejects(b, { code: 'ENOENT' }, 'the queued one fails too (the folder is still missing)');
  await t.resolves(fsyncDir(dir), 'a later call on an existing folder syncs');
});
