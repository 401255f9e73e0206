// ffmpeg through prism-media's FFmpeg transform: our PCM goes into its stdin, its stdout comes
// out of the transform. Archives are written by ffmpeg to a (seekable) file rather than through
// the pipe, because MP3's gapless LAME tag and FLAC's STREAMINFO (sample count, MD5) are
// written at the end by seeking back; through a pipe MP3 would start with ~76 ms of encoder
// delay and FLAC would not know its length. The transform's readable side then carries
// ffmpeg's `-progress` lines. Playback conversions stream through the pipe both ways.
import prism from 'prism-media';
import { PassThrough, type Readable } from 'node:stream';
import { open } from 'node:fs/promises';
import os from 'node:os';
import { formatSpec, type ArchiveFormat } from './formats.js';
import { backgroundLaunch } from '../background-launch.js';

export class FfmpegUnavailableError extends Error {
  override name = 'FfmpegUnavailableError';
}

const RATE = '8000';
// One thread: 8 kHz audio needs no parallelism, and ffmpeg 5.1 otherwise starts a filter-graph
// thread per CPU for the (trivial) format conversion (three threads per encode here, one with it).
// -threads before the first input (its decoder) and after the last (the encoder): see runFfmpeg.
const ONE_THREAD = ['-filter_threads', '1', '-threads', '1'];
let found: { output: string } | null | undefined;

/**
 * How an ffmpeg process is scheduled beside the media path (the gateway's own thread):
 * - `idle`: archive jobs (encode, verify). Nobody waits for them; they must take only CPU time
 *   the gateway leaves: SCHED_IDLE (`chrt -i 0`: runs only when no normal task wants the CPU) and
 *   nice 19 (what is left where SCHED_IDLE cannot be had).
 * - `low`: playback conversions a client is waiting for: nice 10, normal policy.
 * Both are kept off the CPUs the gateway is pinned to when it is pinned to some of the machine's
 * CPUs only (perf-ratio pins it to CPU 0; an operator may pin it to a media core): a child
 * inherits its parent's affinity, and an encoder on the media core, even one that yields, still
 * evicts the gateway's caches and takes wake-ups on that core. Unpinned (the usual case) the
 * affinity is left alone.
 */
export type FfmpegPriority = 'idle' | 'low';
const NICE: Record<FfmpegPriority, number> = { idle: 19, low: 10 };

/**
 * prism-media spawns `getInfo().command` with the arguments it is given; the launchers (chrt,
 * taskset) exec ffmpeg in the same process, so the pid, the pipes and a kill stay ffmpeg's. The
 * command is swapped for the synchronous constructor only (prism reads it there and nowhere else).
 */
function spawnFfmpeg(args: string[], priority: FfmpegPriority): prism.FFmpeg {
  const how = backgroundLaunch();
  const prefix = [
    ...(priority === 'idle' && how.schedIdle ? ['chrt', '-i', '0'] : []),
    ...(how.cpus !== null ? ['taskset', '-c', how.cpus] : []),
  ];
  if (prefix.length === 0) return new prism.FFmpeg({ args });
  const info = prism.FFmpeg.getInfo();
  const ffmpeg = info.command;
  info.command = prefix[0]!; // prefix is not empty
  try {
    // every caller names its input (`-i`), so prism adds none (it looks for '-i' in the arguments)
    return new prism.FFmpeg({ args: [...prefix.slice(1), ffmpeg, ...args] });
  } finally {
    info.command = ffmpeg;
  }
}

/**
 * Finds ffmpeg once per process. prism-media runs `ffmpeg -h` synchronously (~0.1 s), so the
 * gateway calls this at start-up when an archive format is configured, never per frame.
 */
export function ffmpegInfo(): { output: string } {
  if (found === undefined) {
    try {
      found = { output: prism.FFmpeg.getInfo().output };
    } catch {
      found = null;
    }
  }
  if (found === null) throw new FfmpegUnavailableError('ffmpeg was not found on the PATH (Debian: apt-get install ffmpeg)');
  return found;
}

/** null when ffmpeg can encode `format`, else why not. */
export function cannotEncode(format: ArchiveFormat): string | null {
  let output: string;
  try {
    output = ffmpegInfo().output;
  } catch (err) {
    return (err as Error).message;
  }
  const needs = formatSpec(format).needs;
  return needs === null || output.includes(needs) ? null : `the ffmpeg on the PATH was built without ${needs}`;
}

export interface FfmpegRun {
  /** ffmpeg's process id (after the launchers' exec: the same process) */
  pid: number | undefined;
  /** ffmpeg's stdout */
  output: Readable;
  /** resolves when ffmpeg exited 0; rejects with the end of its error output otherwise */
  done: Promise<void>;
  /** stop it at once (a client went away, shutdown) */
  kill(): void;
}

/**
 * Run ffmpeg with `input` piped into its stdin (null: it reads a file named in `args`), scheduled
 * as `priority` says (FfmpegPriority).
 */
export function runFfmpeg(args: string[], input: Readable | null, priority: FfmpegPriority): FfmpegRun {
  ffmpegInfo();
  const ff = spawnFfmpeg(['-hide_banner', '-nostats', '-v', 'error', ...ONE_THREAD, ...(input ? [] : ['-nostdin']), ...args], priority);
  const proc = ff.process;
  // below the gateway's priority: encoding must never take CPU from live streams (nice is
  // inherited through the launchers' exec, so setting it on the pid now is in time)
  if (proc.pid !== undefined) {
    try {
      // never above the gateway's own (a gateway started at nice 15 keeps its ffmpeg at 15 or lower)
      os.setPriority(proc.pid, Math.max(NICE[priority], os.getPriority()));
    } catch {
      // not allowed here: runs at the default priority
    }
  }
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
  // EPIPE when ffmpeg exits before reading all of its input: the exit code says what happened
  ff.on('error', () => undefined);
  const output = new PassThrough();
  let exited = false;
  const kill = () => { if (!exited) proc.kill('SIGKILL'); };
  // a reader that goes away must not leave ffmpeg blocked on a full pipe
  output.on('close', () => { if (!output.readableEnded) kill(); });
  ff.pipe(output, { end: false });
  let inputError: Error | null = null;
  if (input) {
    input.on('error', (err) => { inputError = err; kill(); });
    input.pipe(ff);
  } else {
    ff.end();
  }
  const done = new Promise<void>((resolve, reject) => {
    proc.on('close', (code, signal) => {
      exited = true;
      input?.unpipe(ff);
      if (code === 0 && inputError === null) {
        output.end();
        resolve();
        return;
      }
      const why = stderr.trim().split('\n').slice(-3).join(' | ');
      const err = inputError ?? new Error(`ffmpeg ${signal ? `was killed (${signal})` : `exited with code ${code}`}${why ? `: ${why}` : ''}`);
      input?.destroy();
      output.destroy(err);
      reject(err);
    });
  });
  done.catch(() => undefined); // callers that only read `output` see the error there
  return { pid: proc.pid, output, done, kill };
}

/** `run.done`, killing ffmpeg when `signal` aborts. */
export async function untilDone(run: FfmpegRun, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) run.kill();
  const onAbort = () => run.kill();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await run.done;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

const pcmIn = (channels: number) => ['-f', 's16le', '-ar', RATE, '-ac', String(channels), '-i', '-'];
// deterministic output: same audio, same bytes (no encoder version strings, fixed Ogg serial)
const BITEXACT = ['-map_metadata', '-1', '-fflags', '+bitexact', '-flags:a', '+bitexact'];

/**
 * Encode the WAV file `wavPath` into `outPath` (not fsynced: fsyncFile, once the ffmpeg slot is
 * free); `signal` stops ffmpeg (shutdown). An archive job (priority `idle`).
 * ffmpeg reads the file itself: its G.711 tables are the ITU ones, like codecs/g711.ts (checked
 * sample for sample by the FLAC tests and, when the archive replaces the WAV, by
 * make-archive.ts), and the gateway's thread neither decodes nor pipes a byte of the audio.
 */
export async function encodeWavFile(
  wavPath: string, channels: number, format: ArchiveFormat, outPath: string, signal?: AbortSignal,
): Promise<void> {
  const spec = formatSpec(format);
  const run = runFfmpeg(['-i', wavPath, ...BITEXACT, ...spec.codec(channels), '-threads', '1', '-f', spec.muxer, '-y', outPath, '-progress'], null, 'idle');
  run.output.resume(); // progress lines: read and dropped, so ffmpeg never blocks on them
  await untilDone(run, signal);
}

/** fsync a file's data (an archive before it is renamed into place). */
export async function fsyncFile(file: string): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Encode PCM16 (8 kHz, interleaved) on the fly: the container comes out of `output`. Playback (`low`). */
export function encodeStream(pcm: Readable, channels: number, format: ArchiveFormat): FfmpegRun {
  const spec = formatSpec(format);
  return runFfmpeg([...pcmIn(channels), ...BITEXACT, ...spec.codec(channels), '-threads', '1', '-f', spec.muxer], pcm, 'low');
}

/** Decode a compressed file to PCM16 at 8 kHz with `channels` channels, as raw samples. Playback (`low`). */
export function decodePcm(file: string, channels: number): FfmpegRun {
  return runFfmpeg(['-i', file, '-ar', RATE, '-ac', String(channels), '-c:a', 'pcm_s16le', '-f', 's16le'], null, 'low');
}

/**
 * Decode all of `file` at 48 kHz (no resampling: the Opus decoder's own rate) to /dev/null and
 * report how many bytes of PCM16 came out (ffmpeg's `-progress` total_size): an archive's full
 * decode before its WAV is removed, without piping the samples to the gateway. `-xerror`: a
 * packet that does not decode stops ffmpeg with an error instead of being skipped. `idle`.
 */
export async function decodedPcm48kBytes(file: string, signal?: AbortSignal): Promise<number> {
  const run = runFfmpeg(['-xerror', '-i', file, '-ar', '48000', '-c:a', 'pcm_s16le', '-f', 's16le', '-y', '/dev/null', '-progress'], null, 'idle');
  let text = '';
  run.output.on('data', (d: Buffer) => { text = (text + d.toString('latin1')).slice(-4096); });
  run.output.on('error', () => undefined); // the same error rejects run.done
  await untilDone(run, signal);
  const sizes = [...text.matchAll(/^total_size=(\d+)$/gm)];
  const last = sizes[sizes.length - 1];
  if (!/^progress=end$/m.test(text) || last === undefined) throw new Error('ffmpeg reported no final size of the decode');
  return Number(last[1]);
}

/**
 * Decode a compressed file to a PCM16 8 kHz WAV stream in its own channel count (44-byte header):
 * `idle` for an archive's verification, `low` for playback.
 */
export function decodeWav(file: string, priority: FfmpegPriority): FfmpegRun {
  return runFfmpeg(['-i', file, '-ar', RATE, '-c:a', 'pcm_s16le', '-fflags', '+bitexact', '-f', 'wav'], null, priority);
}

