// The archive's ffmpeg stays out of the media path's way (ffmpeg.ts, FfmpegPriority): an archive
// job's ffmpeg runs under SCHED_IDLE at nice 19, a playback conversion at nice 10, and both leave
// the CPUs the gateway is pinned to when it is pinned to some of the machine's CPUs only (as
// perf-ratio pins it to CPU 0). Read from /proc/<pid>/stat and /proc/<pid>/status of the real
// ffmpeg processes, in this process (unpinned) and in a child started under `taskset -c 0`.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { cpusAwayFromPin, parseCpuList } from '../recorder/background-launch.js';
import { ffmpegScheds, SCHED_IDLE, SCHED_OTHER, type FfmpegScheds } from './fixtures/ffmpeg-sched.js';

const run = promisify(execFile);
/** the nice this test process runs at; the gateway (this process or its child) inherits it */
const BASE_NICE = os.getPriority();
const PROBE = fileURLToPath(new URL('./fixtures/ffmpeg-sched.ts', import.meta.url));

async function tmp(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'archive-priority-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('CPU lists: the kernel format, and the CPUs away from a pin', async (t) => {
  t.same(parseCpuList('0'), [0]);
  t.same(parseCpuList('0-3\n'), [0, 1, 2, 3], 'a range, with the newline of /sys/devices/system/cpu/online');
  t.same(parseCpuList('0-1,4,6-7'), [0, 1, 4, 6, 7], 'ranges and single CPUs');
  t.same(parseCpuList(''), [], 'empty');
  t.throws(() => parseCpuList('a'), /not a CPU list/, 'bad input: not a number');
  t.throws(() => parseCpuList('1-'), /not a CPU list/, 'bad input: an open range');
  t.throws(() => parseCpuList('0;1'), /not a CPU list/, 'bad input: another separator');

  t.equal(cpusAwayFromPin([0], [0, 1]), '1', 'pinned to CPU 0 of two (perf-ratio): the other one');
  t.equal(cpusAwayFromPin([1, 2], [0, 1, 2, 3]), '0,3', 'pinned to two of four: the other two');
  t.equal(cpusAwayFromPin([0, 1], [0, 1]), null, 'not pinned: inherit');
  t.equal(cpusAwayFromPin([0], [0]), null, 'one CPU: nowhere else to go, inherit');
  t.equal(cpusAwayFromPin([0, 1, 2, 3], [0, 1]), null, 'allowed more than is online: inherit');
});

function checkClasses(t: Test, got: FfmpegScheds, cpus: number[]): void {
  t.equal(got.archive.comm, 'ffmpeg', 'the launchers exec ffmpeg in the same process');
  t.equal(got.archive.nice, 19, 'archive encode: nice 19');
  t.equal(got.archive.policy, SCHED_IDLE, 'archive encode: SCHED_IDLE');
  t.same(parseCpuList(got.archive.cpus), cpus, `archive encode: CPUs ${cpus.join(',')}`);
  t.ok(got.archiveBytes > 0, 'the archive encode ran to the end');
  t.equal(got.playback.comm, 'ffmpeg');
  // relative to the nice this test runs at (CI may run the suite under `nice`): never above it
  t.equal(got.playback.nice, Math.max(10, BASE_NICE), 'playback decode: nice 10 (or the gateway\'s own, if lower)');
  t.equal(got.playback.policy, SCHED_OTHER, 'playback decode: the normal policy (a client waits for it)');
  t.same(parseCpuList(got.playback.cpus), cpus, `playback decode: CPUs ${cpus.join(',')}`);
  t.equal(got.self.nice, BASE_NICE, 'the gateway itself keeps its priority');
  t.equal(got.self.policy, SCHED_OTHER, 'and its policy');
}

t.test('unpinned: archive ffmpeg at SCHED_IDLE and nice 19, playback at nice 10, affinity inherited', async (t) => {
  const got = await ffmpegScheds(await tmp(t));
  t.same(got.launch, { schedIdle: true, cpus: null }, 'chrt -i 0 works here; nothing to move away from');
  checkClasses(t, got, parseCpuList(got.self.cpus));
});

t.test('gateway pinned to CPU 0 (taskset, as perf-ratio does): ffmpeg runs on the other CPUs', async (t) => {
  const online = parseCpuList(await readFile('/sys/devices/system/cpu/online', 'utf8'));
  const { stdout } = await run('taskset', ['-c', '0', process.execPath, '--import', 'tsx', PROBE, await tmp(t)], { cwd: path.dirname(path.dirname(PROBE)) });
  const got = JSON.parse(stdout) as FfmpegScheds;
  t.equal(got.self.cpus, '0', 'the child is pinned to CPU 0');
  // on a one-CPU machine there is nowhere else: ffmpeg stays where the gateway is
  const others = online.filter((c) => c !== 0);
  t.same(got.launch.cpus, others.length > 0 ? others.join(',') : null);
  checkClasses(t, got, others.length > 0 ? others : [0]);
});
