// docker-compose.yml must validate (no Docker engine here: `docker-compose config` checks it),
// describe the cluster (Redis, PostgreSQL for the catalog, three nodes on one volume, HAProxy on 8080) and haproxy.cfg must
// pass HAProxy's own check (the Debian haproxy binary).
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

t.test('docker-compose.yml validates', async (t) => {
  const { stdout } = await run('docker-compose', ['config'], { cwd: root });
  t.match(stdout, /gateway/);
});

// No Docker engine here: the Dockerfile is read, its runtime stage is simulated by hand (see
// the commit adding the multi-stage build) and test/build.test.ts runs what it runs.
t.test('Dockerfile: built in one stage, run compiled as a non-root user with production dependencies', async (t) => {
  const dockerfile = (await readFile(new URL('../Dockerfile', import.meta.url), 'utf8')).replace(/^\s*#.*$/gm, '');
  const stages = dockerfile.split(/^FROM /m).slice(1);
  t.equal(stages.length, 2, 'two stages');
  const [build, runtime] = stages;
  t.match(build, /^\S+ AS build\n/, 'the first is the build stage');
  t.match(build, /RUN npm ci\b(?!.*--omit)/, 'with dev dependencies');
  t.match(build, /RUN npm run build/, 'it compiles');
  t.match(runtime, /npm ci --omit=dev/, 'the runtime installs production dependencies only');
  t.match(runtime, /COPY --from=build \/app\/dist \.\/dist/, 'and the compiled code');
  t.notMatch(runtime, /COPY (gateway|recorder|codecs)\b/, 'not the sources');
  t.match(runtime, /\nUSER node\n/, 'runs as the unprivileged node user');
  t.match(runtime, /chown node:node \/recordings/, 'which owns the recordings volume');
  t.ok(runtime!.indexOf('USER node') < runtime!.indexOf('CMD'), 'USER comes before CMD');
  t.match(runtime, /CMD \["node", "--enable-source-maps", "dist\/gateway\/main.js"\]/, 'SIGTERM reaches node: no npm in between');
});

t.test('the cluster: Redis, PostgreSQL, three gateway nodes sharing recordings, HAProxy on 8080', async (t) => {
  const { stdout: services } = await run('docker-compose', ['config', '--services'], { cwd: root });
  t.same(services.trim().split('\n').sort(), ['gateway-1', 'gateway-2', 'gateway-3', 'haproxy', 'postgres', 'redis']);
  const { stdout } = await run('docker-compose', ['config'], { cwd: root });
  for (const n of [1, 2, 3]) {
    const block = stdout.split(/\n {2}(?=\S)/).find((b) => b.startsWith(`gateway-${n}:`)) ?? '';
    t.match(block, new RegExp(`NODE_ID: gateway-${n}\\n`), `gateway-${n} has its own NODE_ID`);
    t.match(block, /REDIS_URL: redis:\/\/redis:6379/, 'cluster mode');
    t.match(block, /DATABASE_URL: postgres:\/\/gateway:gateway@postgres:5432\/gateway/, 'the shared catalog in PostgreSQL');
    t.match(block, /postgres:\n\s+condition: service_healthy/, 'nodes start once PostgreSQL is healthy');
    t.match(block, /- recordings:\/recordings/, 'the shared recordings volume');
    t.notMatch(block, /ports:/, 'reached only through the balancer');
  }
  const db = stdout.split(/\n {2}(?=\S)/).find((b) => b.startsWith('postgres:')) ?? '';
  t.match(db, /image: postgres:15/);
  t.match(db, /pg_isready/, 'a health check the nodes wait for');
  t.match(db, /postgres-data:\/var\/lib\/postgresql\/data|source: postgres-data/, 'its data on a volume');
  const lb = stdout.split(/\n {2}(?=\S)/).find((b) => b.startsWith('haproxy:')) ?? '';
  t.match(lb, /published: 8080|8080:8080/, 'the balancer on port 8080');
  t.match(lb, /haproxy\.cfg/, 'configured by the haproxy.cfg of the repository');
});

t.test('haproxy.cfg passes haproxy -c and is WebSocket-aware with readiness checks', async (t) => {
  const cfg = await readFile(new URL('../haproxy.cfg', import.meta.url), 'utf8');
  // exit 0 = valid (the compose host names do not resolve here: init-addr none tolerates it)
  await run('haproxy', ['-c', '-f', fileURLToPath(new URL('../haproxy.cfg', import.meta.url))]);
  t.match(cfg, /http-check send meth GET uri \/readyz/, 'health checks on /readyz');
  t.match(cfg, /option forwardfor/, 'X-Forwarded-For');
  t.match(cfg, /X-Forwarded-Proto/, 'X-Forwarded-Proto');
  t.match(cfg, /timeout tunnel/, 'long-lived WebSockets');
  t.notMatch(cfg.replace(/#.*$/gm, ''), /shutdown-sessions/, 'a node marked down keeps its live streams');
  for (const n of [1, 2, 3]) t.match(cfg, new RegExp(`server gateway-${n} gateway-${n}:8080 check`));
});
