// docker-compose.yml must validate (no Docker engine here: `docker-compose config` checks it).
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

t.test('docker-compose.yml validates and runs node directly', async (t) => {
  const { stdout } = await promisify(execFile)('docker-compose', ['config'], { cwd: root });
  t.match(stdout, /gateway/);
  const { readFile } = await import('node:fs/promises');
  const dockerfile = await readFile(new URL('../Dockerfile', import.meta.url), 'utf8');
  t.match(dockerfile, /CMD \["node", "--import", "tsx", "gateway\/main.ts"\]/, 'SIGTERM reaches node: no npm in between');
});
