/**
 * Whole-buffer conversion between stored encodings, for playback.
 *
 * Every sample is converted on its own, so interleaved multi-channel data
 * needs no special handling: channel order is preserved sample by sample.
 */

import { ALAW_TO_PCM16, MULAW_TO_PCM16, pcm16ToAlawSample, pcm16ToMulawSample } from './g711.js';
import type { WavEncoding } from './wav.js';

const ENCODINGS: readonly string[] = ['mulaw', 'alaw', 'pcm16'];

export function bytesPerSample(e: WavEncoding): 1 | 2 {
  return e === 'pcm16' ? 2 : 1;
}

// mu-law <-> A-law goes through pcm16 exactly as sox does (decode to 16 bit,
// re-encode); with only 256 inputs that is precomputed once into a table.
const MULAW_TO_ALAW = new Uint8Array(256);
const ALAW_TO_MULAW = new Uint8Array(256);
for (let i = 0; i < 256; i++) {
  MULAW_TO_ALAW[i] = pcm16ToAlawSample(MULAW_TO_PCM16[i]!);
  ALAW_TO_MULAW[i] = pcm16ToMulawSample(ALAW_TO_PCM16[i]!);
}

export function transcode(data: Uint8Array, from: WavEncoding, to: WavEncoding): Buffer {
  for (const e of [from, to]) {
    // Encodings often arrive from a query string; fail loudly on junk.
    if (!ENCODINGS.includes(e)) throw new TypeError(`unknown encoding: ${String(e)}`);
  }
  if (from === 'pcm16' && data.byteLength % 2 !== 0) {
    throw new RangeError(`pcm16 input must have an even byte length, got ${data.byteLength}`);
  }
  if (from === to) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);

  // (Loops are bounded by the input length and the tables cover every byte: hence the `!`s.)
  // Bytes are assembled by hand (little-endian, as in WAV) rather than via an
  // Int16Array view, which would depend on host endianness and alignment.
  if (from === 'pcm16') {
    const encode = to === 'mulaw' ? pcm16ToMulawSample : pcm16ToAlawSample;
    const out = Buffer.allocUnsafe(data.byteLength / 2);
    for (let i = 0; i < out.length; i++) {
      out[i] = encode(((data[2 * i]! | (data[2 * i + 1]! << 8)) << 16) >> 16);
    }
    return out;
  }
  if (to === 'pcm16') {
    const table = from === 'mulaw' ? MULAW_TO_PCM16 : ALAW_TO_PCM16;
    const out = Buffer.allocUnsafe(data.byteLength * 2);
    for (let i = 0; i < data.byteLength; i++) {
      const v = table[data[i]!]!;
      out[2 * i] = v & 0xff;
      out[2 * i + 1] = (v >> 8) & 0xff;
    }
    return out;
  }
  const table = from === 'mulaw' ? MULAW_TO_ALAW : ALAW_TO_MULAW;
  const out = Buffer.allocUnsafe(data.byteLength);
  for (let i = 0; i < data.byteLength; i++) out[i] = table[data[i]!]!;
  return out;
}
