import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  ALAW_SILENCE,
  ALAW_TO_PCM16,
  MULAW_SILENCE,
  MULAW_TO_PCM16,
  decodeAlaw,
  decodeMulaw,
  encodeAlaw,
  encodeMulaw,
  pcm16ToAlawSample,
  pcm16ToMulawSample,
} from '../codecs/g711.js';

const run = promisify(execFile);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codecs-g711-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const LAWS = [
  { name: 'mu-law', sox: 'mu-law', table: MULAW_TO_PCM16, scalar: pcm16ToMulawSample, encode: encodeMulaw, decode: decodeMulaw },
  { name: 'A-law', sox: 'a-law', table: ALAW_TO_PCM16, scalar: pcm16ToAlawSample, encode: encodeAlaw, decode: decodeAlaw },
] as const;

const ALL_CODES = Uint8Array.from({ length: 256 }, (_, i) => i);
const ALL_INT16 = Int16Array.from({ length: 65536 }, (_, i) => i - 32768);

function int16le(buf: Buffer): Int16Array {
  const out = new Int16Array(buf.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = buf.readInt16LE(i * 2);
  return out;
}

async function sox(name: string, input: Uint8Array, inArgs: string[], outArgs: string[]): Promise<Buffer> {
  const inFile = path.join(dir, `${name}.in.raw`);
  const outFile = path.join(dir, `${name}.out.raw`);
  fs.writeFileSync(inFile, input);
  // -D: sox otherwise dithers when going from 16-bit to 14/13-bit G.711,
  // which adds random noise and makes its output non-reproducible.
  await run('sox', ['-D', '-t', 'raw', ...inArgs, '-r', '8000', '-c', '1', inFile, '-t', 'raw', ...outArgs, outFile]);
  return fs.readFileSync(outFile);
}

for (const law of LAWS) {
  t.test(`${law.name}: all 256 codes decode exactly as sox decodes them`, async (t) => {
    const out = await sox(`dec-${law.sox}`, ALL_CODES, ['-e', law.sox, '-b', '8'], ['-e', 'signed', '-b', '16']);
    t.equal(out.length, 512);
    t.same(Array.from(law.table), Array.from(int16le(out)));
    t.equal(law.table.length, 256);
  });

  t.test(`${law.name}: all 65536 int16 values encode exactly as sox encodes them`, async (t) => {
    const input = Buffer.from(ALL_INT16.buffer, ALL_INT16.byteOffset, ALL_INT16.byteLength);
    const expected = await sox(`enc-${law.sox}`, input, ['-e', 'signed', '-b', '16'], ['-e', law.sox, '-b', '8']);
    t.equal(expected.length, 65536);

    const viaBuffer = new Uint8Array(65536);
    law.encode(ALL_INT16, viaBuffer);
    const viaScalar = Uint8Array.from(ALL_INT16, (s) => law.scalar(s));
    let bufferMismatch = -1;
    let scalarMismatch = -1;
    for (let i = 0; i < 65536; i++) {
      if (bufferMismatch < 0 && viaBuffer[i] !== expected[i]) bufferMismatch = i - 32768;
      if (scalarMismatch < 0 && viaScalar[i] !== expected[i]) scalarMismatch = i - 32768;
    }
    t.equal(bufferMismatch, -1, 'encodeX matches sox for every sample (first mismatching sample shown)');
    t.equal(scalarMismatch, -1, 'scalar encoder matches sox for every sample');
  });

  t.test(`${law.name}: round trips`, async (t) => {
    // code -> pcm -> code is the identity, except mu-law's negative zero
    // (0x7f), which decodes to 0 and re-encodes as positive zero (0xff).
    for (let c = 0; c < 256; c++) {
      const back = law.scalar(law.table[c]!);
      if (law.name === 'mu-law' && c === 0x7f) t.equal(back, 0xff, 'mu-law -0 becomes +0');
      else if (back !== c) t.fail(`code ${c} re-encoded as ${back}`);
    }

    // pcm -> code -> pcm is monotonic, saturates at the extreme levels, and
    // inside the range misses by at most half a quantization step (the
    // larger gap next to the level it lands on) plus the pre-shift rounding.
    const levels = Array.from(new Set(law.table)).sort((a, b) => a - b);
    const lo = levels[0]!;
    const hi = levels[levels.length - 1]!;
    const slack = law.name === 'mu-law' ? 2 : 4;
    let prev = -Infinity;
    let monotonic = true;
    let worst = -Infinity;
    let saturates = true;
    for (const s of ALL_INT16) {
      const d = law.table[law.scalar(s)]!;
      if (d < prev) monotonic = false;
      prev = d;
      if (s < lo || s > hi) {
        if (d !== (s < lo ? lo : hi)) saturates = false;
        continue;
      }
      const k = levels.indexOf(d);
      const gap = Math.max(k > 0 ? d - levels[k - 1]! : 0, k < levels.length - 1 ? levels[k + 1]! - d : 0);
      worst = Math.max(worst, Math.abs(d - s) - gap / 2);
    }
    t.ok(monotonic, 'decode(encode(s)) never decreases as s increases');
    t.ok(saturates, `values beyond ${lo}..${hi} map to the extreme levels`);
    t.ok(worst <= slack, `error <= half step + ${slack} LSB (worst excess ${worst})`);
    t.equal(levels.length, law.name === 'mu-law' ? 255 : 256, 'distinct levels (mu-law has two zeros)');
  });

  t.test(`${law.name}: buffer functions honour dstOffset and bounds`, async (t) => {
    const codes = Uint8Array.of(0x00, 0x7f, 0x80, 0xff, 0x55, 0xd5);
    const pcm = new Int16Array(10).fill(12345);
    law.decode(codes, pcm, 3);
    t.same(Array.from(pcm.subarray(0, 3)), [12345, 12345, 12345], 'before offset untouched');
    t.same(Array.from(pcm.subarray(3, 9)), Array.from(codes, (c) => law.table[c]));
    t.equal(pcm[9], 12345, 'after the written range untouched');

    const bytes = new Uint8Array(8).fill(0xaa);
    law.encode(pcm.subarray(3, 9), bytes, 2);
    t.same(Array.from(bytes.subarray(0, 2)), [0xaa, 0xaa]);
    t.same(Array.from(bytes.subarray(2)), Array.from(pcm.subarray(3, 9), (s) => law.scalar(s)));

    law.decode(codes, new Int16Array(6)); // default offset 0, exact fit
    t.throws(() => law.decode(codes, new Int16Array(5)), RangeError);
    t.throws(() => law.decode(codes, new Int16Array(8), 3), /destination too small/);
    t.throws(() => law.encode(pcm, new Uint8Array(10), -1), RangeError);
    t.throws(() => law.encode(pcm, new Uint8Array(20), 1.5), RangeError);
    t.throws(() => law.encode(pcm, new Uint8Array(9)), RangeError);
  });
}

t.test('silence constants are the encodings of 0', async (t) => {
  t.equal(MULAW_SILENCE, 0xff);
  t.equal(ALAW_SILENCE, 0xd5);
  t.equal(pcm16ToMulawSample(0), MULAW_SILENCE);
  t.equal(pcm16ToAlawSample(0), ALAW_SILENCE);
  t.equal(MULAW_TO_PCM16[MULAW_SILENCE], 0);
  t.equal(ALAW_TO_PCM16[ALAW_SILENCE], 8, 'A-law has no zero level; silence is the +8 level');
});

t.test('sox rounding (not truncation) before the 14/13-bit encoders', async (t) => {
  // Truncating (s >> 2) would give code 0x00 here; sox 14.4.2 rounds to 0x01.
  t.equal(pcm16ToMulawSample(-31610), 0x01);
  t.equal(pcm16ToMulawSample(-31611), 0x00);
  // Truncating (s >> 3) would give 0x2a; sox rounds to 0x2b.
  t.equal(pcm16ToAlawSample(-31748), 0x2b);
  // The top of the range clips rather than wrapping.
  t.equal(pcm16ToMulawSample(32767), 0x80);
  t.equal(pcm16ToMulawSample(-32768), 0x00);
  t.equal(pcm16ToAlawSample(32767), 0xaa);
  t.equal(pcm16ToAlawSample(-32768), 0x2a);
});

t.test('scalar encoders clip out-of-range input and truncate fractions', async (t) => {
  for (const law of LAWS) {
    t.equal(law.scalar(100000), law.scalar(32767), `${law.name} high clip`);
    t.equal(law.scalar(-100000), law.scalar(-32768), `${law.name} low clip`);
    t.equal(law.scalar(1000.9), law.scalar(1000), `${law.name} fraction`);
  }
});
