// A two-voice conversation synthesised by ffmpeg's flite filter (Debian's ffmpeg has it): caller
// on the left, agent on the right, taking turns with half-second gaps, quantised to mu-law like
// the calls Twilio sends. Speech, not noise or tones, because codecs spend bits and CPU by
// content. Used by the archive benches.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { buildWavHeader } from '../codecs/wav.js';
import { pcm16ToMulawSample } from '../codecs/g711.js';

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
export async function conversationWav(seconds: number): Promise<Buffer> {
  const caller = await speak(CALLER, 'slt');
  const agent = await speak(AGENT, 'kal');
  const frames = seconds * RATE;
  const data = Buffer.alloc(frames * 2, 0xff); // mu-law silence
  const gap = RATE / 2; // half a second between turns
  let t = 0;
  for (let turn = 0; t < frames; turn++) {
    const voice = turn % 2 === 0 ? agent : caller;
    const ch = turn % 2 === 0 ? 1 : 0;
    for (let i = 0; i < voice.length && t + i < frames; i++) data[2 * (t + i) + ch] = pcm16ToMulawSample(voice[i]!); // i < voice.length
    t += voice.length + gap;
  }
  return Buffer.concat([buildWavHeader({ encoding: 'mulaw', channels: 2, sampleRate: RATE, dataBytes: data.length }), data]);
}
