// A backlog of archive jobs as 300 calls ending together leave it: N published stereo mu-law
// recordings of a spoken conversation, each with its job in the durable archive queue, written
// the way the gateway writes them, so a gateway started on the folder archives them all.
//
//   seedBacklog(dir, ...)                        used by `npm run bench:archive` (keep-up)
//   node --import tsx loadtest/archive-backlog.ts start
//       seeds $RECORDINGS_DIR ($ARCHIVE_BACKLOG_CALLS calls, default 300, of 5 min) and runs the
//       gateway on it: the `npm start` of a stand-in project for perf-ratio.mjs, so the media
//       path is measured while the archive pool works through the backlog (BENCHMARKS.md).
//       With ARCHIVE_BACKLOG_REPORT=<file>: a line is appended there when the gateway exits, with
//       the number of archives made meanwhile (the pool was busy during the measurement).
//
// The WAVs are hard links of one file (same bytes, one disk copy). framesReceived is 0 in the
// seeded sidecars, so perf-ratio's frame count covers only the streams it sent.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { appendFile, link, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { sidecarPathOf } from '../recorder/storage-layout.js';
import { ARCHIVE_QUEUE_DIR } from '../recorder/archive/archive-queue.js';
import type { ArchiveFormat } from '../recorder/archive/formats.js';
import { conversationWav } from './conversation.js';

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

/** Writes `calls` recordings of `wav` (a stereo mu-law WAV) and their archive jobs into `dir`. */
export async function seedBacklog(dir: string, o: { calls: number; wav: Buffer; seconds: number; nodeId: string; format: ArchiveFormat }): Promise<void> {
  const src = await mkdtemp(path.join(os.tmpdir(), 'archive-backlog-src-'));
  try {
    const srcWav = path.join(src, 'call.wav');
    await writeFile(srcWav, o.wav);
    const sha256 = createHash('sha256').update(o.wav).digest('hex');
    const queue = path.join(dir, ARCHIVE_QUEUE_DIR, o.nodeId);
    await mkdir(queue, { recursive: true });
    const ended = new Date();
    const started = new Date(ended.getTime() - o.seconds * 1000);
    for (let i = 0; i < o.calls; i++) {
      const streamSid = `MZ${hex(16)}`;
      const recordingId = `${streamSid}-0000`;
      const s: RecordingSidecar = {
        recordingId, accountSid: `AC${'b'.repeat(32)}`, callSid: `CA${hex(16)}`, streamSid, ctiSessionId: null, employeeId: null,
        segmentIndex: 0, tracks: ['inbound', 'outbound'], channels: 2, encoding: 'mulaw', sampleRate: 8000,
        startedAt: started.toISOString(), endedAt: ended.toISOString(), durationMs: o.seconds * 1000, offsetMs: 0,
        framesReceived: 0, framesMissing: 0, framesDuplicate: 0, framesLate: 0, framesTooLate: 0, frames: {},
        pausedIntervals: [], closeReason: 'stop', customParameters: {},
        audioFile: `${recordingId}.wav`, audioBytes: o.wav.length, sha256, nodeId: o.nodeId,
      };
      const sidecarPath = sidecarPathOf(dir, s);
      await mkdir(path.dirname(sidecarPath), { recursive: true });
      await link(srcWav, path.join(path.dirname(sidecarPath), s.audioFile));
      await writeFile(sidecarPath, JSON.stringify(s));
      await writeFile(path.join(queue, `${recordingId}.json`), JSON.stringify({
        recordingId, format: o.format, sidecar: path.relative(dir, sidecarPath), enqueuedAt: ended.toISOString(),
      }));
    }
  } finally {
    await rm(src, { recursive: true, force: true });
  }
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The gateway (`node`, not `npm start`: signals must reach it) on `env`, output passed through. */
export function spawnGateway(env: NodeJS.ProcessEnv, stdio: 'inherit' | 'ignore' = 'inherit') {
  return spawn(process.execPath, ['--import', 'tsx', 'gateway/main.ts'], { cwd: ROOT, env, stdio });
}

async function startMode(): Promise<void> {
  const dir = process.env.RECORDINGS_DIR;
  if (!dir) throw new Error('RECORDINGS_DIR is not set');
  const seconds = 300;
  const format = (process.env.ARCHIVE_FORMAT && process.env.ARCHIVE_FORMAT !== 'none' ? process.env.ARCHIVE_FORMAT : 'opus') as ArchiveFormat;
  const nodeId = process.env.NODE_ID ?? 'bench';
  await seedBacklog(dir, { calls: Number(process.env.ARCHIVE_BACKLOG_CALLS ?? 300), wav: await conversationWav(seconds), seconds, nodeId, format });
  const started = Date.now();
  const gw = spawnGateway({ ...process.env, NODE_ID: nodeId });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => gw.kill(sig));
  gw.on('exit', (code) => {
    // proof that the pool worked during the measurement: archives made while the gateway ran
    const report = process.env.ARCHIVE_BACKLOG_REPORT;
    const done = report ? countArchives(dir) : Promise.resolve(0);
    const line = (n: number) => `${new Date().toISOString()} ARCHIVE_FORMAT=${process.env.ARCHIVE_FORMAT ?? 'none'}: ${n} archives made in ${((Date.now() - started) / 1000).toFixed(0)} s of gateway\n`;
    void done.then(async (n) => { if (report) await appendFile(report, line(n)); }).finally(() => process.exit(code ?? 1));
  });
}

/** archive files (not temporaries) under `dir` */
async function countArchives(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { recursive: true })) if (/\.(opus|flac|mp3)$/.test(e) && !path.basename(e).startsWith('.')) n++;
  return n;
}

if (process.argv[2] === 'start') {
  startMode().catch((err: Error) => {
    console.error(err.stack ?? err.message);
    process.exit(1);
  });
}
