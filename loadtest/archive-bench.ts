// npm run bench:archive [-- --minutes 10 --calls 300 --call-minutes 5 --keepup opus,flac,mp3 --keep-wav true]
//
// Archive figures (BENCHMARKS.md):
// 1. For each ARCHIVE_FORMAT, on one recording of `--minutes` of stereo speech (a flite
//    conversation quantised to mu-law, loadtest/conversation.ts): bytes per hour against mu-law
//    WAV, and CPU seconds per hour of audio for the encode alone and for the whole job as the
//    pool runs it (makeArchive: ffmpeg encode, verification, sha256) with the WAV kept (the
//    default: packets check for Opus) and with the WAV removed (full decode). CPU is this
//    process's plus its reaped children's (ffmpeg, ffprobe: /proc/self/stat cutime + cstime),
//    so a busy shared machine inflates it far less than wall time.
// 2. Keep-up: `--calls` recordings of `--call-minutes` ending at once (300 concurrent calls of
//    5 minutes), seeded with their durable jobs (loadtest/archive-backlog.ts); a real gateway
//    (its own `node` process) with ARCHIVE_CONCURRENCY=1 starts on the folder; the time until
//    gateway_archive_recordings_total reaches --calls is the drain time. It keeps up when that is
//    within the calls' length (the next 300 calls end 5 minutes later). Also: how long the pool's
//    ffmpeg processes waited for a CPU (/proc/<pid>/schedstat): on a shared machine the drain less
//    that wait is what a CPU of the pool's own would have taken.
import { once } from 'node:events';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { encodeWavFile } from '../recorder/archive/ffmpeg.js';
import { makeArchive, type ArchiveVerify } from '../recorder/archive/make-archive.js';
import { ARCHIVE_FORMATS, formatSpec, isArchiveFormat, type ArchiveFormat } from '../recorder/archive/formats.js';
import { seedBacklog, spawnGateway } from './archive-backlog.js';
import { conversationWav } from './conversation.js';
import { freePort } from './free-port.js';

const CLK_TCK = 100; // Linux USER_HZ

/** utime, stime, cutime, cstime of `pid` in seconds (the last two: reaped children). */
async function procCpuS(pid: number | 'self'): Promise<{ own: number; kids: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // after "pid (comm) ", field 3 is f[0]: utime 14, stime 15, cutime 16, cstime 17
  return { own: (Number(f[11]) + Number(f[12])) / CLK_TCK, kids: (Number(f[13]) + Number(f[14])) / CLK_TCK };
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return (i > 0 ? process.argv[i + 1] : undefined) ?? dflt;
}

async function cpuOf(fn: () => Promise<unknown>): Promise<{ own: number; kids: number; wall: number }> {
  const a = await procCpuS('self');
  const w = performance.now();
  await fn();
  const wall = (performance.now() - w) / 1000;
  const b = await procCpuS('self');
  return { own: b.own - a.own, kids: b.kids - a.kids, wall };
}

async function perFormat(dir: string, minutes: number): Promise<void> {
  const wav = await conversationWav(minutes * 60);
  const wavPath = path.join(dir, 'call.wav');
  await writeFile(wavPath, wav);
  const audioH = minutes / 60;
  const perH = (s: number) => (s / audioH).toFixed(1);
  console.log(`# per format: ${minutes} min of stereo speech, mu-law WAV ${Math.round(wav.length / audioH)} bytes per hour`);
  console.log('| format | bytes per audio hour | WAV / archive | CPU s per audio hour: encode only | job, WAV kept (ffmpeg + node) | job, WAV removed (ffmpeg + node) |');
  console.log('|---|---|---|---|---|---|');
  for (const format of ARCHIVE_FORMATS) {
    const out = path.join(dir, `call.${formatSpec(format).ext}`);
    const enc = await cpuOf(() => encodeWavFile(wavPath, 2, format, out));
    const jobs: Record<ArchiveVerify, { own: number; kids: number; wall: number }> = {} as never;
    let bytes = 0;
    for (const verify of ['packets', 'decode'] as const) {
      jobs[verify] = await cpuOf(async () => { bytes = (await makeArchive(wavPath, format, out, { verify })).bytes; });
    }
    const cell = (c: { own: number; kids: number }) => `${perH(c.own + c.kids)} (${perH(c.kids)} + ${perH(c.own)})`;
    console.log(`| ${format} | ${Math.round(bytes / audioH)} | ${(wav.length / bytes).toFixed(1)} | ${perH(enc.own + enc.kids)} | ${cell(jobs.packets)} | ${cell(jobs.decode)} |`);
  }
}


async function metrics(port: number): Promise<Map<string, number> | null> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const m = new Map<string, number>();
    for (const line of text.split('\n')) {
      const hit = /^(gateway_archive_\w+) (\S+)$/.exec(line);
      if (hit) m.set(hit[1]!, Number(hit[2])); // both groups are mandatory in the pattern
    }
    return m;
  } catch {
    return null; // not listening yet
  }
}

/**
 * Run and run-queue wait time of the gateway's child processes (the pool's ffmpeg), from
 * /proc/<child>/schedstat, sampled every 50 ms (each child's last sample counts: at most ~50 ms of
 * an exiting job is missed). `wait` is time ffmpeg was ready to run but other processes had the
 * CPU: on this shared machine, what the drain lost to them.
 */
function watchChildren(pid: number): { stop(): { runS: number; waitS: number; children: number } } {
  const seen = new Map<number, { run: number; wait: number }>();
  const timer = setInterval(() => {
    void (async () => {
      let kids: string;
      try {
        kids = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8');
      } catch {
        return;
      }
      for (const c of kids.trim().split(' ').filter((k) => k !== '')) {
        try {
          const [run, wait] = (await readFile(`/proc/${c}/schedstat`, 'utf8')).split(' ').map(Number) as [number, number];
          seen.set(Number(c), { run, wait });
        } catch {
          // exited meanwhile
        }
      }
    })();
  }, 50);
  return {
    stop() {
      clearInterval(timer);
      let run = 0;
      let wait = 0;
      for (const v of seen.values()) {
        run += v.run;
        wait += v.wait;
      }
      return { runS: run / 1e9, waitS: wait / 1e9, children: seen.size };
    },
  };
}

async function keepUp(format: ArchiveFormat, calls: number, callMinutes: number, keepWav: boolean): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'archive-keepup-'));
  try {
    const seconds = callMinutes * 60;
    await seedBacklog(dir, { calls, wav: await conversationWav(seconds), seconds, nodeId: 'bench', format });
    const port = await freePort();
    const t0 = performance.now();
    const gw = spawnGateway({
      ...process.env, PORT: String(port), HOST: '127.0.0.1', RECORDINGS_DIR: dir, NODE_ID: 'bench', LOG_LEVEL: 'warn',
      ARCHIVE_FORMAT: format, ARCHIVE_CONCURRENCY: '1', ARCHIVE_KEEP_WAV: String(keepWav),
    });
    const exited = once(gw, 'exit');
    let listening = 0;
    let archived = 0;
    let drained = 0;
    let m: Map<string, number> | null = null;
    let cpu = { own: 0, kids: 0 };
    let cpu0 = { own: 0, kids: 0 }; // the gateway's own start-up (tsx compiling) is not archiving
    const sched = watchChildren(gw.pid!);
    let waited = { runS: 0, waitS: 0, children: 0 };
    try {
      for (;;) {
        await new Promise((r) => setTimeout(r, 5000)); // each scrape costs the gateway CPU: Prometheus-like spacing
        if (gw.exitCode !== null) throw new Error(`the gateway exited (${gw.exitCode})`);
        m = await metrics(port);
        if (m === null) continue;
        if (listening === 0) {
          listening = performance.now();
          cpu0 = await procCpuS(gw.pid!);
        }
        if ((m.get('gateway_archive_failures_total') ?? 0) > 0) throw new Error('an archive failed');
        archived = m.get('gateway_archive_recordings_total') ?? 0;
        // queue empty short of `calls`: jobs were dropped (a gateway before the catalog-import
        // wait, archiver.ts untilIndexed): stop there and say so rather than wait forever
        if (archived >= calls || m.get('gateway_archive_queue_length') === 0) {
          drained = performance.now();
          break;
        }
      }
      const end = await procCpuS(gw.pid!);
      cpu = { own: end.own - cpu0.own, kids: end.kids - cpu0.kids };
    } finally {
      waited = sched.stop();
      gw.kill('SIGTERM');
      await exited;
    }
    const drainS = (drained - listening) / 1000;
    const audioH = (archived * seconds) / 3600;
    const cpuS = cpu.own + cpu.kids;
    console.log(`| ${format} | ${calls} x ${callMinutes} min (${audioH.toFixed(1)} audio h)${archived < calls ? ` **only ${archived} archived, ${calls - archived} jobs dropped**` : ''}, WAV ${keepWav ? 'kept' : 'removed'} | ${((listening - t0) / 1000).toFixed(1)} | ${drainS.toFixed(0)} | ${(drainS / audioH).toFixed(1)} | ${cpuS.toFixed(0)} (${cpu.kids.toFixed(0)} + ${cpu.own.toFixed(0)}) | ${(cpuS / audioH).toFixed(1)} | ${drainS <= seconds ? 'yes' : 'no'} (${((100 * drainS) / seconds).toFixed(0)} % of ${seconds} s) | ${waited.waitS.toFixed(0)} s (${waited.children} ffmpeg, ${waited.runS.toFixed(0)} s on a CPU) | ${(drainS - waited.waitS).toFixed(0)} |`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const minutes = Number(arg('minutes', '10'));
  const calls = Number(arg('calls', '300'));
  const callMinutes = Number(arg('call-minutes', '5'));
  const keepWav = arg('keep-wav', 'true') !== 'false';
  const formats = arg('keepup', ARCHIVE_FORMATS.join(',')).split(',').filter((f) => f !== '');
  if (!(minutes >= 0) || !(calls > 0) || !(callMinutes > 0)) throw new Error('--minutes, --calls and --call-minutes must be positive numbers');
  for (const f of formats) if (!isArchiveFormat(f)) throw new Error(`--keepup: unknown format ${f}`);
  if (minutes > 0) {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'archive-bench-'));
    try {
      await perFormat(dir, minutes);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  if (formats.length === 0) return;
  console.log(`\n# keep-up: ${calls} calls of ${callMinutes} min ending together, one gateway, ARCHIVE_CONCURRENCY=1`);
  console.log('| format | backlog | gateway start s | drain s (wall) | wall s per audio h | CPU s (ffmpeg + node) | CPU s per audio h | drained before the next calls end | ffmpeg waited for a CPU | drain less that wait s |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const f of formats) await keepUp(f as ArchiveFormat, calls, callMinutes, keepWav);
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
