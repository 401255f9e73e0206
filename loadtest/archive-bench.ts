// npm run bench:archive [-- --minutes 10]
//
// Archive figures (BENCHMARKS.md): for each ARCHIVE_FORMAT, bytes per hour of stereo call audio
// against mu-law WAV, and CPU seconds per hour of audio archived — the whole job as the pool
// runs it (G.711 decode and feeding in this process, ffmpeg encode, ffmpeg verification decode,
// sha256), counted as CPU time of this process plus its reaped children (ffmpeg), so a busy
// shared machine inflates it far less than wall time. From that: whether one pool worker
// (ARCHIVE_CONCURRENCY=1, one core) keeps up with 300 concurrent calls ending every 5 minutes.
//
// The audio is a two-voice conversation synthesised by ffmpeg's flite filter (Debian's ffmpeg
// has it): caller on the left, agent on the right, taking turns, quantised to mu-law like the
// calls Twilio sends. Speech, not noise or tones, because codecs spend bits and CPU by content.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { buildWavHeader } from '../codecs/wav.js';
import { pcm16ToMulawSample } from '../codecs/g711.js';
import { inspectArchive, makeArchive } from '../recorder/archive/make-archive.js';
import { ARCHIVE_FORMATS, formatSpec } from '../recorder/archive/formats.js';

const run = promisify(execFile);
const RATE = 8000;

const CALLER = 'Hi. Yes, my account number is four five seven two nine one. I was charged twice for my last order, ' +
  'once on Monday and again on Wednesday, and I would like a refund for the second charge please.';
const AGENT = 'Thank you for calling the support line. My name is Alex and I will be helping you today. ' +
  'I can see both charges on your account. I have started the refund for the second one; it will take three to five days.';

/** Mono PCM16 at 8 kHz of `text` spoken by a flite voice. */
async function speak(text: string, voice: string): Promise<Int16Array> {
  const { stdout } = await run('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', `flite=text='${text}':voice=${voice}`, '-ar', String(RATE), '-ac', '1', '-f', 's16le', 'pipe:1'], {
    encoding: 'buffer', maxBuffer: 64 * 1024 * 1024,
  });
  const b = stdout as unknown as Buffer;
  return new Int16Array(b.buffer, b.byteOffset, b.length / 2);
}

/** `seconds` of a conversation as a stereo mu-law WAV (interleaved, left = caller). */
async function conversationWav(seconds: number): Promise<Buffer> {
  const caller = await speak(CALLER, 'slt');
  const agent = await speak(AGENT, 'kal');
  const frames = seconds * RATE;
  const data = Buffer.alloc(frames * 2, 0xff); // mu-law silence
  const gap = RATE / 2; // half a second between turns
  let t = 0;
  for (let turn = 0; t < frames; turn++) {
    const voice = turn % 2 === 0 ? agent : caller;
    const ch = turn % 2 === 0 ? 1 : 0;
    for (let i = 0; i < voice.length && t + i < frames; i++) data[2 * (t + i) + ch] = pcm16ToMulawSample(voice[i]!);
    t += voice.length + gap;
  }
  return Buffer.concat([buildWavHeader({ encoding: 'mulaw', channels: 2, sampleRate: RATE, dataBytes: data.length }), data]);
}

const CLK_TCK = 100; // Linux USER_HZ
/** CPU seconds of this process's reaped children (ffmpeg), from /proc/self/stat (cutime + cstime). */
async function childCpuS(): Promise<number> {
  const stat = await readFile('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // after "pid (comm) ", field 3 is f[0]; cutime and cstime are fields 16 and 17
  return (Number(f[13]) + Number(f[14])) / CLK_TCK;
}

function ownCpuS(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function main(): Promise<void> {
  const argMin = process.argv.indexOf('--minutes');
  const minutes = argMin > 0 ? Number(process.argv[argMin + 1]) : 10;
  if (!Number.isFinite(minutes) || minutes <= 0) throw new Error('--minutes must be a positive number');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'archive-bench-'));
  try {
    const wav = await conversationWav(minutes * 60);
    const wavPath = path.join(dir, 'call.wav');
    await writeFile(wavPath, wav);
    const audioH = minutes / 60;
    const wavPerHour = wav.length / audioH;
    const rows: Array<Record<string, number | string>> = [];
    for (const format of ARCHIVE_FORMATS) {
      const own0 = ownCpuS();
      const kids0 = await childCpuS();
      const wall0 = performance.now();
      const made = await makeArchive(wavPath, format, path.join(dir, `call.${formatSpec(format).ext}`));
      const wallS = (performance.now() - wall0) / 1000;
      const own = ownCpuS() - own0;
      const kids = (await childCpuS()) - kids0;
      const cpuPerH = (own + kids) / audioH;
      // the verification decode alone (it is part of the job above), to show the split
      const v0 = ownCpuS() + (await childCpuS());
      await inspectArchive(path.join(dir, `call.${formatSpec(format).ext}`));
      const verifyPerH = (ownCpuS() + (await childCpuS()) - v0) / audioH;
      rows.push({
        format,
        bytesPerHour: Math.round(made.bytes / audioH),
        ratioToMulawWav: Number((wavPerHour / (made.bytes / audioH)).toFixed(1)),
        cpuSPerAudioHour: Number(cpuPerH.toFixed(1)),
        ffmpegCpuSPerAudioHour: Number((kids / audioH).toFixed(1)),
        nodeCpuSPerAudioHour: Number((own / audioH).toFixed(1)),
        verifyCpuSPerAudioHour: Number(verifyPerH.toFixed(1)),
        wallS: Number(wallS.toFixed(1)),
        // ARCHIVE_CONCURRENCY=1: one job at a time, one core
        audioHoursPerHourOneWorker: Number((3600 / cpuPerH).toFixed(0)),
      });
    }
    // 300 concurrent calls, each ending (and replaced) every 5 minutes: 300 x 12 calls x 5 min
    const needed = (300 * 12 * 5) / 60;
    console.log(`# archive bench: ${minutes} min of stereo speech, mu-law WAV ${Math.round(wavPerHour)} bytes per hour`);
    console.log('| format | bytes per audio hour | WAV / archive | CPU s per audio hour (ffmpeg + node) | of which verification decode | audio h per h, 1 worker | keeps up with 300 calls / 5 min (300 audio h per h) |');
    console.log('|---|---|---|---|---|---|---|');
    for (const r of rows) {
      const per = Number(r.audioHoursPerHourOneWorker);
      const keeps = per >= needed ? 'yes' : `no: needs ARCHIVE_CONCURRENCY >= ${Math.ceil(needed / per)} (cores)`;
      console.log(`| ${r.format} | ${r.bytesPerHour} | ${r.ratioToMulawWav} | ${r.cpuSPerAudioHour} (${r.ffmpegCpuSPerAudioHour} + ${r.nodeCpuSPerAudioHour}) | ${r.verifyCpuSPerAudioHour} | ${per} | ${keeps} |`);
    }
    console.log(JSON.stringify({ minutes, wavBytesPerHour: Math.round(wavPerHour), neededAudioHoursPerHour: needed, rows }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
