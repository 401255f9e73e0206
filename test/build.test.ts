// What `npm start` and the Dockerfile run: gateway/, recorder/ and codecs/ compiled by tsc to
// dist/. The build is `npm run build` (tsc -b: about a second when dist/ is current, as after
// `npm ci`, whose prepare builds it); the compiled entry records a call, and everything it
// imports is a production dependency (the runtime image installs no others).
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { runStream } from '../loadtest/stream-runner.js';
import { trackAudio } from '../loadtest/audio-fixtures.js';
import { waitForRecordings, fetchAudio, decodeWav } from './fixtures/harness.js';
import { COMPILED_MAIN, startProcess, tempDir } from './fixtures/gateway-process.js';
import { cloudEvent, startKinesalite, TEST_CREDENTIALS } from './fixtures/kinesis.js';
import { until } from './fixtures/calls.js';
import { randomSid } from '../loadtest/sids.js';

// a rebuild after an edit is a full tsc run: tens of seconds on a busy machine
t.setTimeout(180_000);

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

interface PackageJson {
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
}
const pkg = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as PackageJson;

t.before(() => run('npm', ['run', 'build', '--silent'], { cwd: root }));

t.test('npm scripts: start runs the compiled entry, after a build; npm ci builds', async (t) => {
  t.match(pkg.scripts.start, /^node (--enable-source-maps )?dist\/gateway\/main\.js$/, 'node directly on dist/, no tsx');
  t.match(pkg.scripts.prestart, /npm run build/, 'npm start builds first (and stops when tsc fails)');
  t.match(pkg.scripts.prepare, /npm run build/, 'npm ci builds (prepare)');
  t.match(pkg.scripts.build, /^tsc -b tsconfig\.build\.json$/);
  const build = JSON.parse((await readFile(path.join(root, 'tsconfig.build.json'), 'utf8')).replace(/^\s*\/\/.*$/gm, '')) as {
    compilerOptions: Record<string, unknown>; include: string[];
  };
  t.equal(build.compilerOptions.noEmitOnError, true, 'a failed type check leaves no half-built dist/');
  t.same(build.include.sort(), ['codecs', 'gateway', 'recorder'], 'tests and load tools are not part of the build');
  for (const dev of ['tsx', 'wavefile', 'typescript']) {
    t.notOk(dev in pkg.dependencies, `${dev} is not a production dependency`);
    t.ok(dev in pkg.devDependencies, `${dev} is a dev dependency`);
  }
});

t.test('the compiled entry imports only node built-ins and production dependencies', async (t) => {
  const builtins = new Set(builtinModules);
  const seen = new Set<string>();
  const bare = new Map<string, string>(); // package -> first file importing it
  // the import graph from main.js and from the Kinesis worker thread's module (started by URL,
  // not imported): what loads at run time, not whatever else sits in dist/
  const queue = [COMPILED_MAIN, path.join(path.dirname(COMPILED_MAIN), 'kinesis/kinesis-worker.js')];
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    const js = await readFile(file, 'utf8');
    // static imports and re-exports start a line in tsc's output; dynamic ones are import('…')
    for (const m of js.matchAll(/^(?:import|export)\b[^'";]*?\bfrom\s*(['"])([^'"]+)\1|^import\s*(['"])([^'"]+)\3|\bimport\(\s*(['"])([^'"]+)\5\s*\)/gm)) {
      const spec = (m[2] ?? m[4] ?? m[6])!; // one of the three alternatives matched
      if (spec.startsWith('.')) queue.push(path.resolve(path.dirname(file), spec));
      else if (!spec.startsWith('node:') && !builtins.has(spec)) {
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
        if (!bare.has(name)) bare.set(name, path.relative(root, file));
      }
    }
  }
  t.ok(seen.size > 50, `followed the graph (${seen.size} files)`);
  t.ok(bare.has('fastify') && bare.has('pino'), 'found the packages it uses');
  for (const [name, file] of bare) t.ok(name in pkg.dependencies, `${name} (imported by ${file}) is a production dependency`);
});

t.test('node dist/gateway/main.js records a call bit-exact and drains on SIGTERM', async (t) => {
  const cwd = await tempDir(t, 'gw-dist-');
  const gw = await startProcess(t, cwd, { RECORDINGS_DIR: cwd }, { compiled: true });
  t.equal((await fetch(`${gw.http}/readyz`)).status, 200);
  const res = await runStream({ url: gw.ws, tracks: ['inbound'], seed: 9, frames: 50, realtime: false });
  const [rec] = await waitForRecordings(gw.http, res.callSid, 1);
  const d = decodeWav(await fetchAudio(gw.http, rec.recordingId));
  t.ok(Buffer.from(d.channel[0]!).equals(trackAudio(9, 'inbound', 50)), 'the compiled code recorded the audio bit-exact');
  gw.child.kill('SIGTERM');
  const exit = await gw.exited;
  t.equal(exit.code, 0, 'exits 0 after SIGTERM');
  t.equal(exit.stderr, '', 'nothing on stderr');
});

t.test('the compiled gateway reads Kinesis in its child process (dist/gateway/kinesis/kinesis-worker.js)', async (t) => {
  const k = await startKinesalite(t);
  await k.createStream('dist-events', 1);
  const cwd = await tempDir(t, 'gw-dist-kinesis-');
  const account = randomSid('AC');
  const gw = await startProcess(t, cwd, {
    RECORDINGS_DIR: cwd, TWILIO_ACCOUNT_SID: account, KINESIS_STREAM: 'dist-events', KINESIS_REGION: 'us-east-1',
    KINESIS_ENDPOINT: k.endpoint, KINESIS_START: 'TRIM_HORIZON', ...TEST_CREDENTIALS,
  }, { compiled: true });
  const callSid = randomSid('CA');
  await k.put('dist-events', cloudEvent({ eventType: 'reservation.accepted', accountSid: account, callSid, employeeId: 'E-dist' }));
  await until(async () => /gateway_kinesis_records_total\{account="AC[0-9a-f]+",result="applied"\} 1\b/.test(await (await fetch(`${gw.http}/metrics`)).text()),
    'the event applied by the compiled build', 30_000);
  await runStream({ url: gw.ws, accountSid: account, tracks: ['inbound'], seed: 3, frames: 10, realtime: false, callSid });
  const [rec] = await waitForRecordings(gw.http, callSid, 1);
  t.equal(rec.employeeId, 'E-dist', 'attributed from the stream');
  gw.child.kill('SIGTERM');
  t.equal((await gw.exited).code, 0, 'the reader stops with the node (SIGTERM, exit 0)');
});
