// One archive: encode a WAV into a compressed file and prove the file good before anyone relies
// on it (same channels, same duration within 20 ms; FLAC decoded: the very same samples).
import { createHash, webcrypto } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseWavHeader } from '../../codecs/wav.js';
import { decodedPcm48kBytes, decodeWav, encodeWavFile, untilDone } from './ffmpeg.js';
import { checkOggOpusBuffer, OggCheckError } from './ogg-opus-check.js';
import { openWavPcm, wavLayout } from './pcm-source.js';
import { formatSpec, type ArchiveFormat } from './formats.js';

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
export async function inspectArchive(file: string, o: { hash?: boolean; signal?: AbortSignal } = {}): Promise<DecodedArchive> {
  const run = decodeWav(file, 'idle'); // an archive's check: nobody waits for it
  // hashing 115 MB per audio hour is only worth it where samples are compared (FLAC)
  const hash = o.hash === false ? null : createHash('sha256');
  let head: Buffer | null = Buffer.alloc(0);
  let channels = 0;
  let blockAlign = 2;
  let dataBytes = 0;
  const done = untilDone(run, o.signal);
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
    hash?.update(data);
    dataBytes += data.length;
  }
  await done;
  if (head !== null) {
    // a short file: everything came in one piece
    const info = parseWavHeader(head);
    ({ channels, blockAlign } = info);
    const data = head.subarray(info.dataOffset);
    hash?.update(data);
    dataBytes += data.length;
  }
  return { channels, frames: Math.floor(dataBytes / blockAlign), pcmSha256: hash?.digest('hex') ?? '' };
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
 * How an archive is proved good before anyone relies on it:
 * - `decode`: all of it is decoded (channels, duration within 20 ms; FLAC: the very samples
 *   of the WAV's G.711 decode). Always when the archive replaces the WAV (ARCHIVE_KEEP_WAV=false).
 * - `packets`: while the WAV is kept, for formats whose packets state the exact length (Ogg
 *   Opus): every page is read without decoding (ogg-opus-check.ts: CRCs, sequence, a cut file,
 *   channels, duration within 20 ms). An archive that would not decode is then never the only copy.
 * Ogg Opus pages are checked in both modes; with `decode` ffmpeg also decodes every packet
 * (`-xerror`) at the decoder's own 48 kHz into /dev/null and reports the bytes of PCM made
 * (decodedPcm48kBytes): no resampling to 8 kHz and no samples through a pipe into the gateway,
 * which cost as much again as the decode itself (BENCHMARKS.md, issue 13).
 */
export type ArchiveVerify = 'decode' | 'packets';

/** size and sha256 of a file's bytes (the archive's, for the sidecar) */
export interface FileHash {
  bytes: number;
  sha256: string;
}

interface OggPages {
  channels: number;
  /** at 8 kHz, from the last granule position less the pre-skip */
  frames: number;
  file: FileHash;
}

/**
 * frames at 8 kHz and channels of an Ogg Opus `file`, from its pages (no decode), and the file's
 * sha256: one read of the file; the digest runs in libuv's thread pool (WebCrypto) while the
 * pages are checked here, so the gateway's thread does no hashing for it. Throws OggCheckError.
 */
async function lengthFromPages(file: string): Promise<OggPages> {
  const buf = await readFile(file);
  const digest = webcrypto.subtle.digest('SHA-256', buf);
  digest.catch(() => undefined); // awaited below unless the check throws first
  const o = await checkOggOpusBuffer(buf);
  const sha256 = Buffer.from(await digest).toString('hex');
  return { channels: o.channels, frames: Math.round(o.samples48k / 6), file: { bytes: buf.length, sha256 } };
}

/**
 * Ogg Opus: the pages always (lengthFromPages); with `decode` also every packet decoded by ffmpeg
 * (at the same time: ffmpeg is another process). Problems go in `problems`, the decode's first.
 */
async function checkOggOpusArchive(
  file: string, src: { channels: number; frames: number }, decode: boolean, problems: string[], signal?: AbortSignal,
): Promise<{ frames: number; file: FileHash | null }> {
  const pagesP = lengthFromPages(file);
  pagesP.catch(() => undefined); // awaited below
  let decodedBytes: number | null = null;
  if (decode) {
    try {
      decodedBytes = await decodedPcm48kBytes(file, signal);
    } catch (err) {
      if (signal?.aborted) throw err;
      problems.push(`it does not decode (${(err as Error).message})`);
    }
  }
  let pages: OggPages | null = null;
  let pagesProblem: string | null = null;
  try {
    pages = await pagesP;
  } catch (err) {
    if (!(err instanceof OggCheckError)) throw err;
    pagesProblem = err.message;
  }
  let frames = pages?.frames ?? 0;
  if (decodedBytes !== null) {
    // ffmpeg decodes Ogg Opus to the OpusHead's channel count; 48 kHz is 6 samples per 8 kHz one
    frames = Math.round(decodedBytes / (2 * (pages?.channels ?? src.channels)) / 6);
  }
  const diffMs = (Math.abs(frames - src.frames) * 1000) / RATE;
  if ((decodedBytes !== null || pages !== null) && diffMs > DURATION_TOLERANCE_MS) problems.push(`decodes to ${frames / 8} ms instead of ${src.frames / 8} ms`);
  if (pagesProblem !== null) problems.push(pagesProblem);
  else if (pages !== null && pages.channels !== src.channels) problems.push(`${pages.channels} channels instead of ${src.channels}`);
  return { frames, file: pages?.file ?? null };
}

/** sha256 of the WAV's samples as PCM16 (codecs/g711.ts decode). */
async function wavPcmSha256(wavPath: string): Promise<string> {
  const src = await openWavPcm(wavPath);
  const hash = createHash('sha256');
  for await (const chunk of src.stream as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}

/**
 * Checks the archive `file` against the WAV it was made from (`verify`); resolves to the archive's
 * duration at 8 kHz in frames. Throws ArchiveVerifyError when it does not hold the recording.
 */
export async function checkArchive(
  file: string, format: ArchiveFormat, wavPath: string, o: { verify: ArchiveVerify; signal?: AbortSignal },
): Promise<{ channels: number; sourceFrames: number; frames: number; file: FileHash | null }> {
  const src = await wavLayout(wavPath);
  const problems: string[] = [];
  let frames: number;
  let hashed: FileHash | null = null;
  if (formatSpec(format).packetsGiveLength) {
    ({ frames, file: hashed } = await checkOggOpusArchive(file, src, o.verify === 'decode', problems, o.signal));
  } else {
    const lossless = format === 'flac';
    const got = await inspectArchive(file, { hash: lossless, signal: o.signal });
    frames = got.frames;
    if (got.channels !== src.channels) problems.push(`${got.channels} channels instead of ${src.channels}`);
    const diffMs = (Math.abs(got.frames - src.frames) * 1000) / RATE;
    if (diffMs > DURATION_TOLERANCE_MS) problems.push(`decodes to ${got.frames / 8} ms instead of ${src.frames / 8} ms`);
    if (lossless && (got.frames !== src.frames || got.pcmSha256 !== (await wavPcmSha256(wavPath)))) {
      problems.push('its samples differ from the WAV (FLAC must be lossless)');
    }
  }
  if (problems.length > 0) throw new ArchiveVerifyError(`the ${format} archive failed verification: ${problems.join('; ')}`);
  return { channels: src.channels, sourceFrames: src.frames, frames, file: hashed };
}

/**
 * Encodes `wavPath` into `outPath` (not fsynced: the caller does, see fsyncFile), then checks it
 * against the WAV (`verify`). Throws ArchiveVerifyError when the archive does not hold the recording.
 */
export async function makeArchive(
  wavPath: string, format: ArchiveFormat, outPath: string, o: { verify: ArchiveVerify; signal?: AbortSignal },
): Promise<MadeArchive> {
  const { channels } = await wavLayout(wavPath);
  await encodeWavFile(wavPath, channels, format, outPath, o.signal);
  const got = await checkArchive(outPath, format, wavPath, o);
  // the Ogg page check read the file already and hashed it on the way
  const { bytes, sha256 } = got.file ?? (await hashFile(outPath));
  return { channels: got.channels, sourceFrames: got.sourceFrames, durationMs: (got.frames * 1000) / RATE, bytes, sha256 };
}
