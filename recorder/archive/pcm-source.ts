// A stored WAV's layout, and its samples as PCM16: the G.711 decode of codecs/g711.ts (bit-exact
// with sox), what playback gives and what a FLAC archive must hold sample for sample.
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { parseWavHeader, type WavEncoding } from '../../codecs/wav.js';
import { transcode } from '../../codecs/transcode.js';

/** How much of a WAV file is read to find its data chunk (ours are 44 or 58 bytes). */
const HEADER_PROBE_BYTES = 64 * 1024;

export interface PcmSource {
  channels: number;
  /** sample frames (samples per channel) */
  frames: number;
  /** interleaved PCM16 little-endian, 8 kHz */
  stream: Readable;
}

/** G.711 bytes in, PCM16 out; PCM16 passes through (whole samples only). */
class ToPcm16 extends Transform {
  #carry: Buffer | null = null;
  constructor(private readonly from: WavEncoding) {
    super();
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    if (this.from !== 'pcm16') {
      cb(null, transcode(chunk, this.from, 'pcm16'));
      return;
    }
    const buf = this.#carry ? Buffer.concat([this.#carry, chunk]) : chunk;
    const usable = buf.length & ~1;
    this.#carry = usable < buf.length ? buf.subarray(usable) : null;
    cb(null, usable > 0 ? buf.subarray(0, usable) : undefined);
  }
}

export interface WavLayout {
  channels: number;
  /** sample frames (samples per channel) the file really holds */
  frames: number;
  encoding: WavEncoding;
  dataOffset: number;
  blockAlign: number;
}

/** Reads the header of `wavPath`: what it holds. Throws ENOENT when it is gone. */
export async function wavLayout(wavPath: string): Promise<WavLayout> {
  const fh = await open(wavPath, 'r');
  let info;
  let size;
  try {
    size = (await fh.stat()).size;
    const head = Buffer.alloc(Math.min(size, HEADER_PROBE_BYTES));
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    info = parseWavHeader(head.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
  // the header may claim more than the file holds (a writer that died): trust the file
  const dataBytes = Math.max(0, Math.min(info.dataBytes, size - info.dataOffset));
  return {
    channels: info.channels, frames: Math.floor(dataBytes / info.blockAlign), encoding: info.encoding, dataOffset: info.dataOffset, blockAlign: info.blockAlign,
  };
}

/** Opens `wavPath` and streams its samples as PCM16. Throws ENOENT when it is gone. */
export async function openWavPcm(wavPath: string): Promise<PcmSource> {
  const { channels, frames, encoding, dataOffset, blockAlign } = await wavLayout(wavPath);
  const pcm = new ToPcm16(encoding);
  if (frames === 0) {
    pcm.end();
  } else {
    const file = createReadStream(wavPath, { start: dataOffset, end: dataOffset + frames * blockAlign - 1 });
    file.on('error', (err) => pcm.destroy(err));
    pcm.on('close', () => file.destroy());
    file.pipe(pcm);
  }
  return { channels, frames, stream: pcm };
}
