// Playback of recordings in compressed forms, and of recordings whose WAV was removed in favour
// of its archive (ARCHIVE_KEEP_WAV=false): conversions through ffmpeg (recorder/archive), at
// most a few at a time so that playback can never take the CPU the live streams need.
import { randomBytes } from 'node:crypto';
import { access, unlink } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { IndexedRecording } from '../../recorder/catalog/catalog.js';
import { decodePcm, decodeWav, encodeStream, FfmpegUnavailableError, type FfmpegRun } from '../../recorder/archive/ffmpeg.js';
import { openWavPcm } from '../../recorder/archive/pcm-source.js';
import { archiveFileName, isArchiveFormat, type ArchiveFormat } from '../../recorder/archive/formats.js';
import { ApiError } from './errors.js';

/** ffmpeg processes serving playback at once on this node; more get 503 (retry). */
const MAX_CONVERSIONS = 4;
let conversions = 0;

/** Throws 503 when the node is already at its conversion limit (call before any header is set). */
export function assertConversionSlot(): void {
  if (conversions >= MAX_CONVERSIONS) {
    throw new ApiError(503, 'busy', `this node is already converting ${conversions} recordings for playback; retry shortly`, { 'retry-after': '1' });
  }
}

/** Count `runs` against the limit until they end; throws 503 when the node is at the limit. */
// One run per argument, as a tuple of the same length (so `const [run] = admit(...)` is a run).
function admit<R extends Array<() => FfmpegRun>>(...runs: R): { [K in keyof R]: FfmpegRun } {
  assertConversionSlot();
  let started: FfmpegRun[];
  try {
    started = runs.map((r) => r());
  } catch (err) {
    if (err instanceof FfmpegUnavailableError) throw new ApiError(501, 'not_implemented', `audio conversion needs ffmpeg: ${err.message}`);
    throw err;
  }
  conversions++;
  void Promise.allSettled(started.map((r) => r.done)).then(() => { conversions--; });
  return started as { [K in keyof R]: FfmpegRun };
}

/** Absolute path of the recording's stored archive file, or null when it has none. */
export function archivePath(rec: IndexedRecording): string | null {
  const a = rec.sidecar.archive;
  // the name is rebuilt from id and format, never taken from the sidecar as is
  return a && isArchiveFormat(a.format) ? path.join(path.dirname(rec.sidecarPath), archiveFileName(rec.sidecar.recordingId, a.format)) : null;
}

const isGone = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT';

/**
 * The recording's samples as PCM16 (8 kHz, interleaved): from the WAV, or decoded from the
 * archive when the WAV was removed. Returns the ffmpeg run when one was started.
 */
async function pcmOf(rec: IndexedRecording): Promise<{ pcm: Readable; channels: number; run: FfmpegRun | null }> {
  try {
    const src = await openWavPcm(rec.audioPath);
    return { pcm: src.stream, channels: src.channels, run: null };
  } catch (err) {
    const archive = archivePath(rec);
    if (!isGone(err) || archive === null) {
      if (isGone(err)) throw new ApiError(404, 'not_found', `recording ${rec.sidecar.recordingId} is indexed but its audio file is no longer on disk`);
      throw err;
    }
    const [run] = admit(() => decodePcm(archive, rec.sidecar.channels));
    return { pcm: run.output, channels: rec.sidecar.channels, run };
  }
}

/** The recording encoded on the fly into `format` (a stream; its length is not known ahead). */
export async function convertRecording(rec: IndexedRecording, format: ArchiveFormat): Promise<Readable> {
  const { pcm, channels, run } = await pcmOf(rec);
  try {
    const [enc] = admit(() => encodeStream(pcm, channels, format));
    return enc.output;
  } catch (err) {
    run?.kill();
    pcm.destroy();
    throw err;
  }
}

/** Drops the first `n` bytes (the WAV header of a PCM stream). */
export class SkipBytes extends Transform {
  #left: number;
  constructor(n: number) {
    super();
    this.#left = n;
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    if (this.#left >= chunk.length) {
      this.#left -= chunk.length;
      cb();
      return;
    }
    const out = chunk.subarray(this.#left);
    this.#left = 0;
    cb(null, out);
  }
}

/** A PCM16 stereo stream (e.g. the whole contact, header skipped) encoded on the fly. */
export function encodePcm(pcm: Readable, channels: number, format: ArchiveFormat): Readable {
  try {
    const [enc] = admit(() => encodeStream(pcm, channels, format));
    return enc.output;
  } catch (err) {
    pcm.destroy();
    throw err;
  }
}

/**
 * Decodes the samples of `rec` from its archive into `length` bytes of PCM16, exactly: cut or
 * padded with silence so that the result has the WAV's length (lossy codecs pad to whole
 * frames, a few ms either way). The stream owns the ffmpeg run.
 */
export function decodedArchivePcm(rec: IndexedRecording, length: number): Readable {
  const archive = archivePath(rec);
  if (archive === null) throw new Error(`recording ${rec.sidecar.recordingId} has no archive`);
  const [run] = admit(() => decodePcm(archive, rec.sidecar.channels));
  const fit = new ExactLength(length);
  run.output.on('error', (err) => fit.destroy(err));
  fit.on('close', () => run.output.destroy());
  run.output.pipe(fit);
  return fit;
}

class ExactLength extends Transform {
  #left: number;
  constructor(length: number) {
    super();
    this.#left = length;
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    const out = chunk.subarray(0, this.#left);
    this.#left -= out.length;
    cb(null, out.length > 0 ? out : undefined);
  }

  override _flush(cb: TransformCallback): void {
    cb(null, this.#left > 0 ? Buffer.alloc(this.#left) : undefined);
  }
}

/**
 * A WAV of the recording that can be opened and read at any position: the stored WAV, or (WAV
 * removed) its archive decoded into a temporary file beside it. `temp` files are to be unlinked
 * by the caller once opened.
 */
export async function playableWav(rec: IndexedRecording): Promise<{ path: string; temp: boolean }> {
  const archive = archivePath(rec);
  if (archive === null) return { path: rec.audioPath, temp: false };
  try {
    await access(rec.audioPath);
    return { path: rec.audioPath, temp: false };
  } catch (err) {
    if (!isGone(err)) throw err;
  }
  const tmp = path.join(path.dirname(rec.sidecarPath), `.${rec.sidecar.recordingId}.${randomBytes(4).toString('hex')}.playback-tmp`);
  const [run] = admit(() => decodeWav(archive, 'low'));
  try {
    await Promise.all([pipeline(run.output, createWriteStream(tmp)), run.done]);
  } catch (err) {
    await unlink(tmp).catch(() => undefined); // best effort (may not exist); the decode error is what counts
    throw err;
  }
  return { path: tmp, temp: true };
}
