// Playback API over the recording catalog (contract sections 4 and 8): list and fetch sidecars, stream
// the audio with Range support, convert the encoding on the fly.
import { open, type FileHandle } from 'node:fs/promises';
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { buildWavHeader, parseWavHeader, type WavEncoding } from '../../codecs/wav.js';
import { bytesPerSample, transcode } from '../../codecs/transcode.js';
import { decodeCursor, type Catalog, type IndexedRecording } from '../../recorder/catalog/catalog.js';
import { ACCOUNT_SID_RE, CALL_SID_RE, RECORDING_ID_RE } from '../../recorder/storage-layout.js';
import { ApiError } from './errors.js';
import { contactAudio, type ContactAudio } from './contact-audio.js';
import { archivePath, assertConversionSlot, convertRecording, decodedArchivePcm, encodePcm } from './archive-audio.js';
import { ARCHIVE_FORMATS, formatSpec, isArchiveFormat, type ArchiveFormat } from '../../recorder/archive/formats.js';
import { accessOf, canSee } from './api-auth.js';
import { clipId } from '../../recorder/ingest-limits.js';
import type { ApiInstance } from './v1-scope.js';

export interface RecordingRoutesOptions {
  index: Catalog;
}

const MAX_LIMIT = 1000;
const DEFAULT_LIMIT = 100;
/** How much of a WAV file is read to find its data chunk (ours are 44 or 58 bytes). */
const HEADER_PROBE_BYTES = 64 * 1024;
/** WAV encodings to convert to; `wav` is the WAV as stored */
const WAV_FORMATS = ['pcm16', 'mulaw', 'wav'] as const;
const AUDIO_FORMATS = [...WAV_FORMATS, ...ARCHIVE_FORMATS] as const;
type AudioFormat = 'pcm16' | 'mulaw';

const CLOSE_REASONS = ['stop', 'hangup', 'idle', 'rotate', 'long_call', 'shutdown', 'recovered'] as const;

const ListQuery = Type.Object({
  callSid: Type.Optional(Type.String({ pattern: CALL_SID_RE.source })),
  // no maxLength: a longer value is clipped as it was at ingest (recorder/ingest-limits.ts)
  ctiSessionId: Type.Optional(Type.String({ minLength: 1 })),
  employeeId: Type.Optional(Type.String({ minLength: 1 })),
  from: Type.Optional(Type.String({ format: 'date-time' })),
  to: Type.Optional(Type.String({ format: 'date-time' })),
  limit: Type.Integer({ minimum: 1, maximum: MAX_LIMIT, default: DEFAULT_LIMIT }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
  accountSid: Type.Optional(Type.String({ pattern: ACCOUNT_SID_RE.source })),
  closeReason: Type.Optional(Type.Union(CLOSE_REASONS.map((r) => Type.Literal(r)))),
  /** durationMs >= this */
  minDurationMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 7 * 24 * 3600 * 1000 })),
  /** true: the page also carries `total`, every match on all pages */
  count: Type.Optional(Type.Boolean()),
});

const IdParams = Type.Object({ id: Type.String() });
type IdParams = Static<typeof IdParams>;

const AudioQuery = Type.Object({ format: Type.Optional(Type.String()) });
type AudioQuery = Static<typeof AudioQuery>;

const CtiParams = Type.Object({ ctiSessionId: Type.String({ minLength: 1 }) });

/**
 * A preValidation hook refusing query parameters the route does not know: a misspelt filter
 * (`?employee=`) must not quietly return every recording.
 */
function onlyQueryParams(allowed: readonly string[]) {
  return async (request: FastifyRequest): Promise<void> => {
    const unknown = Object.keys(request.query as object).filter((k) => !allowed.includes(k));
    if (unknown.length > 0) {
      throw new ApiError(400, 'bad_request', `unknown query parameter(s) ${unknown.map((k) => JSON.stringify(k)).join(', ')}; allowed: ${allowed.join(', ')}`);
    }
  };
}

function parseDate(name: string, value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw new ApiError(400, 'bad_request', `${name} ${JSON.stringify(value)} is not a valid date-time`);
  return d;
}

/** A recording the caller may see: another account's is answered 404, like a missing one. */
async function lookup(index: Catalog, id: string, request: FastifyRequest): Promise<IndexedRecording> {
  if (!RECORDING_ID_RE.test(id)) {
    throw new ApiError(400, 'bad_request', `recording id ${JSON.stringify(id.slice(0, 80))} is malformed: expected MZ followed by 32 hex digits, "-" and a 4-digit segment index`);
  }
  const rec = await index.get(id);
  if (!rec || !canSee(accessOf(request), rec.sidecar.accountSid)) throw new ApiError(404, 'not_found', `no recording with id ${id}`);
  return rec;
}

// ---------------------------------------------------------------------------------------------
// Range (RFC 9110 section 14)

export interface ByteRange {
  /** first byte, inclusive */
  start: number;
  /** last byte, inclusive */
  end: number;
}

/**
 * A single `bytes=` range against a representation of `size` bytes. Returns null when the header
 * is to be ignored (absent, malformed, another unit, several ranges: the whole body is sent) and
 * 'unsatisfiable' when it is well formed but selects nothing.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | null {
  if (header === undefined) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const last = m[2] === '' ? Infinity : Number(m[2]);
  if (last < start) return null; // invalid: the header is ignored
  if (start >= size) return 'unsatisfiable';
  return { start, end: Math.min(last, size - 1) };
}

/** Strong comparison of an ETag list (If-None-Match) against ours. */
function etagListMatches(header: string, etag: string): boolean {
  return header.trim() === '*' || header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

// ---------------------------------------------------------------------------------------------
// Representations of a recording's audio: the file as stored, or converted to another encoding.

interface Representation {
  size: number;
  etag: string;
  /**
   * The bytes start..end (inclusive). A returned stream owns `fh` and closes it when it ends or
   * is destroyed; with a Buffer the caller still owns `fh`.
   */
  body(fh: FileHandle, range: ByteRange): Readable | Buffer;
}

function storedFile(size: number, etag: string): Representation {
  return {
    size,
    etag,
    body: (fh, { start, end }) => fh.createReadStream({ start, end }),
  };
}

/**
 * Converts the samples of a source byte range (which starts and ends on sample boundaries),
 * drops `skip` leading output bytes, passes on exactly `length` bytes, and wraps the result in
 * `prefix` (part of the new header) and `suffix` (the RIFF pad byte).
 */
export class TranscodeSlice extends Transform {
  #carry: Buffer | null = null;
  #skip: number;
  #remaining: number;
  readonly #from: WavEncoding;
  readonly #to: WavEncoding;
  readonly #suffix: Buffer;

  constructor(from: WavEncoding, to: WavEncoding, skip: number, length: number, prefix: Buffer, suffix: Buffer) {
    super();
    this.#from = from;
    this.#to = to;
    this.#skip = skip;
    this.#remaining = length;
    this.#suffix = suffix;
    if (prefix.length > 0) this.push(prefix);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const buf = this.#carry ? Buffer.concat([this.#carry, chunk]) : chunk;
    const usable = buf.length - (buf.length % bytesPerSample(this.#from));
    this.#carry = usable < buf.length ? buf.subarray(usable) : null;
    let out = transcode(buf.subarray(0, usable), this.#from, this.#to);
    const skip = Math.min(this.#skip, out.length);
    this.#skip -= skip;
    out = out.subarray(skip, skip + this.#remaining);
    this.#remaining -= out.length;
    callback(null, out.length > 0 ? out : undefined);
  }

  override _flush(callback: TransformCallback): void {
    if (this.#remaining !== 0) {
      callback(new Error(`audio file ended ${this.#remaining} converted bytes early`));
      return;
    }
    callback(null, this.#suffix.length > 0 ? this.#suffix : undefined);
  }
}

function converted(source: ReturnType<typeof parseWavHeader>, fileSize: number, to: AudioFormat, etag: string): Representation {
  const from = source.encoding;
  const srcBps = bytesPerSample(from);
  const dstBps = bytesPerSample(to);
  // the header's size may exceed the file (a writer that died before patching it): trust the file
  const srcData = Math.max(0, Math.min(source.dataBytes, fileSize - source.dataOffset));
  const samples = Math.floor(srcData / source.blockAlign) * source.channels;
  const dataBytes = samples * dstBps;
  const header = buildWavHeader({ encoding: to, channels: source.channels, sampleRate: source.sampleRate, dataBytes });
  return wavOf(header, dataBytes, etag, (fh, dStart, dEnd, prefix, suffix) => {
    const firstSample = Math.floor(dStart / dstBps);
    const lastSample = Math.floor(dEnd / dstBps);
    const src = fh.createReadStream({
      start: source.dataOffset + firstSample * srcBps,
      end: source.dataOffset + (lastSample + 1) * srcBps - 1,
    });
    const slice = new TranscodeSlice(from, to, dStart - firstSample * dstBps, dEnd - dStart + 1, prefix, suffix);
    // errors reach `slice`, which fastify is reading; a client going away destroys both
    return pipeline(src, slice, () => {});
  });
}

/**
 * A WAV made on the fly (`header`, `dataBytes` of audio, a pad byte when odd): `data` streams the
 * audio bytes dStart..dEnd (inclusive) between the header bytes and the pad byte the range asks for.
 */
function wavOf(header: Buffer, dataBytes: number, etag: string,
  data: (fh: FileHandle, dStart: number, dEnd: number, prefix: Buffer, suffix: Buffer) => Readable): Representation {
  const pad = Buffer.alloc(dataBytes & 1);
  return {
    size: header.length + dataBytes + pad.length,
    etag,
    body(fh, { start, end }) {
      const { prefix, suffix, dStart, dEnd } = splitWavRange(header, dataBytes, pad, start, end);
      // only header and/or pad byte requested: nothing to read
      if (dStart > dEnd) return Buffer.concat([prefix, suffix]);
      return data(fh, dStart, dEnd, prefix, suffix);
    },
  };
}

/**
 * A byte range of a WAV (header, data, optional pad byte) split into the header bytes before the
 * data, the pad byte after it, and the range within the data (dStart > dEnd: no data asked for).
 */
function splitWavRange(header: Buffer, dataBytes: number, pad: Buffer, start: number, end: number) {
  const h = header.length;
  return {
    prefix: start < h ? header.subarray(start, Math.min(end + 1, h)) : Buffer.alloc(0),
    suffix: end >= h + dataBytes ? pad : Buffer.alloc(0),
    dStart: Math.max(start, h) - h,
    dEnd: Math.min(end, h + dataBytes - 1) - h,
  };
}

/**
 * The WAV of a recording whose WAV was removed (ARCHIVE_KEEP_WAV=false), decoded from its
 * archive: exactly the WAV's length and layout, so Range works as on the stored file. `fh`
 * (the archive, held open) is closed when the body ends.
 */
function fromArchive(rec: IndexedRecording, to: AudioFormat, etag: string): Representation {
  const { channels } = rec.sidecar;
  const frames = Math.round(rec.sidecar.durationMs * 8);
  const dstBps = bytesPerSample(to);
  const dataBytes = frames * channels * dstBps;
  const header = buildWavHeader({ encoding: to, channels, sampleRate: 8000, dataBytes });
  return wavOf(header, dataBytes, etag, (fh, dStart, dEnd, prefix, suffix) => {
    // decoded from the start (lossy frames do not allow an exact seek); bytes before the range are dropped
    const pcm = decodedArchivePcm(rec, frames * channels * 2);
    const slice = new TranscodeSlice('pcm16', to, dStart, dEnd - dStart + 1, prefix, suffix);
    slice.on('close', () => { void fh.close().catch(() => undefined); }); // read-only: a failed close loses nothing
    return pipeline(pcm, slice, () => {});
  });
}

async function readHead(fh: FileHandle, fileSize: number): Promise<Buffer> {
  const buf = Buffer.alloc(Math.min(fileSize, HEADER_PROBE_BYTES));
  const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
  return buf.subarray(0, bytesRead);
}

async function representation(rec: IndexedRecording, fh: FileHandle, format: AudioFormat | undefined): Promise<Representation> {
  const { size } = await fh.stat();
  const stored = `"${rec.sidecar.sha256}"`;
  if (format === undefined) return storedFile(size, stored);
  const head = await readHead(fh, size);
  let info;
  try {
    info = parseWavHeader(head);
  } catch (err) {
    // parseWavHeader throws only WavFormatError
    throw new ApiError(500, 'internal', `the audio file of recording ${rec.sidecar.recordingId} is not a readable WAV (${(err as Error).message}); it cannot be converted`);
  }
  if (info.encoding === format) return storedFile(size, stored);
  return converted(info, size, format, `"${rec.sidecar.sha256}-${format}"`);
}

async function openOrNull(file: string): Promise<FileHandle | null> {
  try {
    return await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return null;
  }
}

async function sendAudio(request: FastifyRequest, reply: FastifyReply, index: Catalog, { id: recordingId }: IdParams, { format }: AudioQuery) {
  const rec = await lookup(index, recordingId, request);
  if (format !== undefined && !(AUDIO_FORMATS as readonly string[]).includes(format)) {
    throw new ApiError(400, 'bad_request', `format ${JSON.stringify(format.slice(0, 40))} is not supported; use one of ${AUDIO_FORMATS.join(', ')}, or leave it out for the file as stored`);
  }
  if (isArchiveFormat(format)) return sendCompressed(request, reply, rec, format);
  const to = format === 'wav' ? undefined : (format as AudioFormat | undefined);
  const id = rec.sidecar.recordingId;
  const name = `${id}${to ? `-${to}` : ''}.wav`;

  const fh = await openOrNull(rec.audioPath);
  if (fh === null) {
    // the WAV was removed once its archive was verified: the WAV is made from the archive
    const archive = archivePath(rec);
    if (archive !== null && request.method !== 'HEAD') assertConversionSlot(); // 503 before any header or file
    const afh = archive === null ? null : await openOrNull(archive);
    if (afh === null) throw new ApiError(404, 'not_found', `recording ${id} is indexed but its audio file is no longer on disk`);
    const enc = to ?? rec.sidecar.encoding;
    return serve(request, reply, afh, fromArchive(rec, enc, `"${rec.sidecar.archive!.sha256}-${enc}"`), 'audio/wav', name);
  }
  let rep: Representation;
  try {
    rep = await representation(rec, fh, to);
  } catch (err) {
    await fh.close();
    throw err;
  }
  return serve(request, reply, fh, rep, 'audio/wav', name);
}

/** opus, flac, mp3: the stored archive (with Range), else converted on the fly (streamed). */
async function sendCompressed(request: FastifyRequest, reply: FastifyReply, rec: IndexedRecording, format: ArchiveFormat) {
  const spec = formatSpec(format);
  const name = `${rec.sidecar.recordingId}.${spec.ext}`;
  const stored = rec.sidecar.archive?.format === format ? archivePath(rec) : null;
  const fh = stored === null ? null : await openOrNull(stored);
  if (fh !== null) {
    const { size } = await fh.stat().catch(async (err: Error) => { await fh.close(); throw err; });
    return serve(request, reply, fh, storedFile(size, `"${rec.sidecar.archive!.sha256}"`), spec.contentType, name);
  }
  const headers = {
    'accept-ranges': 'none',
    'content-type': spec.contentType,
    'content-disposition': `inline; filename="${name}"`,
  };
  if (request.method === 'HEAD') return reply.headers(headers).send();
  const body = await convertRecording(rec, format); // may answer 503 busy: before any header
  return reply.headers(headers).send(body);
}

/** ETag, conditional requests and Range over one representation; `fh` is released either way. */
async function serve(request: FastifyRequest, reply: FastifyReply, fh: FileHandle, rep: Representation, contentType: string, name: string) {
  let owned = false;
  try {
    reply.headers({
      'accept-ranges': 'bytes',
      etag: rep.etag,
      'content-type': contentType,
      'content-disposition': `inline; filename="${name}"`,
    });

    const ifNoneMatch = request.headers['if-none-match'];
    if (ifNoneMatch !== undefined && etagListMatches(ifNoneMatch, rep.etag)) return reply.code(304).send();

    // If-Range: the Range applies only to the representation the client already has a part of
    const ifRange = request.headers['if-range'];
    const rangeHeader = ifRange === undefined || String(ifRange).trim() === rep.etag ? request.headers.range : undefined;
    const range = parseRange(rangeHeader, rep.size);
    if (range === 'unsatisfiable') {
      throw new ApiError(416, 'range_not_satisfiable', `range ${JSON.stringify(rangeHeader)} selects nothing of the ${rep.size} bytes of this audio`, {
        'content-range': `bytes */${rep.size}`,
      });
    }
    const part = range ?? { start: 0, end: rep.size - 1 };
    if (range) reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${rep.size}`);
    reply.header('content-length', String(part.end - part.start + 1));
    if (request.method === 'HEAD' || rep.size === 0) return reply.send();
    const payload = rep.body(fh, part);
    owned = !Buffer.isBuffer(payload);
    return reply.send(payload);
  } finally {
    if (!owned) await fh.close();
  }
}

/** The contact WAV, whole or the one byte range asked for (its length is known up front). */
async function sendContactAudio(request: FastifyRequest, reply: FastifyReply, audio: ContactAudio, ctiSessionId: string) {
  let owned = false;
  try {
    const name = `contact-${ctiSessionId.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100)}.wav`;
    reply.headers({ 'accept-ranges': 'bytes', etag: audio.etag, 'content-type': 'audio/wav', 'content-disposition': `inline; filename="${name}"` });
    const ifRange = request.headers['if-range'];
    const rangeHeader = ifRange === undefined || String(ifRange).trim() === audio.etag ? request.headers.range : undefined;
    const range = parseRange(rangeHeader, audio.size);
    if (range === 'unsatisfiable') {
      throw new ApiError(416, 'range_not_satisfiable', `range ${JSON.stringify(rangeHeader)} selects nothing of the ${audio.size} bytes of this contact's audio`, {
        'content-range': `bytes */${audio.size}`,
      });
    }
    const part = range ?? { start: 0, end: audio.size - 1 };
    if (range) reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${audio.size}`);
    reply.header('content-length', String(part.end - part.start + 1));
    if (request.method === 'HEAD') return reply.send();
    owned = true;
    return reply.send(audio.body(part));
  } finally {
    if (!owned) await audio.close();
  }
}

/**
 * The contact's PCM16 stereo mix, without its WAV header, encoded on the fly (no Range: the
 * encoded length is not known before encoding). The 12 h bound and account scoping are
 * contactAudio's, as for the WAV.
 */
async function sendContactCompressed(request: FastifyRequest, reply: FastifyReply, audio: ContactAudio, format: ArchiveFormat, ctiSessionId: string) {
  let owned = false;
  try {
    const spec = formatSpec(format);
    const name = `contact-${ctiSessionId.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100)}.${spec.ext}`;
    const headers = { 'accept-ranges': 'none', 'content-type': spec.contentType, 'content-disposition': `inline; filename="${name}"` };
    if (request.method === 'HEAD') return reply.headers(headers).send();
    // 503 busy / 501 no ffmpeg are thrown here, before any header is set (finally closes the legs)
    const body = encodePcm(audio.body({ start: audio.dataOffset, end: audio.size - 1 }), 2, format);
    owned = true; // the mix stream closes the legs' files when it ends or is destroyed
    return reply.headers(headers).send(body);
  } finally {
    if (!owned) await audio.close();
  }
}

/** On the /v1 scope (v1-scope.ts): paths are relative to /v1. */
export function registerRecordingRoutes(app: ApiInstance, options: RecordingRoutesOptions): void {
  const { index } = options;

  app.get('/recordings', {
    schema: { querystring: ListQuery },
    preValidation: onlyQueryParams(Object.keys(ListQuery.properties)),
  }, async (request) => {
    const q = request.query;
    const from = parseDate('from', q.from);
    const to = parseDate('to', q.to);
    if (from && to && from.getTime() > to.getTime()) {
      throw new ApiError(400, 'bad_request', `from (${q.from}) is after to (${q.to})`);
    }
    if (q.cursor !== undefined) {
      try {
        decodeCursor(q.cursor);
      } catch (err) {
        // decodeCursor throws only InvalidCursorError, whose message says what is wrong
        throw new ApiError(400, 'bad_request', (err as Error).message);
      }
    }
    // a per-source key sees its account only: asking for another one finds nothing
    const own = accessOf(request).accountSid;
    if (own !== null && q.accountSid !== undefined && q.accountSid !== own) {
      return { items: [], nextCursor: null, ...(q.count ? { total: 0 } : {}) };
    }
    return index.query({
      accountSid: own ?? q.accountSid,
      closeReason: q.closeReason, minDurationMs: q.minDurationMs, count: q.count,
      callSid: q.callSid, ctiSessionId: clipId(q.ctiSessionId), employeeId: clipId(q.employeeId), from, to, limit: q.limit, cursor: q.cursor,
    });
  });

  app.get('/recordings/:id', {
    schema: { params: IdParams },
    preValidation: onlyQueryParams([]),
  }, async (request) => (await lookup(index, request.params.id, request)).sidecar);

  app.route({
    method: ['GET', 'HEAD'],
    url: '/recordings/:id/audio',
    schema: { params: IdParams, querystring: AudioQuery },
    preValidation: onlyQueryParams(Object.keys(AudioQuery.properties)),
    handler: (request, reply) => sendAudio(request, reply, index, request.params, request.query),
  });

  app.get('/cti-sessions/:ctiSessionId', {
    schema: { params: CtiParams },
    preValidation: onlyQueryParams([]),
  }, async (request) => {
    const ctiSessionId = clipId(request.params.ctiSessionId);
    const access = accessOf(request);
    const recordings = (await index.byCtiSession(ctiSessionId)).filter((s) => canSee(access, s.accountSid));
    if (recordings.length === 0) throw new ApiError(404, 'not_found', `no recordings for CTI session ${JSON.stringify(ctiSessionId)}`);
    return { ctiSessionId, recordings };
  });

  // HEAD explicitly: fastify's generated HEAD route would read (mix) the whole body and drop it
  app.route({
    method: ['GET', 'HEAD'],
    url: '/cti-sessions/:ctiSessionId/audio',
    schema: { params: CtiParams, querystring: AudioQuery },
    preValidation: onlyQueryParams(Object.keys(AudioQuery.properties)),
    handler: async (request, reply) => {
      const { format } = request.query;
      if (format !== undefined && format !== 'wav' && !isArchiveFormat(format)) {
        throw new ApiError(400, 'bad_request', `format ${JSON.stringify(format.slice(0, 40))} is not supported for a whole contact; use one of wav, ${ARCHIVE_FORMATS.join(', ')}`);
      }
      const audio = await contactAudio(index, clipId(request.params.ctiSessionId), accessOf(request).accountSid);
      if (isArchiveFormat(format)) return sendContactCompressed(request, reply, audio, format, request.params.ctiSessionId);
      return sendContactAudio(request, reply, audio, request.params.ctiSessionId);
    },
  });
}
