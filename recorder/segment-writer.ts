// Streams one segment's audio to a partial WAV in RECORDINGS_DIR/.inprogress, then publishes it:
// header patched with the real sizes, fsync, sha256, rename into the call's folder. Writes are
// queued and sent with one writev at a time, so memory per stream is bounded by what the disk
// has not yet taken, and nothing on this path blocks the event loop.
import { open, mkdir, unlink, type FileHandle } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { buildWavHeader, wavHeaderLength } from '../codecs/wav.js';
import { decodeMulaw } from '../codecs/g711.js';
import { publishFile, writeFileAtomic } from './atomic-file.js';
import type { SegmentPaths } from './storage-layout.js';
import type { Encoding } from './sidecar.js';

export interface SegmentWriterOptions {
  paths: SegmentPaths;
  /** encoding of the file; input is always interleaved mu-law */
  encoding: Encoding;
  channels: 1 | 2;
  sampleRate: number;
  /** what recovery needs to know about this segment, written beside the partial file */
  meta: unknown;
  /** monotonic clock in ms, same clock as the arrival times given to append() */
  now: () => number;
  /** after each write reached the file: bytes, and ms since the oldest frame in it arrived */
  onWritten?: (bytes: number, lagMs: number) => void;
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

interface Pending {
  buf: Buffer;
  arrival: number;
}

export class SegmentWriter {
  private readonly opts: SegmentWriterOptions;
  private readonly headerLength: number;
  private readonly opened: Promise<FileHandle>;
  private queue: Pending[] = [];
  private pumping: Promise<void> | null = null;
  private error: Error | null = null;
  /** audio bytes accepted so far (what the header will say when all is written) */
  dataBytes = 0;
  /** audio bytes that reached the file */
  writtenBytes = 0;
  /** bytes waiting for the disk */
  queuedBytes = 0;

  constructor(opts: SegmentWriterOptions) {
    this.opts = opts;
    this.headerLength = wavHeaderLength(opts.encoding);
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
    await writeFileAtomic(paths.partialMeta, JSON.stringify(this.opts.meta));
    const fh = await open(paths.partial, 'w');
    const header = buildWavHeader({
      encoding: this.opts.encoding, channels: this.opts.channels, sampleRate: this.opts.sampleRate, dataBytes: 0,
    });
    await fh.write(header, 0, header.length, 0);
    return fh;
  }

  /**
   * Queue interleaved mu-law samples. `data` may be reused by the caller after this returns.
   * `silent`: the region holds no audio at all (shared silence buffers, no copy).
   */
  append(data: Uint8Array, silent: boolean, arrival: number): void {
    let buf: Buffer;
    if (this.opts.encoding === 'pcm16') {
      const bytes = data.length * 2;
      if (silent && bytes <= SILENCE_PCM16.length) buf = SILENCE_PCM16.subarray(0, bytes);
      else {
        buf = Buffer.allocUnsafe(bytes);
        decodeMulaw(data, new Int16Array(buf.buffer, buf.byteOffset, data.length));
      }
    } else if (silent && data.length <= SILENCE_MULAW.length) {
      buf = SILENCE_MULAW.subarray(0, data.length);
    } else {
      buf = Buffer.from(data); // copy: the timeline reuses its ring
    }
    this.dataBytes += buf.length;
    if (this.error) return; // after a write error nothing more reaches the disk
    this.queue.push({ buf, arrival });
    this.queuedBytes += buf.length;
    if (!this.pumping) this.pumping = this.pump();
  }

  private async pump(): Promise<void> {
    try {
      const fh = await this.opened;
      while (this.queue.length > 0 && !this.error) {
        const batch = this.queue;
        this.queue = [];
        const bufs = batch.map((p) => p.buf);
        let total = 0;
        for (const b of bufs) total += b.length;
        // Positional writes: the header went in with pwrite, which leaves the file offset alone.
        const at = this.headerLength + this.writtenBytes;
        let done = (await fh.writev(bufs, at)).bytesWritten;
        // Regular files take whole writes; finish a short one rather than corrupt the order.
        while (done < total) {
          const rest = Buffer.concat(bufs).subarray(done);
          done += (await fh.write(rest, 0, rest.length, at + done)).bytesWritten;
        }
        this.writtenBytes += total;
        this.queuedBytes -= total;
        const now = this.opts.now();
        if (this.opts.onWritten) {
          for (const p of batch) this.opts.onWritten(p.buf.length, Number.isNaN(p.arrival) ? NaN : now - p.arrival);
        }
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
  }

  /** Write what is queued, seal the WAV and publish it under its final name. */
  async finalize(): Promise<SegmentResult> {
    while (this.pumping) await this.pumping;
    const { paths } = this.opts;
    const fh = await this.opened; // an open failure rejects here: nothing to keep
    try {
      const header = buildWavHeader({
        encoding: this.opts.encoding, channels: this.opts.channels, sampleRate: this.opts.sampleRate,
        dataBytes: this.writtenBytes,
      });
      await fh.write(header, 0, header.length, 0);
      const end = this.headerLength + this.writtenBytes;
      if (this.error) await fh.truncate(end);
      // RIFF chunks are word-aligned: an odd data size gets a pad byte after it (as sox writes).
      if (this.writtenBytes % 2 === 1) await fh.write(Buffer.alloc(1), 0, 1, end);
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
    try {
      const fh = await this.opened;
      await fh.close();
    } catch {
      // nothing was opened: nothing to close
    }
    await unlink(this.opts.paths.partial).catch(() => undefined);
    await unlink(this.opts.paths.partialMeta).catch(() => undefined);
  }
}

export function hashFile(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (chunk) => h.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}
