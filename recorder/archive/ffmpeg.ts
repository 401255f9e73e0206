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

export class FfmpegUnavailableError extends Error {
  override name = 'FfmpegUnavailableError';
}

const RATE = '8000';
const FFMPEG_NICE = 10;
let found: { output: string } | null | undefined;

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
  /** ffmpeg's stdout */
  output: Readable;
  /** resolves when ffmpeg exited 0; rejects with the end of its error output otherwise */
  done: Promise<void>;
  /** stop it at once (a client went away, shutdown) */
  kill(): void;
}

/** Run ffmpeg with `input` piped into its stdin (null: it reads a file named in `args`). */
export function runFfmpeg(args: string[], input: Readable | null): FfmpegRun {
  ffmpegInfo();
  const ff = new prism.FFmpeg({ args: ['-hide_banner', '-nostats', '-v', 'error', ...(input ? [] : ['-nostdin']), ...args] });
  const proc = ff.process;
  // below the gateway's priority: encoding must never take CPU from live streams
  if (proc.pid !== undefined) {
    try {
      os.setPriority(proc.pid, FFMPEG_NICE);
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
  return { output, done, kill };
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
 * Encode the WAV file `wavPath` into `outPath` and fsync it; `signal` stops ffmpeg (shutdown).
 * ffmpeg reads the file itself: its G.711 tables are the ITU ones, like codecs/g711.ts (checked
 * sample for sample by the FLAC tests and, when the archive replaces the WAV, by
 * make-archive.ts), and the gateway's thread neither decodes nor pipes a byte of the audio.
 */
export async function encodeWavFile(
  wavPath: string, channels: number, format: ArchiveFormat, outPath: string, signal?: AbortSignal,
): Promise<void> {
  const spec = formatSpec(format);
  const run = runFfmpeg(['-i', wavPath, ...BITEXACT, ...spec.codec(channels), '-f', spec.muxer, '-y', outPath, '-progress'], null);
  run.output.resume(); // progress lines: read and dropped, so ffmpeg never blocks on them
  await untilDone(run, signal);
  const fh = await open(outPath, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Encode PCM16 (8 kHz, interleaved) on the fly: the container comes out of `output`. */
export function encodeStream(pcm: Readable, channels: number, format: ArchiveFormat): FfmpegRun {
  const spec = formatSpec(format);
  return runFfmpeg([...pcmIn(channels), ...BITEXACT, ...spec.codec(channels), '-f', spec.muxer], pcm);
}

/** Decode a compressed file to PCM16 at 8 kHz with `channels` channels, as raw samples. */
export function decodePcm(file: string, channels: number): FfmpegRun {
  return runFfmpeg(['-i', file, '-ar', RATE, '-ac', String(channels), '-c:a', 'pcm_s16le', '-f', 's16le'], null);
}

/** Decode a compressed file to a PCM16 8 kHz WAV stream in its own channel count (44-byte header). */
export function decodeWav(file: string): FfmpegRun {
  return runFfmpeg(['-i', file, '-ar', RATE, '-c:a', 'pcm_s16le', '-fflags', '+bitexact', '-f', 'wav'], null);
}

