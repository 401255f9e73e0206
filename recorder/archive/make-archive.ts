// One archive: encode a WAV into a compressed file and prove the file good before anyone relies
// on it (same channels, same duration within 20 ms; FLAC decoded: the very same samples).
import { createHash, webcrypto } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseWavHeader } from '../../codecs/wav.js';
import { decodeWav, encodeWavFile, untilDone } from './ffmpeg.js';
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
 * - `decode`: ffmpeg decodes all of it (channels, duration within 20 ms; FLAC: the very samples
 *   of the WAV's G.711 decode). Always when the archive replaces the WAV (ARCHIVE_KEEP_WAV=false).
 * - `packets`: while the WAV is kept, for formats whose packets state the exact length (Ogg
 *   Opus): every page is read without decoding (ogg-opus-check.ts: CRCs, sequence, a cut file,
 *   channels, duration within 20 ms). An archive that would not decode is then never the only copy.
 */
export type ArchiveVerify = 'decode' | 'packets';

/** size and sha256 of a file's bytes (the archive's, for the sidecar) */
export interface FileHash {
  bytes: number;
  sha256: string;
}

/**
 * frames at 8 kHz and channels of an Ogg Opus `file`, from its pages (no decode), and the file's
 * sha256: one read of the file; the digest runs in libuv's thread pool (WebCrypto) while the
 * pages are checked here, so the gateway's thread does no hashing for it.
 */
async function lengthFromPages(file: string, format: ArchiveFormat): Promise<{ channels: number; frames: number; file: FileHash }> {
  const buf = await readFile(file);
  const digest = webcrypto.subtle.digest('SHA-256', buf);
  digest.catch(() => undefined); // awaited below unless the check throws first
  try {
    const o = await checkOggOpusBuffer(buf);
    const sha256 = Buffer.from(await digest).toString('hex');
    return { channels: o.channels, frames: Math.round(o.samples48k / 6), file: { bytes: buf.length, sha256 } };
  } catch (err) {
    if (err instanceof OggCheckError) throw new ArchiveVerifyError(`the ${format} archive failed verification: ${err.message}`);
    throw err;
  }
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
  const byPackets = o.verify === 'packets' && formatSpec(format).packetsGiveLength;
  const lossless = format === 'flac';
  const got = byPackets
    ? { ...(await lengthFromPages(file, format)), pcmSha256: '' }
    : { ...(await inspectArchive(file, { hash: lossless, signal: o.signal })), file: null };
  const problems: string[] = [];
  if (got.channels !== src.channels) problems.push(`${got.channels} channels instead of ${src.channels}`);
  const diffMs = (Math.abs(got.frames - src.frames) * 1000) / RATE;
  if (diffMs > DURATION_TOLERANCE_MS) problems.push(`decodes to ${got.frames / 8} ms instead of ${src.frames / 8} ms`);
  if (lossless && !byPackets && (got.frames !== src.frames || got.pcmSha256 !== (await wavPcmSha256(wavPath)))) {
    problems.push('its samples differ from the WAV (FLAC must be lossless)');
  }
  if (problems.length > 0) throw new ArchiveVerifyError(`the ${format} archive failed verification: ${problems.join('; ')}`);
  return { channels: src.channels, sourceFrames: src.frames, frames: got.frames, file: got.file };
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
  // the packets check read the file already and hashed it on the way
  const { bytes, sha256 } = got.file ?? (await hashFile(outPath));
  return { channels: got.channels, sourceFrames: got.sourceFrames, durationMs: (got.frames * 1000) / RATE, bytes, sha256 };
}
