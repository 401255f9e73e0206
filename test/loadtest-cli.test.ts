// `npm run loadtest` as an SRE runs it: a child process against a real gateway, real signed
// streams at real pace; exit codes, the JSON report and the self-contained HTML report.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { startTestGateway } from './fixtures/harness.js';
import { NO_CHILD_COVERAGE } from './fixtures/gateway-process.js';
import { randomSid } from '../loadtest/sids.js';
import type { LoadTestReport } from '../loadtest/report.js';

const CLI = fileURLToPath(new URL('../loadtest/cli.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', TSX, CLI, ...args], { timeout: 120_000, env: { ...process.env, ...NO_CHILD_COVERAGE } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

async function reportOf(t: { teardown(fn: () => unknown): void }): Promise<{ dir: string; read: () => Promise<{ json: LoadTestReport; html: string }> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lt-report-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return {
    dir,
    read: async () => {
      const files = await readdir(dir);
      const json = files.find((f) => f.endsWith('.json'))!;
      const html = files.find((f) => f.endsWith('.html'))!;
      return { json: JSON.parse(await readFile(path.join(dir, json), 'utf8')) as LoadTestReport, html: await readFile(path.join(dir, html), 'utf8') };
    },
  };
}

t.test('--help explains every option; a bad option is exit 2', async (t) => {
  const help = await runCli(['--help']);
  t.equal(help.code, 0);
  const src = await readFile(fileURLToPath(new URL('../loadtest/cli-options.ts', import.meta.url)), 'utf8');
  const declared = [...src.matchAll(/^\s+'?([a-z-]+)'?: \{ type: '(?:string|boolean)'/gm)].map((m) => m[1]);
  t.ok(declared.length >= 20, `${declared.length} options declared`);
  for (const name of declared) t.match(help.stdout, new RegExp(`--${name}\\b`), `--${name} is explained`);
  const bad = await runCli(['--streams', 'many']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--streams "many"/);
});

t.test('a signed run against a real gateway meets its SLOs: exit 0, JSON and HTML with charts', async (t) => {
  const account = randomSid('AC');
  const token = 'loadtest-secret-token-0123456789';
  const g = await startTestGateway(t, { TWILIO_ACCOUNT_SID: account, TWILIO_AUTH_TOKEN: token });
  const rep = await reportOf(t);
  const run = await runCli([
    '--url', g.wsUrl, '--streams', '4', '--ramp', '0.5', '--duration', '2.5', '--tracks', 'both',
    '--auth-token', token, '--account-sid', account, '--param', 'ctiSessionId=lt-{i}', '--hangup-fraction', '0.25',
    '--scrape-interval', '0.5', '--settle', '10', '--report', rep.dir,
    '--max-lost-frames', '0', '--max-connect-failures', '0', '--max-lag-p99-ms', '1000',
  ]);
  t.equal(run.code, 0, run.stderr);
  t.match(run.stdout, /streams up\s+4/, 'progress lines');
  t.match(run.stdout, /frames lost\s+0/, 'table');
  t.match(run.stdout, /verdict: PASS/);
  const { json, html } = await rep.read();
  t.equal(json.verdict, 'pass');
  t.equal(json.streams.connected, 4);
  t.equal(json.streams.hungUp, 1, 'one stream hung up without stop');
  t.ok(json.frames.sent > 4 * 2 * 100, `frames sent ${json.frames.sent}`);
  t.equal(json.frames.recorded, json.frames.sent, 'every frame sent was recorded');
  t.equal(json.frames.lost, 0);
  t.ok(json.series.length >= 2 && json.scrapes.length >= 3, 'series over time');
  t.ok(json.gateway.eventLoopP99MsWorst! > 0, 'event-loop delay scraped');
  t.ok(json.gateway.diskLagP99Ms! > 0, `frame-to-disk lag scraped: ${json.gateway.diskLagP99Ms} ms`);
  t.same(json.slos.map((s) => [s.name, s.ok]), [['lost frames', true], ['connect failures', true], ['event-loop delay p99 (ms)', true]]);
  for (const id of ['streams', 'messages', 'eventloop', 'disklag']) {
    t.match(html, new RegExp(`<svg id="chart-${id}"[^>]*>[\\s\\S]*?<polyline [^>]*points="[0-9., ]+"`), `chart ${id} has a line`);
  }
  t.notMatch(html, /<script|src=|href=|@import|url\(/, 'self-contained: no scripts or external assets');
});

t.test('missed SLOs give exit 1: refused upgrades, event-loop limit', async (t) => {
  const g = await startTestGateway(t, { TWILIO_ACCOUNT_SID: randomSid('AC'), TWILIO_AUTH_TOKEN: 'the-real-token-0123456789' });
  const rep = await reportOf(t);
  const run = await runCli([
    '--url', g.wsUrl, '--streams', '2', '--ramp', '0.2', '--duration', '1', '--auth-token', 'a-wrong-token-0123456789',
    '--scrape-interval', '0.5', '--settle', '0', '--report', rep.dir, '--max-connect-failures', '0', '--max-lag-p99-ms', '0',
  ]);
  t.equal(run.code, 1, 'exit 1');
  t.match(run.stdout, /verdict: MISS/);
  const { json, html } = await rep.read();
  t.equal(json.streams.connectFailures, 2);
  t.match(json.streams.errorSamples[0], /403/);
  t.same(json.slos.map((s) => [s.name, s.ok]), [['connect failures', false], ['event-loop delay p99 (ms)', false]]);
  t.match(html, /MISS/);
});
