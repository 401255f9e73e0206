import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  ALAW_TO_PCM16,
  MULAW_TO_PCM16,
  decodeAlaw,
  decodeMulaw,
  encodeAlaw,
  encodeMulaw,
  pcm16ToAlawSample,
  pcm16ToMulawSample,
} from '../codecs/g711.js';
import { bytesPerSample, transcode } from '../codecs/transcode.js';
import type { WavEncoding } from '../codecs/wav.js';

const run = promisify(execFile);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codecs-transcode-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const ENCODINGS: WavEncoding[] = ['mulaw', 'alaw', 'pcm16'];
const SOX_E = { mulaw: 'mu-law', alaw: 'a-law', pcm16: 'signed' } as const;

// Every code twice (so it splits evenly into stereo frames), and every int16.
const CODES = Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 37) % 256));
const PCM = Buffer.alloc(65536 * 2);
for (let i = 0; i < 65536; i++) PCM.writeInt16LE(((i * 40503) % 65536) - 32768, i * 2);
const INPUT: Record<WavEncoding, Buffer> = { mulaw: CODES, alaw: CODES, pcm16: PCM };

/** Expected output computed straight from the g711 tables. */
function viaTables(data: Buffer, from: WavEncoding, to: WavEncoding): Buffer {
  if (from === to) return Buffer.from(data);
  const pcm: number[] =
    from === 'pcm16'
      ? Array.from({ length: data.length / 2 }, (_, i) => data.readInt16LE(i * 2))
      : Array.from(data, (c) => (from === 'mulaw' ? MULAW_TO_PCM16 : ALAW_TO_PCM16)[c]!);
  if (to === 'pcm16') {
    const out = Buffer.alloc(pcm.length * 2);
    pcm.forEach((v, i) => out.writeInt16LE(v, i * 2));
    return out;
  }
  return Buffer.from(pcm.map(to === 'mulaw' ? pcm16ToMulawSample : pcm16ToAlawSample));
}

async function viaSox(data: Buffer, from: WavEncoding, to: WavEncoding): Promise<Buffer> {
  const inFile = path.join(dir, `${from}-${to}.in`);
  const outFile = path.join(dir, `${from}-${to}.out`);
  fs.writeFileSync(inFile, data);
  const spec = (e: WavEncoding) => ['-t', 'raw', '-e', SOX_E[e], '-b', String(bytesPerSample(e) * 8)];
  // Stereo on purpose: interleaving must not matter. -D: no dither.
  await run('sox', ['-D', ...spec(from), '-r', '8000', '-c', '2', inFile, ...spec(to), outFile]);
  return fs.readFileSync(outFile);
}

t.test('bytesPerSample', async (t) => {
  t.equal(bytesPerSample('pcm16'), 2);
  t.equal(bytesPerSample('mulaw'), 1);
  t.equal(bytesPerSample('alaw'), 1);
});

for (const from of ENCODINGS) {
  for (const to of ENCODINGS) {
    t.test(`${from} -> ${to}`, async (t) => {
      const input = INPUT[from];
      const out = transcode(input, from, to);
      t.ok(Buffer.isBuffer(out), 'returns a Buffer');
      t.equal(out.length, (input.length / bytesPerSample(from)) * bytesPerSample(to), 'one sample out per sample in');
      t.same(out, viaTables(input, from, to), 'matches the g711 tables');

      const sox = await viaSox(input, from, to);
      if (from === 'mulaw' && to === 'mulaw') {
        // sox always decodes and re-encodes, which turns mu-law's negative
        // zero (0x7f) into 0xff; identity keeps the stored bytes untouched.
        const differs = [...out.keys()].filter((i) => out[i] !== sox[i]);
        t.ok(differs.length > 0 && differs.every((i) => out[i] === 0x7f && sox[i] === 0xff), 'only -0 differs');
      } else {
        t.same(out, sox, 'matches sox byte for byte');
      }

      t.equal(transcode(new Uint8Array(0), from, to).length, 0, 'empty in, empty out');
    });
  }
}

t.test('identity returns a view over the same bytes', async (t) => {
  for (const e of ENCODINGS) {
    const backing = Buffer.from(INPUT[e]);
    const input = backing.subarray(2, 10);
    const out = transcode(input, e, e);
    t.equal(out.buffer, backing.buffer, `${e}: same memory`);
    t.equal(out.byteOffset, input.byteOffset);
    t.equal(out.length, 8);
  }
  const plain = Uint8Array.of(1, 2, 3);
  const view = transcode(plain, 'alaw', 'alaw');
  plain[0] = 99;
  t.equal(view[0], 99, 'a plain Uint8Array is wrapped, not copied');
});

t.test('pcm16 input at an odd byte offset is read correctly', async (t) => {
  // Subarrays of pooled Buffers can start anywhere; no Int16Array view is used.
  const backing = Buffer.alloc(PCM.length + 1);
  PCM.copy(backing, 1);
  const unaligned = backing.subarray(1);
  t.equal(unaligned.byteOffset % 2, 1);
  t.same(transcode(unaligned, 'pcm16', 'mulaw'), transcode(PCM, 'pcm16', 'mulaw'));
  t.same(transcode(unaligned, 'pcm16', 'alaw'), transcode(PCM, 'pcm16', 'alaw'));
});

t.test('agrees with the streaming encoders/decoders used when recording', async (t) => {
  // A file written by the recorder and played back through transcode must
  // give the same samples as the live path would have.
  const pcm = new Int16Array(65536);
  for (let i = 0; i < pcm.length; i++) pcm[i] = PCM.readInt16LE(i * 2);
  for (const [law, encode, decode] of [
    ['mulaw', encodeMulaw, decodeMulaw],
    ['alaw', encodeAlaw, decodeAlaw],
  ] as const) {
    const codes = new Uint8Array(pcm.length);
    encode(pcm, codes);
    t.same(transcode(PCM, 'pcm16', law), Buffer.from(codes), `${law}: pcm16 -> ${law}`);
    const decoded = new Int16Array(codes.length);
    decode(codes, decoded);
    const le = transcode(codes, law, 'pcm16');
    t.same(Int16Array.from({ length: decoded.length }, (_, i) => le.readInt16LE(i * 2)), decoded, `${law}: ${law} -> pcm16`);
  }
});

t.test('mu-law <-> A-law equals going through pcm16', async (t) => {
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  t.same(transcode(all, 'mulaw', 'alaw'), transcode(transcode(all, 'mulaw', 'pcm16'), 'pcm16', 'alaw'));
  t.same(transcode(all, 'alaw', 'mulaw'), transcode(transcode(all, 'alaw', 'pcm16'), 'pcm16', 'mulaw'));
});

t.test('bad input', async (t) => {
  for (const to of ENCODINGS) {
    t.throws(() => transcode(Buffer.alloc(3), 'pcm16', to), RangeError, `odd pcm16 -> ${to}`);
  }
  t.throws(() => transcode(Buffer.alloc(3), 'pcm16', 'mulaw'), /even byte length, got 3/);
  t.doesNotThrow(() => transcode(Buffer.alloc(3), 'mulaw', 'pcm16'), 'odd length is fine for 8-bit input');
  t.throws(() => transcode(Buffer.alloc(2), 'wav' as WavEncoding, 'pcm16'), /unknown encoding: wav/);
  t.throws(() => transcode(Buffer.alloc(2), 'pcm16', 'opus' as WavEncoding), TypeError);
});
