// GET /v1/cti-sessions/:id/audio: one WAV of a whole contact. Every recording of the CTI
// session is placed on the wall clock by its startedAt; gaps between legs are silence. The
// result is always PCM16 stereo 8 kHz (legs overlap in conferences and must be summed, which
// needs linear samples): stereo legs keep left = inbound (caller), right = outbound (agent);
// a mono leg goes to the channel of its track. Paused spans are what the legs hold (silence,
// or cut out with PAUSE_BEHAVIOR=skip, in which case that leg simply ends earlier).
// Streamed one second at a time: memory is bounded whatever the contact's length. Its length is
// known before streaming, so `Range` is honoured (only the frames asked for are mixed), and a
// contact spanning more than MAX_CONTACT_SPAN_S is refused (422) rather than streamed. A leg whose
// WAV was removed for its archive is decoded from the archive (archive-audio.ts).
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { buildWavHeader, parseWavHeader, type WavInfo } from '../../codecs/wav.js';
import { MULAW_TO_PCM16, ALAW_TO_PCM16 } from '../../codecs/g711.js';
import type { Catalog } from '../../recorder/catalog/catalog.js';
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
    case 'mulaw': return MULAW_TO_PCM16[buf[i]!]!; // i < samples read into buf
    case 'alaw': return ALAW_TO_PCM16[buf[i]!]!;
    case 'pcm16': return buf.readInt16LE(i * 2);
  }
}

/**
 * Output frames [from, to) of the contact, one second at a time: each step reads only the part
 * of each leg that falls into it, so a ranged request costs what it returns.
 */
async function* mix(legs: Leg[], from: number, to: number): AsyncGenerator<Buffer> {
  const acc = new Int32Array(CHUNK * 2);
  for (let a = from; a < to; a += CHUNK) {
    const n = Math.min(CHUNK, to - a);
    acc.fill(0);
    for (const leg of legs) {
      const lo = Math.max(a, leg.at);
      const hi = Math.min(a + n, leg.at + leg.frames);
      if (lo >= hi) continue;
      const { blockAlign, dataOffset, channels } = leg.info;
      const buf = Buffer.alloc((hi - lo) * blockAlign);
      await leg.fh.read(buf, 0, buf.length, dataOffset + (lo - leg.at) * blockAlign);
      for (let f = 0; f < hi - lo; f++) {
        for (let c = 0; c < channels; c++) acc[(lo - a + f) * 2 + leg.target[c]!]! += sample(leg.info, buf, f * channels + c);
      }
    }
    const out = Buffer.alloc(n * 4);
    for (let i = 0; i < n * 2; i++) out.writeInt16LE(Math.max(-32768, Math.min(32767, acc[i]!)), i * 2);
    yield out;
  }
}

/** A contact longer than this (first leg start to last leg end) is refused with 422. */
export const MAX_CONTACT_SPAN_S = 12 * 3600;
const BYTES_PER_FRAME = 4; // PCM16 stereo

export interface ByteSpan {
  /** first byte, inclusive */
  start: number;
  /** last byte, inclusive */
  end: number;
}

export interface ContactAudio {
  /** bytes of the whole WAV (header included) */
  size: number;
  /** bytes of the WAV header: the PCM16 stereo samples start here */
  dataOffset: number;
  /** changes whenever a leg is added, removed or re-published */
  etag: string;
  /** bytes start..end (inclusive) of the WAV, streamed; the stream closes the legs' files */
  body(span: ByteSpan): Readable;
  /** close the legs' files when body() is not called (HEAD, 416) */
  close(): Promise<void>;
}

function hours(frames: number): string {
  return (frames / RATE / 3600).toFixed(1);
}

/**
 * The WAV of a contact: its length and ETag are known before a byte is mixed, so a Range is
 * answered by mixing only the frames it covers (bounded memory, whatever the offset).
 */
export async function contactAudio(index: Catalog, ctiSessionId: string, accountSid: string | null = null): Promise<ContactAudio> {
  // a per-source key hears only its account's legs; another account's contact does not exist for it
  const sidecars = (await index.byCtiSession(ctiSessionId)).filter((s) => accountSid === null || s.accountSid === accountSid);
  if (sidecars.length === 0) throw new ApiError(404, 'not_found', `no recordings for CTI session ${JSON.stringify(ctiSessionId)}`);
  const t0 = Math.min(...sidecars.map((s) => Date.parse(s.startedAt)));
  const legs: Leg[] = [];
  let closed: Promise<void> | null = null;
  // read-only handles: a failed close loses nothing, and the answer is already decided
  const close = () => (closed ??= Promise.all(legs.map((l) => l.fh.close().catch(() => undefined))).then(() => undefined));
  try {
    for (const s of sidecars) {
      const rec = await index.get(s.recordingId);
      if (!rec) continue;
      // a leg whose WAV was removed for its archive is decoded into a temporary file, unlinked once open
      const wav = await playableWav(rec);
      try {
        legs.push(await openLeg(s, wav.path, t0));
      } finally {
        // best effort: a leftover .playback-tmp is only disk space (a dot-file no listing shows)
        if (wav.temp) await unlink(wav.path).catch(() => undefined);
      }
    }
  } catch (err) {
    await close();
    if (err instanceof ApiError) throw err; // 503: too many archive decodes at once
    throw new ApiError(500, 'internal', `an audio file of CTI session ${ctiSessionId} cannot be read: ${(err as Error).message}`);
  }
  const total = Math.max(0, ...legs.map((l) => l.at + l.frames));
  if (total > MAX_CONTACT_SPAN_S * RATE) {
    await close();
    // legs hours apart are usually one id reused by several contacts; the legs stay fetchable
    throw new ApiError(422, 'contact_too_long', `CTI session ${JSON.stringify(ctiSessionId)} spans ${hours(total)} h from its first leg's start to its last leg's end; one WAV covers at most ${MAX_CONTACT_SPAN_S / 3600} h of contact. Fetch its legs one by one (GET /v1/cti-sessions/:id lists them, GET /v1/recordings/:id/audio plays each)`);
  }
  const header = buildWavHeader({ encoding: 'pcm16', channels: 2, sampleRate: RATE, dataBytes: total * BYTES_PER_FRAME });
  const h = header.length;
  const etag = `"contact-${createHash('sha256')
    .update(JSON.stringify(legs.map((l) => [l.sidecar.recordingId, l.sidecar.sha256, l.at, l.frames])))
    .digest('hex').slice(0, 32)}"`;

  async function* piece({ start, end }: ByteSpan): AsyncGenerator<Buffer> {
    try {
      if (start < h) yield header.subarray(start, Math.min(end + 1, h));
      const dStart = Math.max(start, h) - h;
      const dEnd = end - h;
      if (dStart > dEnd) return;
      const first = Math.floor(dStart / BYTES_PER_FRAME);
      let skip = dStart - first * BYTES_PER_FRAME;
      let left = dEnd - dStart + 1;
      for await (const chunk of mix(legs, first, Math.floor(dEnd / BYTES_PER_FRAME) + 1)) {
        const part = chunk.subarray(skip, skip + left);
        skip = 0;
        left -= part.length;
        yield part;
      }
    } finally {
      await close();
    }
  }
  return {
    size: h + total * BYTES_PER_FRAME,
    dataOffset: h,
    etag,
    body: (span) => Readable.from(piece(span), { objectMode: false }),
    close,
  };
}
