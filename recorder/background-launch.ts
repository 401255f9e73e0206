// How the gateway's background processes (the archive's ffmpeg, the Kinesis reader) are launched
// beside the media path: SCHED_IDLE when the kernel allows it, and off the CPUs the gateway is
// pinned to when it is pinned to some of the machine's CPUs only (a child inherits its parent's
// affinity). Probed once per process.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** How a background process is launched here (decided once, at the first use: see backgroundLaunch). */
export interface BackgroundLaunch {
  /** SCHED_IDLE can be had (`chrt -i 0` exists and the kernel allows it): the archive's ffmpeg jobs */
  schedIdle: boolean;
  /** the CPU list background processes are confined to (`taskset -c`), or null: the gateway's own affinity */
  cpus: string | null;
}

/** "0-2,5" -> [0, 1, 2, 5] (the kernel's list format: /proc/self/status, /sys/devices/system/cpu/online) */
export function parseCpuList(list: string): number[] {
  const out: number[] = [];
  for (const part of list.trim().split(',')) {
    if (part === '') continue;
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new Error(`not a CPU list: ${JSON.stringify(list)}`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    for (let c = a; c <= b; c++) out.push(c);
  }
  return out;
}

/**
 * The CPUs a background process may use given the gateway's affinity (`own`) and the machine's online CPUs:
 * the online CPUs the gateway is not pinned to, when it is pinned to some of them only and others
 * are left; otherwise null (inherit: unpinned, or nowhere else to go).
 */
export function cpusAwayFromPin(own: readonly number[], online: readonly number[]): string | null {
  const mine = new Set(own);
  const others = online.filter((c) => !mine.has(c));
  if (others.length === 0 || others.length === online.length) return null;
  return others.join(',');
}

function readList(file: string, field?: string): number[] | null {
  try {
    const text = readFileSync(file, 'utf8');
    if (field === undefined) return parseCpuList(text);
    const m = new RegExp(`^${field}:\\s*(\\S+)$`, 'm').exec(text);
    return m ? parseCpuList(m[1]!) : null; // the group is mandatory in the pattern
  } catch {
    return null; // not Linux, or not readable: leave the affinity alone
  }
}

/** true when `cmd args... true` runs and exits 0 here (the tool exists and the kernel allows it) */
function works(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, [...args, 'true'], { stdio: 'ignore', timeout: 5000 });
  return r.error === undefined && r.status === 0;
}

let launch: BackgroundLaunch | undefined;

/**
 * Decides once per process (synchronously, at start-up: two short probe processes) how background
 * processes (the archive's ffmpeg, the Kinesis reader) are launched: whether `chrt -i 0` works
 * (SCHED_IDLE needs no privilege on Linux, but a seccomp profile may refuse it) and which CPUs
 * `taskset` confines them to (see FfmpegPriority in archive/ffmpeg.ts).
 */
export function backgroundLaunch(): BackgroundLaunch {
  if (launch === undefined) {
    const own = readList('/proc/self/status', 'Cpus_allowed_list');
    const online = readList('/sys/devices/system/cpu/online');
    const away = own && online ? cpusAwayFromPin(own, online) : null;
    launch = {
      schedIdle: works('chrt', ['-i', '0']),
      // the kernel intersects the list with a cpuset cgroup's CPUs; refused (empty, no taskset): inherit
      cpus: away !== null && works('taskset', ['-c', away]) ? away : null,
    };
  }
  return launch;
}
