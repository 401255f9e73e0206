// Reads an Ogg Opus file page by page without decoding it: what the archive check needs while the
// WAV is kept (make-archive.ts). Every page must start with the capture pattern, carry a correct
// CRC and the next sequence number of the one logical stream; the first holds OpusHead (channels,
// pre-skip), the last has the end-of-stream flag and the granule position that gives the exact
// length. A cut, a hole or a flipped bit anywhere is refused. In-process and cheap (~1 ms per
// hour of audio of CRC work, a yield every 64 KB so the event loop is never held): an ffprobe
// process for the same check cost more than the check itself.
import { readFile } from 'node:fs/promises';

export class OggCheckError extends Error {
  override name = 'OggCheckError';
}

// CRC-32 of Ogg: polynomial 0x04c11db7, not reflected, initial value 0, no final xor
const CRC_TABLE = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  let r = i << 24;
  for (let b = 0; b < 8; b++) r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
  CRC_TABLE[i] = r >>> 0;
}

function crc(buf: Buffer, from: number, to: number, crcAt: number): number {
  let c = 0;
  for (let i = from; i < to; i++) {
    // the CRC field itself counts as zeros
    const byte = i >= crcAt && i < crcAt + 4 ? 0 : buf[i]!; // i < to <= buf.length
    c = ((c << 8) ^ CRC_TABLE[((c >>> 24) ^ byte) & 0xff]!) >>> 0;
  }
  return c;
}

const YIELD_EVERY = 64 * 1024;
const EOS = 0x04;

export interface OggOpusInfo {
  channels: number;
  /** samples per channel at 48 kHz, pre-skip removed: the decoded length */
  samples48k: number;
  pages: number;
}

export async function checkOggOpus(file: string): Promise<OggOpusInfo> {
  return checkOggOpusBuffer(await readFile(file));
}

/** checkOggOpus on a file already read (the archiver hashes the same bytes: one read). */
export async function checkOggOpusBuffer(buf: Buffer): Promise<OggOpusInfo> {
  let at = 0;
  let pages = 0;
  let serial: number | null = null;
  let channels = 0;
  let preSkip = 0;
  let granule = -1n;
  let eos = false;
  let sinceYield = 0;
  while (at < buf.length) {
    if (eos) throw new OggCheckError(`data after the end-of-stream page at byte ${at}`);
    if (at + 27 > buf.length || buf.toString('latin1', at, at + 4) !== 'OggS' || buf[at + 4] !== 0) {
      throw new OggCheckError(`no Ogg page at byte ${at} (cut or damaged)`);
    }
    const nSegs = buf[at + 26]!; // at + 27 <= buf.length checked above
    const bodyAt = at + 27 + nSegs;
    if (bodyAt > buf.length) throw new OggCheckError(`page ${pages} is cut`);
    let bodyLen = 0;
    for (let i = 0; i < nSegs; i++) bodyLen += buf[at + 27 + i]!; // at + 27 + nSegs <= buf.length checked above
    const end = bodyAt + bodyLen;
    if (end > buf.length) throw new OggCheckError(`page ${pages} is cut`);
    if (crc(buf, at, end, at + 22) !== buf.readUInt32LE(at + 22)) throw new OggCheckError(`page ${pages} fails its CRC`);
    const pageSerial = buf.readUInt32LE(at + 14);
    if (serial === null) serial = pageSerial;
    else if (pageSerial !== serial) throw new OggCheckError(`page ${pages} belongs to another stream`);
    if (buf.readUInt32LE(at + 18) !== pages) throw new OggCheckError(`page ${pages} is missing (sequence ${buf.readUInt32LE(at + 18)})`);
    if (pages === 0) {
      if (bodyLen < 19 || buf.toString('latin1', bodyAt, bodyAt + 8) !== 'OpusHead') throw new OggCheckError('the first page holds no OpusHead');
      channels = buf[bodyAt + 9]!; // bodyLen >= 19
      preSkip = buf.readUInt16LE(bodyAt + 10);
    }
    const g = buf.readBigInt64LE(at + 6);
    if (g !== -1n) granule = g; // -1: no packet ends on this page
    eos = (buf[at + 5]! & EOS) !== 0;
    pages++;
    sinceYield += end - at;
    at = end;
    if (sinceYield >= YIELD_EVERY) {
      sinceYield = 0;
      await new Promise((r) => setImmediate(r));
    }
  }
  if (!eos) throw new OggCheckError('the last page is not marked end-of-stream (cut)');
  if (granule < BigInt(preSkip)) throw new OggCheckError('no audio');
  return { channels, samples48k: Number(granule - BigInt(preSkip)), pages };
}
