/**
 * WAV (RIFF/WAVE) headers for the three encodings we store.
 *
 * The header length depends only on the encoding, so a streaming writer can
 * write it with placeholder sizes, append audio, and patch it at close by
 * rewriting the whole header with the final dataBytes.
 */

export type WavEncoding = 'mulaw' | 'alaw' | 'pcm16';

export class WavFormatError extends Error {
  override name = 'WavFormatError';
}

export interface WavInfo {
  encoding: WavEncoding;
  channels: number;
  sampleRate: number;
  bitsPerSample: number;
  /** Byte offset of the first sample in the file. */
  dataOffset: number;
  /**
   * Size from the data chunk header, as written. It may exceed the buffer
   * passed in (only the start of a file was read), and an unpatched file
   * from a crashed writer may carry a placeholder, so callers reading
   * samples should clamp it to the real file size.
   */
  dataBytes: number;
  blockAlign: number;
}

const FORMAT_PCM = 1;
const FORMAT_ALAW = 6;
const FORMAT_MULAW = 7;
const FORMAT_EXTENSIBLE = 0xfffe;

const PCM_HEADER_LENGTH = 44; // RIFF 12 + fmt 8+16 + data 8
const G711_HEADER_LENGTH = 58; // RIFF 12 + fmt 8+18 + fact 8+4 + data 8

const FORMAT_TAG: Record<WavEncoding, number> = {
  pcm16: FORMAT_PCM,
  alaw: FORMAT_ALAW,
  mulaw: FORMAT_MULAW,
};

function checkEncoding(encoding: WavEncoding): void {
  // Guards JS callers and values that came in from query strings or config.
  if (!Object.hasOwn(FORMAT_TAG, encoding)) {
    throw new TypeError(`unknown WAV encoding: ${String(encoding)}`);
  }
}

export function wavHeaderLength(encoding: WavEncoding): number {
  checkEncoding(encoding);
  // Non-PCM formats need the cbSize field and a fact chunk (WAV spec; sox
  // writes exactly this layout for mu-law and A-law).
  return encoding === 'pcm16' ? PCM_HEADER_LENGTH : G711_HEADER_LENGTH;
}

function checkUint(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
  }
}

export function buildWavHeader(o: {
  encoding: WavEncoding;
  channels: number;
  sampleRate: number;
  dataBytes: number;
}): Buffer {
  const { encoding, channels, sampleRate, dataBytes } = o;
  const headerLength = wavHeaderLength(encoding);
  checkUint('channels', channels, 1, 0xffff);
  checkUint('sampleRate', sampleRate, 1, 0xffffffff);
  const bytesPerSample = encoding === 'pcm16' ? 2 : 1;
  const blockAlign = channels * bytesPerSample;
  checkUint('byte rate (sampleRate * blockAlign)', sampleRate * blockAlign, 1, 0xffffffff);
  // RIFF sizes are 32-bit and count the pad byte that follows odd-sized data.
  const pad = dataBytes & 1;
  checkUint('dataBytes', dataBytes, 0, 0xffffffff - (headerLength - 8) - pad);

  const h = Buffer.alloc(headerLength);
  h.write('RIFF', 0, 'latin1');
  // A writer with odd dataBytes must append one zero byte after the data,
  // as sox does; RIFF size includes it.
  h.writeUInt32LE(headerLength - 8 + dataBytes + pad, 4);
  h.write('WAVE', 8, 'latin1');
  h.write('fmt ', 12, 'latin1');
  h.writeUInt32LE(encoding === 'pcm16' ? 16 : 18, 16);
  h.writeUInt16LE(FORMAT_TAG[encoding], 20);
  h.writeUInt16LE(channels, 22);
  h.writeUInt32LE(sampleRate, 24);
  h.writeUInt32LE(sampleRate * blockAlign, 28);
  h.writeUInt16LE(blockAlign, 32);
  h.writeUInt16LE(bytesPerSample * 8, 34);
  let p = 36;
  if (encoding !== 'pcm16') {
    h.writeUInt16LE(0, 36); // cbSize: no extra format bytes
    h.write('fact', 38, 'latin1');
    h.writeUInt32LE(4, 42);
    h.writeUInt32LE(Math.floor(dataBytes / blockAlign), 46); // sample frames
    p = 50;
  }
  h.write('data', p, 'latin1');
  h.writeUInt32LE(dataBytes, p + 4);
  return h;
}

const FORMAT_NAMES: Record<number, string> = {
  [FORMAT_PCM]: 'PCM',
  3: 'IEEE float',
  [FORMAT_ALAW]: 'A-law',
  [FORMAT_MULAW]: 'mu-law',
};

function encodingOf(formatTag: number, bits: number): WavEncoding {
  if (formatTag === FORMAT_PCM && bits === 16) return 'pcm16';
  if (formatTag === FORMAT_MULAW && bits === 8) return 'mulaw';
  if (formatTag === FORMAT_ALAW && bits === 8) return 'alaw';
  const name = FORMAT_NAMES[formatTag] ?? 'unknown';
  throw new WavFormatError(
    `unsupported WAV format: format tag ${formatTag} (${name}) with ${bits} bits per sample; ` +
      'supported are 16-bit PCM, 8-bit mu-law and 8-bit A-law',
  );
}

/**
 * Reads the format and locates the data chunk. Unknown chunks (LIST, fact,
 * bext, ...) are skipped; the buffer only needs to reach the data chunk
 * header, not hold the samples.
 */
export function parseWavHeader(buf: Buffer): WavInfo {
  if (buf.length < 12) {
    throw new WavFormatError(`not a WAV file: ${buf.length} bytes is too short for a RIFF header`);
  }
  const riff = buf.toString('latin1', 0, 4);
  const wave = buf.toString('latin1', 8, 12);
  if (riff !== 'RIFF' || wave !== 'WAVE') {
    throw new WavFormatError(
      `not a RIFF/WAVE file: found ${JSON.stringify(riff)}/${JSON.stringify(wave)} ` +
        'where "RIFF"/"WAVE" was expected',
    );
  }

  let fmt: Omit<WavInfo, 'dataOffset' | 'dataBytes'> | undefined;
  let offset = 12;
  while (offset + 8 <= buf.length) {
    const id = buf.toString('latin1', offset, offset + 4);
    const size = buf.readUInt32LE(offset + 4);
    const body = offset + 8;
    if (id === 'fmt ') {
      if (size < 16) throw new WavFormatError(`fmt chunk too small: ${size} bytes`);
      if (body + size > buf.length) {
        throw new WavFormatError(`fmt chunk truncated: buffer ends at ${buf.length}, chunk needs ${body + size}`);
      }
      let formatTag = buf.readUInt16LE(body);
      const channels = buf.readUInt16LE(body + 2);
      const sampleRate = buf.readUInt32LE(body + 4);
      const blockAlign = buf.readUInt16LE(body + 12);
      const bitsPerSample = buf.readUInt16LE(body + 14);
      // sox writes >2 channels as WAVE_FORMAT_EXTENSIBLE; the real format
      // tag is the first two bytes of the sub-format GUID.
      if (formatTag === FORMAT_EXTENSIBLE) {
        if (size < 40) throw new WavFormatError(`extensible fmt chunk too small: ${size} bytes`);
        formatTag = buf.readUInt16LE(body + 24);
      }
      const encoding = encodingOf(formatTag, bitsPerSample);
      if (channels === 0) throw new WavFormatError('fmt chunk declares 0 channels');
      if (sampleRate === 0) throw new WavFormatError('fmt chunk declares a sample rate of 0');
      const expectedAlign = channels * (bitsPerSample / 8);
      if (blockAlign !== expectedAlign) {
        throw new WavFormatError(
          `fmt chunk blockAlign is ${blockAlign}, expected ${expectedAlign} for ${channels} channel(s) of ${bitsPerSample}-bit ${encoding}`,
        );
      }
      fmt = { encoding, channels, sampleRate, bitsPerSample, blockAlign };
    } else if (id === 'data') {
      if (!fmt) throw new WavFormatError('data chunk found before any fmt chunk');
      return { ...fmt, dataOffset: body, dataBytes: size };
    }
    // Chunks are word aligned: odd sizes are followed by a pad byte.
    offset = body + size + (size & 1);
  }
  throw new WavFormatError(
    fmt
      ? `no data chunk within the first ${buf.length} bytes`
      : `no fmt chunk within the first ${buf.length} bytes`,
  );
}
