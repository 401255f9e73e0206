// One archive: encode a WAV into a compressed file and prove the file good before anyone relies
// on it (decoded: same channels, same duration within 20 ms; FLAC: the very same samples).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform } from 'node:stream';
import { parseWavHeader } from '../../codecs/wav.js';
import { decodeWav, encodeFile, untilDone } from './ffmpeg.js';
import { openWavPcm } from './pcm-source.js';
import type { ArchiveFormat } from './formats.js';

/** Lossy codecs pad to whole frames; the decoded archive may differ from the WAV by this much. */
export const DURATION_TOLERANCE_MS = 20;
const RATE = 8000;

export class ArchiveVerifyError extends Error {
  override name = 'ArchiveVerifyError';
}

export interface DecodedArchive {
  channels: number;
  /** sample frames at 8 kHz */
  frames: number;
  /** sha256 of the decoded PCM16 samples */
  pcmSha256: string;
}

export interface MadeArchive {
  channels: number;
  /** sample frames of the WAV */
  sourceFrames: number;
  /** of the decoded archive, at 8 kHz */
  durationMs: number;
  bytes: number;
  sha256: string;
}

/** Decodes `file` with ffmpeg (to 8 kHz PCM16 in its own channel count) and measures it. */
export async function inspectArchive(file: string, signal?: AbortSignal): Promise<DecodedArchive> {
  const run = decodeWav(file);
  const hash = createHash('sha256');
  let head: Buffer | null = Buffer.alloc(0);
  let channels = 0;
  let blockAlign = 2;
  let dataBytes = 0;
  const done = untilDone(run, signal);
  for await (const chunk of run.output as AsyncIterable<Buffer>) {
    let data = chunk;
    if (head !== null) {
      head = Buffer.concat([head, chunk]);
      if (head.length < 4096) continue;
      const info = parseWavHeader(head);
      ({ channels, blockAlign } = info);
      data = head.subarray(info.dataOffset);
      head = null;
    }
    hash.update(data);
    dataBytes += data.length;
  }
  await done;
  if (head !== null) {
    // a short file: everything came in one piece
    const info = parseWavHeader(head);
    ({ channels, blockAlign } = info);
    const data = head.subarray(info.dataOffset);
    hash.update(data);
    dataBytes += data.length;
  }
  return { channels, frames: Math.floor(dataBytes / blockAlign), pcmSha256: hash.digest('hex') };
}

export async function hashFile(file: string): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { bytes, sha256: hash.digest('hex') };
}

/**
 * Encodes `wavPath` into `outPath` (fsynced), then decodes it and checks it against the WAV.
 * Throws ArchiveVerifyError when the archive does not hold the recording.
 */
export async function makeArchive(wavPath: string, format: ArchiveFormat, outPath: string, signal?: AbortSignal): Promise<MadeArchive> {
  const src = await openWavPcm(wavPath);
  const fed = createHash('sha256');
  const tap = new Transform({
    transform(chunk: Buffer, _e, cb) {
      fed.update(chunk);
      cb(null, chunk);
    },
  });
  src.stream.on('error', (err) => tap.destroy(err));
  src.stream.pipe(tap);
  await encodeFile(tap, src.channels, format, outPath, signal);

  const got = await inspectArchive(outPath, signal);
  const problems: string[] = [];
  if (got.channels !== src.channels) problems.push(`${got.channels} channels instead of ${src.channels}`);
  const diffMs = (Math.abs(got.frames - src.frames) * 1000) / RATE;
  if (diffMs > DURATION_TOLERANCE_MS) problems.push(`decodes to ${got.frames / 8} ms instead of ${src.frames / 8} ms`);
  if (format === 'flac' && (got.frames !== src.frames || got.pcmSha256 !== fed.digest('hex'))) {
    problems.push('its samples differ from the WAV (FLAC must be lossless)');
  }
  if (problems.length > 0) throw new ArchiveVerifyError(`the ${format} archive failed verification: ${problems.join('; ')}`);
  const { bytes, sha256 } = await hashFile(outPath);
  return { channels: src.channels, sourceFrames: src.frames, durationMs: (got.frames * 1000) / RATE, bytes, sha256 };
}
