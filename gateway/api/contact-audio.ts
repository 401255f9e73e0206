// GET /v1/cti-sessions/:id/audio: one WAV of a whole contact. Every recording of the CTI
// session is placed on the wall clock by its startedAt; gaps between legs are silence. The
// result is always PCM16 stereo 8 kHz (legs overlap in conferences and must be summed, which
// needs linear samples): stereo legs keep left = inbound (caller), right = outbound (agent);
// a mono leg goes to the channel of its track. Paused spans are what the legs hold (silence,
// or cut out with PAUSE_BEHAVIOR=skip, in which case that leg simply ends earlier).
// Streamed one second at a time: memory is bounded whatever the contact's length.
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { buildWavHeader, parseWavHeader, type WavInfo } from '../../codecs/wav.js';
import { MULAW_TO_PCM16, ALAW_TO_PCM16 } from '../../codecs/g711.js';
import type { RecordingIndex } from '../../recorder/recording-index.js';
import type { RecordingSidecar } from '../../recorder/sidecar.js';
import { ApiError } from './errors.js';
import { playableWav } from './archive-audio.js';

const RATE = 8000;
const CHUNK = RATE; // output samples per step

interface Leg {
  sidecar: RecordingSidecar;
  fh: FileHandle;
  info: WavInfo;
  /** first output sample of the leg */
  at: number;
  /** sample frames in its file */
  frames: number;
  /** output channel per file channel */
  target: number[];
}

async function openLeg(s: RecordingSidecar, audioPath: string, t0: number): Promise<Leg> {
  const fh = await open(audioPath, 'r');
  try {
    const { size } = await fh.stat();
    const head = Buffer.alloc(Math.min(size, 4096));
    await fh.read(head, 0, head.length, 0);
    const info = parseWavHeader(head);
    const dataBytes = Math.max(0, Math.min(info.dataBytes, size - info.dataOffset));
    const target = info.channels === 2 ? [0, 1] : [s.tracks[0] === 'outbound' ? 1 : 0];
    return { sidecar: s, fh, info, at: Math.round(((Date.parse(s.startedAt) - t0) * RATE) / 1000), frames: Math.floor(dataBytes / info.blockAlign), target };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

function sample(info: WavInfo, buf: Buffer, i: number): number {
  switch (info.encoding) {
    case 'mulaw': return MULAW_TO_PCM16[buf[i]];
    case 'alaw': return ALAW_TO_PCM16[buf[i]];
    default: return buf.readInt16LE(i * 2);
  }
}

async function* mix(legs: Leg[], total: number): AsyncGenerator<Buffer> {
  const acc = new Int32Array(CHUNK * 2);
  try {
    for (let a = 0; a < total; a += CHUNK) {
      const n = Math.min(CHUNK, total - a);
      acc.fill(0);
      for (const leg of legs) {
        const from = Math.max(a, leg.at);
        const to = Math.min(a + n, leg.at + leg.frames);
        if (from >= to) continue;
        const { blockAlign, dataOffset, channels } = leg.info;
        const buf = Buffer.alloc((to - from) * blockAlign);
        await leg.fh.read(buf, 0, buf.length, dataOffset + (from - leg.at) * blockAlign);
        for (let f = 0; f < to - from; f++) {
          for (let c = 0; c < channels; c++) acc[(from - a + f) * 2 + leg.target[c]] += sample(leg.info, buf, f * channels + c);
        }
      }
      const out = Buffer.alloc(n * 4);
      for (let i = 0; i < n * 2; i++) out.writeInt16LE(Math.max(-32768, Math.min(32767, acc[i])), i * 2);
      yield out;
    }
  } finally {
    await Promise.all(legs.map((l) => l.fh.close()));
  }
}

/** The WAV of a contact as a stream, and its length. */
export async function contactAudio(index: RecordingIndex, ctiSessionId: string): Promise<{ size: number; body: Readable }> {
  const sidecars = index.byCtiSession(ctiSessionId);
  if (sidecars.length === 0) throw new ApiError(404, 'not_found', `no recordings for CTI session ${JSON.stringify(ctiSessionId)}`);
  const t0 = Math.min(...sidecars.map((s) => Date.parse(s.startedAt)));
  const legs: Leg[] = [];
  try {
    for (const s of sidecars) {
      const rec = index.get(s.recordingId);
      if (!rec) continue;
      // a leg whose WAV was removed for its archive is decoded into a temporary file, unlinked once open
      const wav = await playableWav(rec);
      try {
        legs.push(await openLeg(s, wav.path, t0));
      } finally {
        if (wav.temp) await unlink(wav.path).catch(() => undefined);
      }
    }
  } catch (err) {
    await Promise.all(legs.map((l) => l.fh.close()));
    throw new ApiError(500, 'internal', `an audio file of CTI session ${ctiSessionId} cannot be read: ${(err as Error).message}`);
  }
  const total = Math.max(0, ...legs.map((l) => l.at + l.frames));
  const header = buildWavHeader({ encoding: 'pcm16', channels: 2, sampleRate: RATE, dataBytes: total * 4 });
  async function* all(): AsyncGenerator<Buffer> {
    yield header;
    yield* mix(legs, total);
  }
  return { size: header.length + total * 4, body: Readable.from(all(), { objectMode: false }) };
}
