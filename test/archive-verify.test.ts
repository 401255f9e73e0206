// The archive's verification on its own (make-archive.ts): real archives made by ffmpeg from a
// two-tone WAV, then damaged on disk the ways a disk or a killed process damages files. The
// packets check (used while the WAV is kept) and the full decode (used before the WAV goes)
// must each refuse a damaged archive; only an intact one passes.
import t from 'tap';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildWavHeader } from '../codecs/wav.js';
import { ArchiveVerifyError, checkArchive, makeArchive } from '../recorder/archive/make-archive.js';
import { TONE_HZ, toneTrack } from './fixtures/archive.js';

const FRAMES = 1500; // 30 s: an Ogg Opus file of several pages

async function setup(t: { teardown(fn: () => unknown): void }): Promise<{ dir: string; wav: string; left: Buffer }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'archive-verify-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const left = toneTrack(TONE_HZ.inbound, FRAMES);
  const right = toneTrack(TONE_HZ.outbound, FRAMES);
  const data = Buffer.alloc(left.length * 2);
  for (let i = 0; i < left.length; i++) {
    data[2 * i] = left[i]!;
    data[2 * i + 1] = right[i]!;
  }
  const wav = path.join(dir, 'call.wav');
  await writeFile(wav, Buffer.concat([buildWavHeader({ encoding: 'mulaw', channels: 2, sampleRate: 8000, dataBytes: data.length }), data]));
  return { dir, wav, left };
}

t.test('opus: an intact archive passes both checks with the exact length', async (t) => {
  const { dir, wav } = await setup(t);
  const out = path.join(dir, 'a.opus');
  const made = await makeArchive(wav, 'opus', out, { verify: 'packets' });
  t.equal(made.durationMs, FRAMES * 20, 'packets, less the pre-skip: the very length of the WAV');
  for (const verify of ['packets', 'decode'] as const) {
    const got = await checkArchive(out, 'opus', wav, { verify });
    t.match(got, { channels: 2, sourceFrames: FRAMES * 160 }, verify);
    t.ok(Math.abs(got.frames - FRAMES * 160) <= 160, `${verify}: ${got.frames} frames`);
  }
});

t.test('opus: a damaged page (bad CRC) and a cut file are refused by the packets check and by the decode', async (t) => {
  const { dir, wav } = await setup(t);
  const out = path.join(dir, 'a.opus');
  await makeArchive(wav, 'opus', out, { verify: 'decode' });
  const good = await readFile(out);

  const flipped = Buffer.from(good);
  for (let i = 0; i < 4; i++) flipped[(good.length >> 1) + i]! ^= 0x55;
  await writeFile(out, flipped);
  await t.rejects(checkArchive(out, 'opus', wav, { verify: 'packets' }), ArchiveVerifyError, 'bad CRC: packets check');
  await t.rejects(checkArchive(out, 'opus', wav, { verify: 'decode' }), ArchiveVerifyError, 'bad CRC: decode');

  await writeFile(out, good.subarray(0, good.length >> 1));
  await t.rejects(checkArchive(out, 'opus', wav, { verify: 'packets' }), /failed verification: (page \d+ is cut|no Ogg page|the last page is not marked)/, 'cut in half: packets check');
  await t.rejects(checkArchive(out, 'opus', wav, { verify: 'decode' }), /failed verification: decodes to/, 'cut in half: decode');

  // a whole page missing from the middle (a hole, every remaining page intact)
  const pageStarts: number[] = [];
  for (let i = good.indexOf('OggS'); i >= 0; i = good.indexOf('OggS', i + 1)) pageStarts.push(i);
  t.ok(pageStarts.length > 4, `${pageStarts.length} pages`);
  const mid = pageStarts.length >> 1;
  await writeFile(out, Buffer.concat([good.subarray(0, pageStarts[mid]), good.subarray(pageStarts[mid + 1])]));
  await t.rejects(checkArchive(out, 'opus', wav, { verify: 'packets' }), /page \d+ is missing/, 'a page left out: packets check');

  await writeFile(out, Buffer.concat([good, good.subarray(pageStarts[1], pageStarts[2])]));
  await t.rejects(checkArchive(out, 'opus', wav, { verify: 'packets' }), /after the end-of-stream/, 'data after the end');

  await writeFile(out, good.subarray(0, 20));
  await t.rejects(checkArchive(out, 'opus', wav, { verify: 'packets' }), Error, 'only the start of the first page');
  await writeFile(out, Buffer.alloc(0));
  await t.rejects(checkArchive(out, 'opus', wav, { verify: 'packets' }), Error, 'empty file');
});

// Ogg's CRC-32 (polynomial 0x04c11db7, not reflected, initial 0), to forge a page that passes it
function oggCrc(page: Buffer): number {
  let c = 0;
  for (const byte of page) {
    c ^= byte << 24;
    for (let b = 0; b < 8; b++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
    c >>>= 0;
  }
  return c;
}

t.test('opus: a page intact for Ogg but holding packets that do not decode: only the decode refuses it', async (t) => {
  const { dir, wav } = await setup(t);
  const out = path.join(dir, 'a.opus');
  await makeArchive(wav, 'opus', out, { verify: 'decode' });
  const good = await readFile(out);
  const pageStarts: number[] = [];
  for (let i = good.indexOf('OggS'); i >= 0; i = good.indexOf('OggS', i + 1)) pageStarts.push(i);
  const mid = pageStarts.length >> 1;
  const at = pageStarts[mid]!;
  const end = pageStarts[mid + 1]!;
  const bad = Buffer.from(good);
  const bodyAt = at + 27 + bad[at + 26]!;
  bad.fill(0xff, bodyAt, end); // every packet: TOC code 3 claiming 63 frames (longer than Opus allows)
  bad.writeUInt32LE(0, at + 22);
  bad.writeUInt32LE(oggCrc(bad.subarray(at, end)), at + 22);
  await writeFile(out, bad);
  const got = await checkArchive(out, 'opus', wav, { verify: 'packets' });
  t.equal(got.frames, FRAMES * 160, 'the pages (CRC, sequence, granule positions) are all in order');
  await t.rejects(checkArchive(out, 'opus', wav, { verify: 'decode' }), /failed verification: it does not decode/, 'the decode refuses it');

  // a page left out: the decode's length may still come out whole (timestamps from the granule
  // positions), the page check in the same pass sees the hole
  await writeFile(out, Buffer.concat([good.subarray(0, pageStarts[mid]), good.subarray(pageStarts[mid + 1])]));
  await t.rejects(checkArchive(out, 'opus', wav, { verify: 'decode' }), /failed verification: .*page \d+ is missing/, 'a page left out: decode');
});

t.test('flac: packets mode still decodes and compares every sample; other samples are refused', async (t) => {
  const { dir, wav } = await setup(t);
  const out = path.join(dir, 'a.flac');
  const made = await makeArchive(wav, 'flac', out, { verify: 'packets' });
  t.equal(made.durationMs, FRAMES * 20);
  // a FLAC of other audio with the same length and layout: only a sample comparison sees it
  const other = path.join(dir, 'other.wav');
  const w = await readFile(wav);
  w[w.length - 1]! ^= 0x01; // one sample of the agent's channel, the very last one
  await writeFile(other, w);
  for (const verify of ['packets', 'decode'] as const) {
    await t.rejects(checkArchive(out, 'flac', other, { verify }), /its samples differ from the WAV/, `${verify}: one sample differs`);
  }
});

t.test('mp3: the packets check falls back to a decode (MP3 packets carry encoder delay and padding)', async (t) => {
  const { dir, wav } = await setup(t);
  const out = path.join(dir, 'a.mp3');
  const made = await makeArchive(wav, 'mp3', out, { verify: 'packets' });
  t.ok(Math.abs(made.durationMs - FRAMES * 20) <= 20, `${made.durationMs} ms`);
  const good = await readFile(out);
  await writeFile(out, good.subarray(0, good.length >> 1));
  await t.rejects(checkArchive(out, 'mp3', wav, { verify: 'packets' }), /failed verification: decodes to/, 'cut in half');
});
