/**
 * G.711 mu-law and A-law, table driven and bit-exact with SoX 14.4.2.
 *
 * SoX uses the Sun g711.c reference routines (sox_14linear2ulaw,
 * sox_13linear2alaw, sox_ulaw2linear16, sox_alaw2linear16), but SoX 14.4.2
 * feeds the encoders a *rounded* value, not a truncated one:
 *
 *   ulaw: sox_14linear2ulaw(SOX_SAMPLE_TO_UNSIGNED(14, d) - 0x2000)
 *   alaw: sox_13linear2alaw(SOX_SAMPLE_TO_UNSIGNED(13, d) - 0x1000)
 *
 * For a 16-bit sample s that is min((s + 2) >> 2, 8191) for mu-law and
 * min((s + 4) >> 3, 4095) for A-law (round half up, clip at the top).
 * Older SoX used a plain s >> 2 / s >> 3; that differs for 508 (mu-law) and
 * 1020 (A-law) of the 65536 inputs, so we follow what the installed SoX does.
 * (Comparing against sox also needs `sox -D`: by default it dithers when
 * reducing 16-bit PCM to 14/13-bit G.711, which makes its output random.)
 */

const QUANT_MASK = 0x0f;
const SEG_SHIFT = 4;
const SEG_MASK = 0x70;
const SIGN_BIT = 0x80;
const ULAW_BIAS = 0x84;
const ULAW_CLIP = 8159; // 14-bit magnitude limit in the Sun code

// Segment end points, 14-bit (mu-law) and 13-bit (A-law) magnitudes.
const SEG_UEND = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
const SEG_AEND = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

export const MULAW_SILENCE = 0xff;
export const ALAW_SILENCE = 0xd5;

function segment(v: number, ends: readonly number[]): number {
  let i = 0;
  while (i < ends.length && v > ends[i]!) i++;
  return i;
}

/** Sun sox_14linear2ulaw: input is a 14-bit signed value. */
function linear14ToUlaw(pcm: number): number {
  let mask: number;
  if (pcm < 0) {
    pcm = -pcm;
    mask = 0x7f;
  } else {
    mask = 0xff;
  }
  if (pcm > ULAW_CLIP) pcm = ULAW_CLIP;
  pcm += ULAW_BIAS >> 2;
  const seg = segment(pcm, SEG_UEND);
  // 8159 + bias = 8192 is past the last segment: the reference saturates.
  if (seg >= 8) return 0x7f ^ mask;
  return ((seg << SEG_SHIFT) | ((pcm >> (seg + 1)) & QUANT_MASK)) ^ mask;
}

/** Sun sox_13linear2alaw: input is a 13-bit signed value. */
function linear13ToAlaw(pcm: number): number {
  let mask: number;
  if (pcm >= 0) {
    mask = 0xd5;
  } else {
    mask = 0x55;
    pcm = -pcm - 1; // one's-complement magnitude, as in the reference
  }
  // Inputs are clipped to 4095 before this, so seg is always < 8.
  const seg = segment(pcm, SEG_AEND);
  const quant = seg < 2 ? (pcm >> 1) & QUANT_MASK : (pcm >> seg) & QUANT_MASK;
  return ((seg << SEG_SHIFT) | quant) ^ mask;
}

function ulawToLinear16(u: number): number {
  u = ~u & 0xff;
  let t = ((u & QUANT_MASK) << 3) + ULAW_BIAS;
  t <<= (u & SEG_MASK) >> SEG_SHIFT;
  return u & SIGN_BIT ? ULAW_BIAS - t : t - ULAW_BIAS;
}

function alawToLinear16(a: number): number {
  a ^= 0x55;
  let t = (a & QUANT_MASK) << 4;
  const seg = (a & SEG_MASK) >> SEG_SHIFT;
  if (seg === 0) t += 8;
  else if (seg === 1) t += 0x108;
  else t = (t + 0x108) << (seg - 1);
  return a & SIGN_BIT ? t : -t;
}

export const MULAW_TO_PCM16: Int16Array = new Int16Array(256);
export const ALAW_TO_PCM16: Int16Array = new Int16Array(256);
for (let i = 0; i < 256; i++) {
  MULAW_TO_PCM16[i] = ulawToLinear16(i);
  ALAW_TO_PCM16[i] = alawToLinear16(i);
}

// Encode tables indexed by the rounded shifted value plus an offset:
// (s + 2) >> 2 spans -8192..8192 and (s + 4) >> 3 spans -4096..4096.
// The one top entry holds the clipped code, so lookups need no branch.
const ULAW_OFFSET = 8192;
const ALAW_OFFSET = 4096;
const ULAW_ENCODE = new Uint8Array(2 * ULAW_OFFSET + 1);
const ALAW_ENCODE = new Uint8Array(2 * ALAW_OFFSET + 1);
for (let v = -ULAW_OFFSET; v <= ULAW_OFFSET; v++) {
  ULAW_ENCODE[v + ULAW_OFFSET] = linear14ToUlaw(Math.min(v, 8191));
}
for (let v = -ALAW_OFFSET; v <= ALAW_OFFSET; v++) {
  ALAW_ENCODE[v + ALAW_OFFSET] = linear13ToAlaw(Math.min(v, 4095));
}

// Out-of-range or fractional input is clipped/truncated to int16 first,
// the way SoX clips before encoding.
function toInt16(s: number): number {
  return Math.max(-32768, Math.min(32767, s)) | 0;
}

export function pcm16ToMulawSample(s: number): number {
  return ULAW_ENCODE[((toInt16(s) + 2) >> 2) + ULAW_OFFSET]!;
}

export function pcm16ToAlawSample(s: number): number {
  return ALAW_ENCODE[((toInt16(s) + 4) >> 3) + ALAW_OFFSET]!;
}

// A bounds check is cheap and turns a silent short write into an error.
function checkRoom(srcLen: number, dstLen: number, dstOffset: number): void {
  if (!Number.isInteger(dstOffset) || dstOffset < 0 || dstOffset + srcLen > dstLen) {
    throw new RangeError(
      `destination too small: need ${srcLen} samples at offset ${dstOffset}, destination holds ${dstLen}`,
    );
  }
}

// Buffer functions write into caller-owned memory: the ingest path calls
// them per media frame and must not allocate.

export function decodeMulaw(src: Uint8Array, dst: Int16Array, dstOffset = 0): void {
  checkRoom(src.length, dst.length, dstOffset);
  for (let i = 0; i < src.length; i++) dst[dstOffset + i] = MULAW_TO_PCM16[src[i]!]!;
}

export function decodeAlaw(src: Uint8Array, dst: Int16Array, dstOffset = 0): void {
  checkRoom(src.length, dst.length, dstOffset);
  for (let i = 0; i < src.length; i++) dst[dstOffset + i] = ALAW_TO_PCM16[src[i]!]!;
}

// Int16Array elements are always in range, so the table is indexed directly.
// (The `!`s below: loops are bounded by src.length and every byte/int16 maps into a full table.)
export function encodeMulaw(src: Int16Array, dst: Uint8Array, dstOffset = 0): void {
  checkRoom(src.length, dst.length, dstOffset);
  for (let i = 0; i < src.length; i++) {
    dst[dstOffset + i] = ULAW_ENCODE[((src[i]! + 2) >> 2) + ULAW_OFFSET]!;
  }
}

export function encodeAlaw(src: Int16Array, dst: Uint8Array, dstOffset = 0): void {
  checkRoom(src.length, dst.length, dstOffset);
  for (let i = 0; i < src.length; i++) {
    dst[dstOffset + i] = ALAW_ENCODE[((src[i]! + 4) >> 3) + ALAW_OFFSET]!;
  }
}
