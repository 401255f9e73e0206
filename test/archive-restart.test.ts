// The archive queue is durable: a real gateway process is SIGKILLed while it is archiving
// (recordings done, one in ffmpeg, more waiting) and restarted over the same RECORDINGS_DIR;
// the restart finishes every job, each archive decodes to its WAV's channels and duration, and
// nothing of the killed attempt (temporaries, jobs) is left.
import t from 'tap';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { parseWavHeader } from '../codecs/wav.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { startProcess, tempDir } from './fixtures/gateway-process.js';
import { globSidecars } from './fixtures/disk.js';
import { until } from './fixtures/calls.js';
import { ffmpegDecode, ffprobe, toneCall } from './fixtures/archive.js';

t.setTimeout(300_000);
const CALLS = 4;
const FRAMES = 4500; // 90 s each: long enough that the kill lands while ffmpeg works

const sidecars = async (dir: string) => Promise.all((await globSidecars(dir)).map(async (f) => ({ file: f, s: JSON.parse(await readFile(f, 'utf8')) as RecordingSidecar })));
const tempsIn = async (dir: string) => (await Promise.all((await globSidecars(dir)).map(async (f) => (await readdir(path.dirname(f))).filter((n) => n.endsWith('.archive-tmp'))))).flat();

t.test('SIGKILL in the middle of archiving: the restart finishes the queue', async (t) => {
  const cwd = await tempDir(t, 'gw-archive-restart-');
  const dir = path.join(cwd, 'rec');
  const env = { RECORDINGS_DIR: dir, NODE_ID: 'archive-node', ARCHIVE_FORMAT: 'opus' };
  const queueDir = path.join(dir, '.archive-queue', 'archive-node');
  const first = await startProcess(t, cwd, env);
  for (let i = 0; i < CALLS; i++) await toneCall(first.ws, FRAMES);
  await until(async () => (await globSidecars(dir)).length === CALLS, 'every call published', 60_000);

  // kill once at least one archive is done and others are still queued, with ffmpeg at work
  let state = { done: 0, queued: 0, temps: 0 };
  await until(async () => {
    const all = await sidecars(dir);
    state = {
      done: all.filter((x) => x.s.archive).length,
      queued: (await readdir(queueDir)).filter((n) => n.endsWith('.json')).length,
      temps: (await tempsIn(dir)).length,
    };
    return state.done >= 1 && state.queued >= 2 && state.temps >= 1;
  }, 'archiving in progress', 120_000);
  first.child.kill('SIGKILL');
  t.equal((await first.exited).signal, 'SIGKILL');
  t.ok(state.done < CALLS, `killed with ${state.done} archived, ${state.queued} queued, ${state.temps} being written`);

  const second = await startProcess(t, cwd, env);
  t.match(second.stdout(), /archive jobs left from the last run/);
  await until(async () => (await sidecars(dir)).every((x) => x.s.archive) && (await readdir(queueDir)).length === 0, 'the queue finished after the restart', 180_000);
  t.same(await tempsIn(dir), [], 'no temporary of the killed attempt is left');

  for (const { file, s } of await sidecars(dir)) {
    const archive = path.join(path.dirname(file), s.archive!.file);
    const bytes = await readFile(archive);
    t.equal(createHash('sha256').update(bytes).digest('hex'), s.archive!.sha256, `${s.recordingId}: sha256 of the archive`);
    t.equal((await stat(archive)).size, s.archive!.bytes);
    t.match(await ffprobe(archive), { codec: 'opus', channels: 2 });
    const wav = await readFile(path.join(path.dirname(file), s.audioFile));
    const info = parseWavHeader(wav);
    const [left] = await ffmpegDecode(archive);
    t.ok(Math.abs(left!.length - info.dataBytes / info.blockAlign) <= 160, `${s.recordingId}: ${left!.length} frames decoded vs ${info.dataBytes / info.blockAlign} in the WAV`);
  }
  const metrics = await (await fetch(`${second.http}/metrics`)).text();
  t.match(metrics, /^gateway_archive_queue_length 0$/m);
  t.match(metrics, /^gateway_archive_failures_total 0$/m);
  second.child.kill('SIGTERM');
  t.equal((await second.exited).code, 0);
});

t.test('an ARCHIVE_FORMAT the machine cannot make stops start-up with one line (exit 78)', async (t) => {
  const cwd = await tempDir(t, 'gw-archive-noffmpeg-');
  const { spawnGateway, exitOf } = await import('./fixtures/gateway-process.js');
  // a PATH without ffmpeg (node and tsx are found by absolute path)
  const child = spawnGateway(cwd, { RECORDINGS_DIR: path.join(cwd, 'rec'), ARCHIVE_FORMAT: 'opus', PATH: '/nonexistent', PORT: '0' });
  const { code, stderr } = await exitOf(child);
  t.equal(code, 78);
  t.equal(stderr.trim().split('\n').length, 1, 'one line');
  t.match(stderr, /^config error: ARCHIVE_FORMAT="opus" cannot be used: ffmpeg was not found on the PATH/);
});
