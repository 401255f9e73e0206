// Streams one segment's audio to a partial WAV in RECORDINGS_DIR/.inprogress, then publishes it:
// header patched with the real sizes, fsync, sha256, rename into the call's folder. Writes are
// queued and sent with one writev at a time, so memory per stream is bounded by what the disk
// has not yet taken, and nothing on this path blocks the event loop.
import { open, mkdir, unlink, type FileHandle } from 'node:fs/promises';
import { openRetrying } from './fd-retry.js';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { buildWavHeader, wavHeaderLength } from '../codecs/wav.js';
import { MULAW_TO_PCM16 } from '../codecs/g711.js';
import { publishFile, writeFileAtomic } from './atomic-file.js';
import type { SegmentPaths } from './storage-layout.js';
import type { Encoding } from './sidecar.js';

export interface SegmentWriterOptions {
  paths: SegmentPaths;
  /** encoding of the file; input is always interleaved mu-law */
  encoding: Encoding;
  channels: 1 | 2;
  sampleRate: number;
  /** samples per channel of a usual append (sizes the buffer pool) */
  chunkSamples: number;
  /** what recovery needs to know about this segment, written beside the partial file */
  meta: unknown;
  /** where stats checkpoints go (recovery's frame counts); none when unset */
  checkpointPath?: string;
  /** monotonic clock in ms, same clock as the arrival times given to append() */
  now: () => number;
  /** after each write reached the file: bytes, and ms since the oldest frame in it arrived */
  onWritten?: (bytes: number, lagMs: number) => void;
  /** the first write (or open) error: the disk refused us; called once */
  onWriteError?: (err: NodeJS.ErrnoException) => void;
  /**
   * Most audio bytes that may wait for the disk (default 4 MiB ≈ 4 min of one stereo mu-law
   * stream). A slow disk must not grow memory without bound: audio beyond the cap is not kept
   * but replaced by silence of the same length (shared, no memory), so the file stays aligned
   * to call time, and the loss is counted (droppedBytes).
   */
  maxQueueBytes?: number;
  /** audio bytes just dropped because the queue was full (once per append, not per frame) */
  onDropped?: (bytes: number) => void;
  /**
   * Start a write only once this much audio is queued (finalize writes the rest). With the media
   * journal holding every frame within 50 ms, the file need not be written every 500 ms: fewer,
   * larger writes cost less CPU (each write is a thread-pool hand-off and a syscall). Default 0:
   * write as soon as anything is queued.
   */
  batchBytes?: number;
  /**
   * The first batch goes out at this much instead of batchBytes (default batchBytes). Streams
   * that start together would otherwise write (and checkpoint) together every batch, a burst of
   * thread-pool work in one tick; a per-stream first batch (see writePhaseBytes) spreads them
   * over the batch period for the rest of the segment.
   */
  firstBatchBytes?: number;
  /** batch only while this holds (the journal still writes); otherwise write at once */
  batchWhile?: () => boolean;
}

export interface SegmentResult {
  audioBytes: number;
  sha256: string;
  /** the first write error, if any: audio before it is kept, audio after it is lost */
  writeError: string | null;
}

// Shared read-only silence, so a gap costs no allocation (mu-law 0xFF decodes to PCM 0).
const SILENCE_MULAW = Buffer.alloc(16000 * 2, 0xff);
const SILENCE_PCM16 = Buffer.alloc(16000 * 4, 0);
/**
 * Silence goes to the file at most this much per write: a long gap is one queue entry (a count,
 * no memory) written in pieces of views on the shared silence, never a buffer of the gap's size.
 */
const MAX_SILENCE_PER_WRITE = 1024 * 1024;

export const DEFAULT_MAX_QUEUE_BYTES = 4 * 1024 * 1024;

interface Pending {
  /** audio, or null for a run of `silence` bytes (a gap, or dropped audio): shared silence, no memory */
  buf: Buffer | null;
  silence: number;
  /** the pool buffer `buf` is a view of, returned to the pool after the write */
  owner: Buffer | null;
  arrival: number;
}

export class SegmentWriter {
  private readonly opts: SegmentWriterOptions;
  private readonly headerLength: number;
  private readonly opened: Promise<FileHandle>;
  private queue: Pending[] = [];
  private readonly pool: Buffer[] = [];
  /** size of pooled buffers: one emission chunk of every channel */
  private readonly poolBufferBytes: number;
  private pumping: Promise<void> | null = null;
  private error: Error | null = null;
  /** audio bytes accepted so far (what the header will say when all is written) */
  dataBytes = 0;
  /** audio bytes that reached the file */
  writtenBytes = 0;
  /** audio bytes waiting for the disk (silence runs excluded: they take no memory) */
  queuedBytes = 0;
  /** audio bytes not kept because the disk was too slow (written as silence instead) */
  droppedBytes = 0;
  private readonly maxQueueBytes: number;
  private batchBytes: number;
  /** the batch size after the first write (batchBytes holds the first one until then) */
  private readonly laterBatchBytes: number;
  /** queue entries and writev lists reused: a write allocates no arrays, an append no entry */
  private readonly freeEntries: Pending[] = [];
  private readonly bufs: Buffer[] = [];
  private readonly batch: Pending[] = [];
  /** latest stats checkpoint not yet written, and the data size it describes */
  private checkpointData: string | null = null;
  private checkpointAt = 0;
  private checkpointFh: FileHandle | null = null;

  constructor(opts: SegmentWriterOptions) {
    this.opts = opts;
    this.headerLength = wavHeaderLength(opts.encoding);
    this.poolBufferBytes = opts.chunkSamples * opts.channels * (opts.encoding === 'pcm16' ? 2 : 1);
    this.maxQueueBytes = opts.maxQueueBytes ?? DEFAULT_MAX_QUEUE_BYTES;
    this.laterBatchBytes = Math.min(opts.batchBytes ?? 0, this.maxQueueBytes / 2);
    this.batchBytes = Math.min(opts.firstBatchBytes ?? this.laterBatchBytes, this.laterBatchBytes);
    this.opened = this.openFile();
    // An open failure surfaces through finalize(); keep it from being an unhandled rejection.
    this.opened.catch((err: Error) => this.fail(err));
  }

  get failed(): Error | null {
    return this.error;
  }

  private async openFile(): Promise<FileHandle> {
    const { paths } = this.opts;
    await mkdir(path.dirname(paths.partial), { recursive: true });
    // The partial first, its meta (two fsyncs: slow on a busy disk) after: the media journal
    // replays frames only into a partial that exists, and carries what the meta needs, so a crash
    // before the meta is on disk is recovered whole (journal-replay.ts writes the meta).
    const fh = await openRetrying(paths.partial, 'w');
    const header = buildWavHeader({
      encoding: this.opts.encoding, channels: this.opts.channels, sampleRate: this.opts.sampleRate, dataBytes: 0,
    });
    try {
      await fh.write(header, 0, header.length, 0);
      await writeFileAtomic(paths.partialMeta, JSON.stringify(this.opts.meta));
    } catch (err) {
      // the writer fails (its segment is reported failed): leave no partial that recovery would
      // later publish; the open failure is what counts
      await fh.close().catch(() => undefined);
      await unlink(paths.partial).catch(() => undefined);
      throw err;
    }
    return fh;
  }

  /**
   * Queue `n` samples of every channel: channel c is mu-law `planes[c][offset .. offset + n)`.
   * They are interleaved (and decoded for pcm16) into a pooled buffer in one pass, so the
   * caller may reuse its planes at once. `silent`: no audio at all (a gap): queued as a count
   * of silence, which takes no memory and does not count toward the queue cap.
   */
  append(planes: readonly Buffer[], offset: number, n: number, silent: boolean, arrival: number): void {
    const pcm = this.opts.encoding === 'pcm16';
    const bytes = n * this.opts.channels * (pcm ? 2 : 1);
    if (this.error) {
      this.dataBytes += bytes; // after a write error nothing more reaches the disk
      return;
    }
    if (silent) {
      this.dataBytes += bytes;
      this.queueSilence(bytes);
      return;
    }
    if (this.queuedBytes + bytes > this.maxQueueBytes) {
      // The disk is behind by more than the cap: keep the timeline, not the audio.
      this.dataBytes += bytes;
      this.droppedBytes += bytes;
      this.opts.onDropped?.(bytes);
      this.queueSilence(bytes);
      return;
    }
    const owner = this.take(bytes);
    const buf = owner.length === bytes ? owner : owner.subarray(0, bytes);
    if (pcm) interleavePcm16(planes, offset, n, buf);
    else interleaveMulaw(planes, offset, n, buf);
    this.dataBytes += buf.length;
    this.queue.push(this.entry(buf, 0, owner, arrival));
    this.queuedBytes += buf.length;
    if (!this.pumping && (this.queuedBytes >= this.batchBytes || this.opts.batchWhile?.() === false)) this.pumping = this.pump();
  }

  /** `bytes` of silence after what is queued: merged into a trailing silence run (no memory). */
  private queueSilence(bytes: number): void {
    const last = this.queue.length > 0 ? this.queue[this.queue.length - 1]! : null;
    if (last !== null && last.buf === null) last.silence += bytes;
    else this.queue.push(this.entry(null, bytes, null, NaN));
    if (!this.pumping) this.pumping = this.pump();
  }

  /** A queue entry, reused from an earlier write when there is one. */
  private entry(buf: Buffer | null, silence: number, owner: Buffer | null, arrival: number): Pending {
    const e = this.freeEntries.pop();
    if (e === undefined) return { buf, silence, owner, arrival };
    e.buf = buf;
    e.silence = silence;
    e.owner = owner;
    e.arrival = arrival;
    return e;
  }

  /** A pool buffer (reused once its write is done) of at least `bytes`, or a new one. */
  private take(bytes: number): Buffer {
    if (bytes <= this.poolBufferBytes) {
      // allocUnsafeSlow: never a slice of Node's shared slab, so it is ours to reuse.
      return this.pool.pop() ?? Buffer.allocUnsafeSlow(this.poolBufferBytes);
    }
    return Buffer.allocUnsafeSlow(bytes);
  }

  private async pump(): Promise<void> {
    try {
      const fh = await this.opened;
      const silence = this.opts.encoding === 'pcm16' ? SILENCE_PCM16 : SILENCE_MULAW;
      while (this.queue.length > 0 && !this.error) {
        // Everything queued, except that silence goes out at most MAX_SILENCE_PER_WRITE at a
        // time: the rest of a long run stays queued (as a count) for the next write.
        const bufs = this.bufs;
        const batch = this.batch;
        let total = 0;
        let queued = 0;
        let silenceLeft = MAX_SILENCE_PER_WRITE;
        let taken = 0;
        for (const p of this.queue) {
          if (p.buf !== null) {
            bufs.push(p.buf);
            total += p.buf.length;
            queued += p.buf.length;
            batch.push(p);
            taken++;
            continue;
          }
          if (silenceLeft === 0) break;
          const n = Math.min(p.silence, silenceLeft);
          pushSilence(bufs, n, silence);
          total += n;
          silenceLeft -= n;
          if (n === p.silence) {
            batch.push(p);
            taken++;
          } else {
            p.silence -= n; // the run's remainder stays at the head of the queue
            batch.push(this.entry(null, n, null, NaN));
            break;
          }
        }
        dropHead(this.queue, taken);
        // Positional writes: the header went in with pwrite, which leaves the file offset alone.
        const at = this.headerLength + this.writtenBytes;
        let done = (await fh.writev(bufs, at)).bytesWritten;
        // Regular files take whole writes; finish a short one rather than corrupt the order.
        while (done < total) {
          const rest = Buffer.concat(bufs).subarray(done);
          done += (await fh.write(rest, 0, rest.length, at + done)).bytesWritten;
        }
        this.writtenBytes += total;
        this.queuedBytes -= queued;
        this.batchBytes = this.laterBatchBytes;
        const now = this.opts.now();
        for (const p of batch) {
          this.opts.onWritten?.(p.buf === null ? p.silence : p.buf.length, Number.isNaN(p.arrival) ? NaN : now - p.arrival);
          if (p.owner !== null && p.owner.length === this.poolBufferBytes && this.pool.length < this.poolMax) this.pool.push(p.owner);
          p.buf = null;
          p.owner = null;
          if (this.freeEntries.length < this.poolMax) this.freeEntries.push(p);
        }
        bufs.length = 0;
        batch.length = 0;
        await this.writeCheckpoint();
      }
    } catch (err) {
      this.fail(err as Error);
    } finally {
      this.pumping = null;
    }
  }

  private fail(err: Error): void {
    if (this.error) return;
    this.error = err;
    this.queue = [];
    this.queuedBytes = 0;
    this.opts.onWriteError?.(err);
  }

  /**
   * Offer a stats checkpoint (a small JSON) describing the audio accepted so far. It is written
   * after the audio it describes has reached the file, by the write loop, at most once per
   * CHECKPOINT_MS: crash recovery reads it for the frame counts of the sidecar. `stats` is the
   * caller's own fresh object: `dataBytes` is added to it (no copy).
   */
  checkpoint(stats: Record<string, unknown>): void {
    if (this.opts.checkpointPath === undefined || this.error) return;
    // the caller's fresh object: no copy of it. droppedBytes: audio not kept for disk
    // backpressure, for the recovered sidecar's count
    stats.dataBytes = this.dataBytes;
    stats.droppedBytes = this.droppedBytes;
    this.checkpointData = JSON.stringify(stats);
    this.checkpointAt = this.dataBytes;
  }

  /** is a checkpoint due? (the caller builds one only then: no per-emission JSON work) */
  checkpointDue(now: number): boolean {
    if (this.opts.checkpointPath === undefined || this.error) return false;
    if (now - this.lastCheckpoint < CHECKPOINT_MS) return false;
    this.lastCheckpoint = now;
    return true;
  }

  private lastCheckpoint = -Infinity;

  private async writeCheckpoint(): Promise<void> {
    const data = this.checkpointData;
    if (data === null || this.writtenBytes < this.checkpointAt || this.opts.checkpointPath === undefined) return;
    this.checkpointData = null;
    try {
      this.checkpointFh ??= await open(this.opts.checkpointPath, 'w');
      // Fixed-size record written in one pwrite at offset 0 (padded with spaces, which JSON
      // ignores): a process killed at any moment leaves either the old or the new record.
      const size = Buffer.byteLength(data);
      const rec = size <= CHECKPOINT_BYTES ? (checkpointBuffers.pop() ?? Buffer.allocUnsafeSlow(CHECKPOINT_BYTES)) : Buffer.allocUnsafe(size);
      rec.write(data);
      if (size < rec.length) rec.fill(0x20, size);
      try {
        await this.checkpointFh.write(rec, 0, rec.length, 0);
      } finally {
        if (rec.length === CHECKPOINT_BYTES && checkpointBuffers.length < 64) checkpointBuffers.push(rec);
      }
    } catch {
      // Best effort: without a checkpoint recovery derives the counts from the audio.
    }
  }

  private async closeCheckpoint(remove: boolean): Promise<void> {
    const fh = this.checkpointFh;
    this.checkpointFh = null;
    // Best effort, like the checkpoint itself: recovery ignores a checkpoint without a partial
    // and removes it at the next start.
    if (fh) await fh.close().catch(() => undefined);
    if (remove && this.opts.checkpointPath !== undefined) await unlink(this.opts.checkpointPath).catch(() => undefined);
  }

  /** pool buffers kept: what one batch holds, plus one */
  private get poolMax(): number {
    return Math.max(4, Math.ceil(this.batchBytes / this.poolBufferBytes) + 1);
  }

  /** Write what is queued, seal the WAV and publish it under its final name. */
  async finalize(): Promise<SegmentResult> {
    while (this.pumping) await this.pumping;
    if (this.queue.length > 0 && !this.error) await (this.pumping = this.pump()); // a batch not yet full
    await this.closeCheckpoint(false);
    const { paths } = this.opts;
    const fh = await this.opened; // an open failure rejects here: nothing to keep
    try {
      const end = this.headerLength + this.writtenBytes;
      if (this.error) await fh.truncate(end);
      // RIFF chunks are word-aligned: an odd data size gets a pad byte after it (as sox writes).
      // On a full disk that byte may not fit: then the last sample goes instead.
      if (this.writtenBytes % 2 === 1) {
        try {
          await fh.write(Buffer.alloc(1), 0, 1, end);
        } catch (err) {
          if (this.error === null) throw err;
          this.writtenBytes -= 1;
          await fh.truncate(end - 1);
        }
      }
      const header = buildWavHeader({
        encoding: this.opts.encoding, channels: this.opts.channels, sampleRate: this.opts.sampleRate,
        dataBytes: this.writtenBytes,
      });
      await fh.write(header, 0, header.length, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    const sha256 = await hashFile(paths.partial);
    await publishFile(paths.partial, paths.audio);
    return { audioBytes: this.headerLength + this.writtenBytes + (this.writtenBytes % 2), sha256, writeError: this.error ? this.error.message : null };
  }

  /** Throw the segment away (a rule deleted the call, or nothing was ever written). */
  async discard(): Promise<void> {
    while (this.pumping) await this.pumping;
    await this.closeCheckpoint(true);
    try {
      const fh = await this.opened;
      await fh.close();
    } catch {
      // nothing was opened: nothing to close
    }
    // ENOENT (never created) is the usual failure. Any other leaves the partial for the next
    // start's recovery to keep (published with its meta, else under .unattributed): audio is
    // never silently lost, at the cost of keeping a discarded segment on a failing disk.
    await unlink(this.opts.paths.partial).catch(() => undefined);
    await unlink(this.opts.paths.partialMeta).catch(() => undefined);
  }
}

/** How often a segment's stats checkpoint may be rewritten (never per frame). */
export const CHECKPOINT_MS = 2000;
/** checkpoint records are padded to this size so one pwrite replaces the whole record */
const CHECKPOINT_BYTES = 1024;
/**
 * Record buffers of checkpoint writes in flight, shared by every writer and reused: a node
 * checkpoints every stream every 2 s, and a fresh buffer each time (external memory, kept
 * alive across scavenges by the write in flight) was old-space growth that drove full GCs.
 */
const checkpointBuffers: Buffer[] = [];

/** Remove the first `n` entries of `a` in place (no array of the removed ones, as splice makes). */
function dropHead<T>(a: T[], n: number): void {
  if (n === 0) return;
  a.copyWithin(0, n);
  a.length -= n;
}

/**
 * The first write batch of a stream's segment, as a share of `batchBytes` by the stream's number
 * `n` on the node: whole `chunkBytes` steps of 1 .. `batchBytes / chunkBytes` chunks in turn, so
 * consecutive streams (a burst of starts) write in different ticks of the batch period.
 */
export function writePhaseBytes(n: number, batchBytes: number, chunkBytes: number): number {
  const steps = Math.max(1, Math.floor(batchBytes / chunkBytes));
  return (((n % steps) + steps) % steps + 1) * chunkBytes;
}

/** Dropped audio as views of the shared silence (no allocation per byte). */
function pushSilence(bufs: Buffer[], bytes: number, silence: Buffer): void {
  while (bytes > 0) {
    const n = Math.min(bytes, silence.length);
    bufs.push(silence.subarray(0, n));
    bytes -= n;
  }
}

// The timeline hands over one plane per channel (1 or 2) and offset + n never passes a plane's
// end, so the `!`s below hold (and cost nothing per sample).
function interleaveMulaw(planes: readonly Buffer[], offset: number, n: number, out: Buffer): void {
  if (planes.length === 1) {
    planes[0]!.copy(out, 0, offset, offset + n);
    return;
  }
  const l = planes[0]!;
  const r = planes[1]!;
  let i = 0;
  if (LITTLE_ENDIAN && (out.byteOffset & 3) === 0) {
    // Two stereo samples (four bytes: L R L R) per 32-bit store: a quarter of the stores of the
    // byte loop below, about 2.5 times faster (this runs on 4 000 samples per stream twice a second)
    const words = new Uint32Array(out.buffer, out.byteOffset, n >> 1);
    for (let w = 0, j = offset; w < words.length; w++, j += 2) {
      words[w] = l[j]! | (r[j]! << 8) | (l[j + 1]! << 16) | (r[j + 1]! << 24);
    }
    i = words.length * 2;
  }
  for (let o = i * 2; i < n; i++, o += 2) {
    out[o] = l[offset + i]!;
    out[o + 1] = r[offset + i]!;
  }
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function interleavePcm16(planes: readonly Buffer[], offset: number, n: number, out: Buffer): void {
  const ch = planes.length;
  for (let c = 0; c < ch; c++) {
    const p = planes[c]!;
    for (let i = 0, o = c * 2; i < n; i++, o += ch * 2) out.writeInt16LE(MULAW_TO_PCM16[p[offset + i]!]!, o);
  }
}

/** read size of hashFile: a 20 s stereo segment in two reads */
const HASH_CHUNK = 256 * 1024;
/**
 * Read buffers of hashFile, reused: a burst of publications (every stream of a node stopping at
 * once) allocates no 64 KiB stream chunk per read, whose external memory would drive full GCs.
 */
const hashBuffers: Buffer[] = [];

export async function hashFile(file: string): Promise<string> {
  const fh = await openRetrying(file, 'r');
  const buf = hashBuffers.pop() ?? Buffer.allocUnsafeSlow(HASH_CHUNK);
  try {
    const h = createHash('sha256');
    for (let pos = 0; ;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead > 0) h.update(buf.subarray(0, bytesRead));
      // a regular file reads short only at its end
      if (bytesRead < buf.length) break;
      pos += bytesRead;
    }
    return h.digest('hex');
  } finally {
    if (hashBuffers.length < 8) hashBuffers.push(buf);
    await fh.close();
  }
}
