import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import wavefile from 'wavefile';
import { WavFormatError, buildWavHeader, parseWavHeader, wavHeaderLength, type WavEncoding } from '../codecs/wav.js';

const run = promisify(execFile);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codecs-wav-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const ENCODINGS: WavEncoding[] = ['mulaw', 'alaw', 'pcm16'];
const SOX_ENCODING = { mulaw: 'u-law', alaw: 'A-law', pcm16: 'Signed Integer PCM' } as const;
const SOX_E = { mulaw: 'mu-law', alaw: 'a-law', pcm16: 'signed' } as const;
const FORMAT_TAG = { mulaw: 7, alaw: 6, pcm16: 1 } as const;

async function soxOut(args: string[]): Promise<string> {
  return (await run('sox', args)).stdout.trim();
}

/** A PCM sweep, or every G.711 code (including mu-law's -0, 0x7f). */
function sampleData(encoding: WavEncoding, channels: number): { bytes: Buffer; pcm: number[] } {
  const frames = 300; // even byte count for 8-bit so no pad byte is needed
  const n = frames * channels;
  if (encoding === 'pcm16') {
    const pcm = Array.from({ length: n }, (_, i) => ((i * 2731) % 65536) - 32768);
    const bytes = Buffer.alloc(n * 2);
    pcm.forEach((v, i) => bytes.writeInt16LE(v, i * 2));
    return { bytes, pcm };
  }
  const bytes = Buffer.from(Array.from({ length: n }, (_, i) => (i * 7) % 256));
  return { bytes, pcm: [] }; // decoded values come from sox below
}

function readInt16s(buf: Buffer): number[] {
  return Array.from({ length: buf.length / 2 }, (_, i) => buf.readInt16LE(i * 2));
}

t.test('header lengths are fixed per encoding', async (t) => {
  t.equal(wavHeaderLength('pcm16'), 44);
  t.equal(wavHeaderLength('mulaw'), 58);
  t.equal(wavHeaderLength('alaw'), 58);
  for (const encoding of ENCODINGS) {
    for (const dataBytes of [0, 1, 4000, 0xfffff]) {
      t.equal(buildWavHeader({ encoding, channels: 2, sampleRate: 8000, dataBytes }).length, wavHeaderLength(encoding));
    }
  }
});

for (const encoding of ENCODINGS) {
  for (const channels of [1, 2]) {
    const label = `${encoding} ${channels}ch`;
    const sampleRate = channels === 1 ? 8000 : 16000;
    const { bytes, pcm } = sampleData(encoding, channels);
    const bps = encoding === 'pcm16' ? 2 : 1;
    const file = Buffer.concat([buildWavHeader({ encoding, channels, sampleRate, dataBytes: bytes.length }), bytes]);

    t.test(`${label}: wavefile reads our header`, async (t) => {
      const wav = new wavefile.WaveFile(file);
      const fmt = wav.fmt as Record<string, number>;
      t.equal(wav.container, 'RIFF');
      t.equal(wav.format, 'WAVE');
      t.equal(fmt.audioFormat, FORMAT_TAG[encoding]);
      t.equal(fmt.numChannels, channels);
      t.equal(fmt.sampleRate, sampleRate);
      t.equal(fmt.byteRate, sampleRate * channels * bps);
      t.equal(fmt.blockAlign, channels * bps);
      t.equal(fmt.bitsPerSample, bps * 8);
      t.equal(fmt.chunkSize, encoding === 'pcm16' ? 16 : 18);
      t.equal(wav.bitDepth, { mulaw: '8m', alaw: '8a', pcm16: '16' }[encoding]);
      if (encoding !== 'pcm16') {
        t.equal(fmt.cbSize, 0);
        t.equal((wav.fact as Record<string, number>).dwSampleLength, bytes.length / channels, 'fact = sample frames');
      }
      t.equal((wav.data as { chunkSize: number }).chunkSize, bytes.length);
      t.equal(wav.chunkSize, file.length - 8, 'RIFF size');
      // wavefile returns raw codes for G.711 and int16 values for PCM.
      const expected = encoding === 'pcm16' ? pcm : Array.from(bytes);
      t.same(Array.from(wav.getSamples(true) as unknown as ArrayLike<number>), expected, 'interleaved samples');
    });

    t.test(`${label}: sox reads our header and samples`, async (t) => {
      const wavPath = path.join(dir, `ours-${encoding}-${channels}.wav`);
      const rawPath = path.join(dir, `ours-${encoding}-${channels}.raw`);
      fs.writeFileSync(wavPath, file);
      const [rate, chans, enc, bits, samples] = await Promise.all(
        ['-r', '-c', '-e', '-b', '-s'].map((flag) => soxOut(['--i', flag, wavPath])),
      );
      t.equal(rate, String(sampleRate));
      t.equal(chans, String(channels));
      t.equal(enc, SOX_ENCODING[encoding]);
      t.equal(bits, String(bps * 8));
      t.equal(samples, String(bytes.length / bps / channels), 'sample frames');
      await run('sox', [wavPath, '-t', 'raw', '-e', 'signed', '-b', '16', rawPath]);
      const fromWav = readInt16s(fs.readFileSync(rawPath));
      t.equal(fromWav.length, bytes.length / bps);
      if (encoding === 'pcm16') {
        t.same(fromWav, pcm, 'sox reads back exactly the samples we wrote');
      } else {
        // Same bytes given to sox as headerless raw must decode identically,
        // so the header told sox the right encoding, channels and offset.
        const plainRaw = path.join(dir, `plain-${encoding}-${channels}.raw`);
        const plainPcm = path.join(dir, `plain-${encoding}-${channels}.pcm`);
        fs.writeFileSync(plainRaw, bytes);
        await run('sox', ['-t', 'raw', '-e', SOX_E[encoding], '-b', '8', '-r', String(sampleRate), '-c', String(channels),
          plainRaw, '-t', 'raw', '-e', 'signed', '-b', '16', plainPcm]);
        t.same(fromWav, readInt16s(fs.readFileSync(plainPcm)), 'sox decodes the same samples as from raw');
      }
    });

    t.test(`${label}: header is byte-identical to the one sox writes`, async (t) => {
      // Feed sox the same data raw and let it write the WAV itself.
      const rawPath = path.join(dir, `in-${encoding}-${channels}.raw`);
      const soxPath = path.join(dir, `sox-${encoding}-${channels}.wav`);
      fs.writeFileSync(rawPath, bytes);
      const fmtArgs = ['-e', SOX_E[encoding], '-b', String(bps * 8), '-r', String(sampleRate), '-c', String(channels)];
      await run('sox', ['-D', '-t', 'raw', ...fmtArgs, rawPath, '-t', 'wav', soxPath]);
      const soxFile = fs.readFileSync(soxPath);
      const n = wavHeaderLength(encoding);
      t.same(soxFile.subarray(0, n), file.subarray(0, n));
      // (Data is not compared: sox re-encodes mu-law on the way through and
      // turns negative zero 0x7f into 0xff.)
      t.equal(soxFile.length, file.length);
    });

    t.test(`${label}: parse round trip`, async (t) => {
      t.same(parseWavHeader(file), {
        encoding,
        channels,
        sampleRate,
        bitsPerSample: bps * 8,
        dataOffset: wavHeaderLength(encoding),
        dataBytes: bytes.length,
        blockAlign: channels * bps,
      });
    });
  }
}

t.test('odd G.711 data length: RIFF size counts the pad byte, as sox writes it', async (t) => {
  const rawPath = path.join(dir, 'odd.raw');
  const soxPath = path.join(dir, 'odd.wav');
  fs.writeFileSync(rawPath, Buffer.from([1, 2, 3]));
  await run('sox', ['-t', 'raw', '-e', 'mu-law', '-b', '8', '-r', '8000', '-c', '1', rawPath, soxPath]);
  const soxFile = fs.readFileSync(soxPath);
  const ours = buildWavHeader({ encoding: 'mulaw', channels: 1, sampleRate: 8000, dataBytes: 3 });
  t.same(soxFile.subarray(0, 58), ours);
  t.equal(soxFile.length, 58 + 3 + 1, 'sox appends a pad byte');
  t.equal(ours.readUInt32LE(4), 58 - 8 + 3 + 1);
  t.equal(parseWavHeader(soxFile).dataBytes, 3);
});

t.test('parseWavHeader on sox-made files', async (t) => {
  const rawPath = path.join(dir, 'src.raw');
  fs.writeFileSync(rawPath, Buffer.from(Array.from({ length: 4000 }, (_, i) => i % 256)));
  // 4000 mu-law bytes, read as 1, 2 or 4 interleaved channels.
  const make = async (name: string, channels: number, outArgs: string[]): Promise<Buffer> => {
    const p = path.join(dir, name);
    const inArgs = ['-t', 'raw', '-e', 'mu-law', '-b', '8', '-r', '8000', '-c', String(channels), rawPath];
    await run('sox', ['-D', ...inArgs, ...outArgs, p]);
    return fs.readFileSync(p);
  };
  const [ext4, mu4, alaw2, pcm1] = await Promise.all([
    // sox writes >2 channels as WAVE_FORMAT_EXTENSIBLE plus a fact chunk.
    make('ext4.wav', 4, ['-e', 'signed', '-b', '16']),
    make('mu4.wav', 4, ['-e', 'mu-law']),
    make('alaw2.wav', 2, ['-r', '16000', '-e', 'a-law']),
    make('pcm1.wav', 1, ['-e', 'signed', '-b', '16']),
  ]);
  t.equal(ext4.readUInt16LE(20), 0xfffe, 'really extensible');
  t.equal(ext4.toString('latin1', 60, 64), 'fact', 'really has an extra chunk before data');
  t.same(parseWavHeader(ext4), {
    encoding: 'pcm16', channels: 4, sampleRate: 8000, bitsPerSample: 16,
    dataOffset: 80, dataBytes: 8000, blockAlign: 8,
  });
  t.same(parseWavHeader(mu4), {
    encoding: 'mulaw', channels: 4, sampleRate: 8000, bitsPerSample: 8,
    dataOffset: 58, dataBytes: 4000, blockAlign: 4,
  });
  const a = parseWavHeader(alaw2);
  t.same([a.encoding, a.channels, a.sampleRate, a.blockAlign], ['alaw', 2, 16000, 2]);
  t.equal(a.dataOffset + a.dataBytes, alaw2.length, 'data runs to end of file');
  t.same(parseWavHeader(pcm1), {
    encoding: 'pcm16', channels: 1, sampleRate: 8000, bitsPerSample: 16,
    dataOffset: 44, dataBytes: 8000, blockAlign: 2,
  });

  // Splice an odd-sized LIST chunk (plus pad byte) and a bext chunk in front
  // of data; sox must still read it and so must we.
  const list = Buffer.concat([Buffer.from('LIST'), u32(5), Buffer.from('INFOx'), Buffer.from([0])]);
  const bext = Buffer.concat([Buffer.from('bext'), u32(4), Buffer.from([9, 9, 9, 9])]);
  const head = pcm1.subarray(0, 36);
  const spliced = Buffer.concat([head, list, bext, pcm1.subarray(36)]);
  spliced.writeUInt32LE(spliced.length - 8, 4);
  const splicedPath = path.join(dir, 'spliced.wav');
  fs.writeFileSync(splicedPath, spliced);
  t.equal(await soxOut(['--i', '-s', splicedPath]), '4000', 'sox accepts the spliced file');
  const s = parseWavHeader(spliced);
  t.equal(s.dataOffset, 44 + list.length + bext.length);
  t.equal(s.dataBytes, 8000);
  t.same(spliced.subarray(s.dataOffset, s.dataOffset + 16), pcm1.subarray(44, 60), 'offset points at the samples');

  // Only the first part of a file: data size exceeds what we were given.
  const firstKb = ext4.subarray(0, 1024);
  const p = parseWavHeader(firstKb);
  t.equal(p.dataBytes, 8000);
  t.ok(p.dataOffset + p.dataBytes > firstKb.length);
  // Buffer ends right after the data chunk header.
  t.equal(parseWavHeader(mu4.subarray(0, 58)).dataBytes, 4000);
});

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

t.test('parseWavHeader rejects what it cannot play', async (t) => {
  const good = buildWavHeader({ encoding: 'pcm16', channels: 1, sampleRate: 8000, dataBytes: 0 });
  const patched = (at: number, write: (b: Buffer) => void, base = good): Buffer => {
    const b = Buffer.from(base);
    write(b.subarray(at));
    return b;
  };
  const bad: [string, Buffer, RegExp][] = [
    ['empty', Buffer.alloc(0), /too short for a RIFF header/],
    ['RIFX', patched(0, (b) => b.write('RIFX')), /not a RIFF\/WAVE file: found "RIFX"/],
    ['RF64', patched(0, (b) => b.write('RF64')), /not a RIFF\/WAVE file/],
    ['AVI', patched(8, (b) => b.write('AVI ')), /found "RIFF"\/"AVI "/],
    ['text', Buffer.from('hello, this is not audio at all'), /not a RIFF\/WAVE file/],
    ['no fmt', Buffer.concat([good.subarray(0, 12), Buffer.from('LIST'), u32(0)]), /no fmt chunk within the first 20 bytes/],
    ['no data', good.subarray(0, 36), /no data chunk within the first 36 bytes/],
    ['data first', Buffer.concat([good.subarray(0, 12), good.subarray(36)]), /data chunk found before any fmt chunk/],
    ['fmt too small', patched(16, (b) => b.writeUInt32LE(14)), /fmt chunk too small: 14 bytes/],
    ['fmt truncated', good.subarray(0, 30), /fmt chunk truncated/],
    ['float', patched(20, (b) => b.writeUInt16LE(3)), /unsupported WAV format: format tag 3 \(IEEE float\) with 16 bits/],
    ['8-bit PCM', patched(34, (b) => b.writeUInt16LE(8)), /format tag 1 \(PCM\) with 8 bits/],
    ['16-bit mu-law', patched(20, (b) => b.writeUInt16LE(7)), /format tag 7 \(mu-law\) with 16 bits/],
    ['odd tag', patched(20, (b) => b.writeUInt16LE(0x55)), /format tag 85 \(unknown\)/],
    ['0 channels', patched(22, (b) => b.writeUInt16LE(0)), /0 channels/],
    ['0 Hz', patched(24, (b) => b.writeUInt32LE(0)), /sample rate of 0/],
    ['blockAlign', patched(32, (b) => b.writeUInt16LE(3)), /blockAlign is 3, expected 2/],
    ['short extensible', patched(20, (b) => b.writeUInt16LE(0xfffe)), /extensible fmt chunk too small: 16 bytes/],
  ];
  for (const [name, buf, message] of bad) {
    t.throws(() => parseWavHeader(buf), message, name);
    t.throws(() => parseWavHeader(buf), WavFormatError, `${name} is a WavFormatError`);
  }
  const err = (() => {
    try {
      parseWavHeader(Buffer.alloc(0));
    } catch (e) {
      return e;
    }
  })();
  t.ok(err instanceof Error && err.name === 'WavFormatError', 'name is set for logs');

  // Formats sox can write that we do not store: IEEE float and 24-bit
  // (the latter as WAVE_FORMAT_EXTENSIBLE with a PCM sub-format).
  const rawPath = path.join(dir, 'x.raw');
  fs.writeFileSync(rawPath, Buffer.alloc(64, 0xff));
  const src = ['-t', 'raw', '-e', 'mu-law', '-b', '8', '-r', '8000', '-c', '1', rawPath];
  await Promise.all([
    run('sox', [...src, '-e', 'float', path.join(dir, 'f.wav')]),
    run('sox', [...src, '-e', 'signed', '-b', '24', path.join(dir, 's24.wav')]),
  ]);
  t.throws(() => parseWavHeader(fs.readFileSync(path.join(dir, 'f.wav'))), /format tag 3 \(IEEE float\) with 32 bits/);
  t.throws(() => parseWavHeader(fs.readFileSync(path.join(dir, 's24.wav'))), /format tag 1 \(PCM\) with 24 bits/);
});

t.test('buildWavHeader validates its input', async (t) => {
  const ok = { encoding: 'mulaw' as WavEncoding, channels: 1, sampleRate: 8000, dataBytes: 0 };
  const cases: [string, object, RegExp][] = [
    ['channels 0', { channels: 0 }, /channels must be an integer in \[1, 65535\], got 0/],
    ['channels 1.5', { channels: 1.5 }, /channels/],
    ['channels 70000', { channels: 70000 }, /channels/],
    ['sampleRate 0', { sampleRate: 0 }, /sampleRate/],
    ['sampleRate NaN', { sampleRate: NaN }, /sampleRate/],
    ['byte rate overflow', { encoding: 'pcm16', channels: 2, sampleRate: 0xffffffff }, /byte rate/],
    ['dataBytes negative', { dataBytes: -1 }, /dataBytes/],
    ['dataBytes fractional', { dataBytes: 10.5 }, /dataBytes/],
    ['dataBytes beyond 4 GiB', { dataBytes: 0xffffffff }, /dataBytes/],
  ];
  for (const [name, patch, message] of cases) {
    t.throws(() => buildWavHeader({ ...ok, ...patch }), RangeError, name);
    t.throws(() => buildWavHeader({ ...ok, ...patch }), message, name);
  }
  // Largest sizes that still fit the 32-bit RIFF size field.
  // (RIFF sizes are effectively even, so the maximum is 0xfffffffe.)
  t.equal(buildWavHeader({ ...ok, dataBytes: 0xffffffff - 50 - 1 }).readUInt32LE(4), 0xfffffffe);
  t.equal(buildWavHeader({ ...ok, dataBytes: 0xffffffff - 50 - 2 }).readUInt32LE(4), 0xfffffffe, 'odd, with pad');
  t.equal(buildWavHeader({ ...ok, encoding: 'pcm16', dataBytes: 0xffffffff - 36 - 1 }).readUInt32LE(4), 0xfffffffe);
  t.throws(() => buildWavHeader({ ...ok, dataBytes: 0xffffffff - 50 }), RangeError, 'odd size whose pad byte would overflow');

  t.throws(() => wavHeaderLength('opus' as WavEncoding), TypeError);
  t.throws(() => buildWavHeader({ ...ok, encoding: 'toString' as WavEncoding }), /unknown WAV encoding: toString/);
});
