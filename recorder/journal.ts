// The node's media journal: every frame the timeline accepts is appended (as received, before
// the 1 s jitter window and the 500 ms segment writes) to one append-only file per node, and
// handed to the kernel every JOURNAL_COMMIT_MS in one write (group commit). A process crash
// (SIGKILL, OOM) then loses at most one commit interval plus a write: bytes handed to the kernel
// survive the process (only a machine crash needs fsync, which the finished segment gets).
// Crash recovery replays what the segment files lack (journal-replay.ts).
//
// Records (little-endian), back to back:
//   frame: u8 1, u8 channel, u16 length, u32 stream, u32 sample position (timeline), payload
//   open:  u8 2, u8 0,       u16 length, u32 stream, u32 0,                           JSON (JournalStream)
// A stream's frames follow its open record in the same file. The file rotates every
// JOURNAL_ROTATE_MS; a closed file is deleted once every stream with frames in it has its audio
// up to what the file holds in its segment files (or has ended).
//
// Per frame: a few header bytes written into a preallocated buffer. The gateway decodes the
// base64 payload straight into `buf` at `at` (no scratch copy), the timeline copies it from
// there, and commit() keeps it only when the timeline accepted the frame.
import { open, mkdir, readdir, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { MAX_PAYLOAD_BYTES } from './ingest-limits.js';
import type { StreamMeta } from './sidecar-builder.js';

export const JOURNAL_DIR = '.journal';
export const JOURNAL_EXT = '.jnl';
export const JOURNAL_COMMIT_MS = 50;
export const JOURNAL_ROTATE_MS = 1000;
export const REC_FRAME = 1;
export const REC_OPEN = 2;
export const HEADER_BYTES = 12;
/** one buffer takes about 1 s of 1 000 stereo streams before it must be committed early */
const BUFFER_BYTES = 4 * 1024 * 1024;

/** What replay needs to find a stream's segment files and their layout. */
export interface JournalStream {
  base: string;
  accountSid: string;
  callSid: string;
  /** the stream's start (ISO): dates the call folder */
  startedAt: string;
  channels: 1 | 2;
  encoding: 'mulaw' | 'pcm16';
  segmentSamples: number;
  /**
   * The stream's sidecar fields (attribution as of the stream's start): a crash before a
   * segment's meta reached the disk is recovered with the meta made from it. Absent in journals
   * of older versions.
   */
  meta?: StreamMeta;
}

/** A stream that writes to the journal: how far its audio is safe in its own segment files. */
export interface JournalClient {
  /** timeline samples safe in segment files (Infinity once the stream is published) */
  durableTo(): number;
  /** one past the newest timeline sample journaled */
  readonly journalFront: number;
  /** generation of the journal file this client last wrote to (journal-owned) */
  journalGen: number;
  /** the client's stream number in the journal (journal-owned) */
  journalNo: number;
}

interface ClosedFile {
  file: string;
  /** per stream with frames in the file: the frontier when the file closed */
  clients: JournalClient[];
  upTo: number[];
}

export interface JournalOptions {
  /** RECORDINGS_DIR/.journal/<nodeId> */
  dir: string;
  now: () => number;
  /** after a commit reached the kernel: ms since its oldest frame arrived */
  onCommitted?: (bytes: number, lagMs: number) => void;
  onError?: (err: Error) => void;
}

export function journalDirOf(recordingsDir: string, nodeId: string): string {
  return path.join(recordingsDir, JOURNAL_DIR, nodeId.replace(/[^A-Za-z0-9._-]/g, '_'));
}

export class Journal {
  /** where the next frame's payload goes: buf[at .. at + MAX_PAYLOAD_BYTES) is always free */
  buf: Buffer;
  at: number;
  private readonly opts: JournalOptions;
  private readonly spare: Buffer[] = [];
  /** arrival of the oldest frame in `buf` (NaN when none) */
  private oldest = Number.NaN;
  private fh: FileHandle | null = null;
  private file = '';
  private fileBytes = 0;
  private gen = 1;
  private nextNo = 1;
  private clients: JournalClient[] = [];
  private readonly closed: ClosedFile[] = [];
  private writing: Promise<void> | null = null;
  private readonly timer: NodeJS.Timeout;
  private failed = false;
  private seq = 0;
  private readonly token = `${Date.now().toString(36)}-${process.pid}`;

  constructor(opts: JournalOptions) {
    this.opts = opts;
    this.buf = Buffer.allocUnsafeSlow(BUFFER_BYTES);
    this.at = HEADER_BYTES;
    this.genStartedAt = opts.now();
    this.timer = setInterval(() => this.tick(), JOURNAL_COMMIT_MS);
    this.timer.unref();
  }

  /** Files this process writes carry this token (replay skips them). */
  get fileToken(): string {
    return this.token;
  }

  /** A stream begins writing: its open record goes in the current file. */
  register(client: JournalClient, stream: JournalStream): void {
    client.journalNo = this.nextNo++;
    client.journalGen = 0;
    this.meta.set(client, Buffer.from(JSON.stringify(stream)));
  }

  private readonly meta = new Map<JournalClient, Buffer>();

  /** The stream ended and is published: nothing of it is needed any more. */
  unregister(client: JournalClient): void {
    this.meta.delete(client);
  }

  /**
   * Keep a frame the timeline accepted. `payload[offset .. offset + length)` is normally
   * `buf[at ..)` (decoded there by the gateway): then nothing is copied.
   */
  commit(client: JournalClient, channel: number, start: number, payload: Buffer, offset: number, length: number, arrival: number): void {
    if (this.failed) return;
    if (client.journalGen !== this.gen) {
      if (!this.enter(client, payload, offset, length)) return;
    } else if (payload !== this.buf || offset !== this.at) {
      payload.copy(this.buf, this.at, offset, offset + length);
    }
    const b = this.buf;
    const h = this.at - HEADER_BYTES;
    b[h] = REC_FRAME;
    b[h + 1] = channel;
    b.writeUInt16LE(length, h + 2);
    b.writeUInt32LE(client.journalNo, h + 4);
    b.writeUInt32LE(start >>> 0, h + 8);
    if (this.oldest !== this.oldest) this.oldest = arrival;
    this.at += length + HEADER_BYTES;
    if (this.at + MAX_PAYLOAD_BYTES > b.length) this.flush(true);
  }

  /**
   * First frame of a client in the current file: its open record goes first (the payload moves
   * behind it; copy handles the overlap), and the client is noted for the file's deletion.
   */
  private enter(client: JournalClient, payload: Buffer, offset: number, length: number): boolean {
    const m = this.meta.get(client);
    if (m === undefined) return false;
    const need = m.length + HEADER_BYTES;
    if (this.at + need + MAX_PAYLOAD_BYTES > this.buf.length) this.flush(true); // the payload stays readable in the old buffer
    const b = this.buf;
    payload.copy(b, this.at + need, offset, offset + length);
    const h = this.at - HEADER_BYTES;
    b[h] = REC_OPEN;
    b[h + 1] = 0;
    b.writeUInt16LE(m.length, h + 2);
    b.writeUInt32LE(client.journalNo, h + 4);
    b.writeUInt32LE(0, h + 8);
    m.copy(b, this.at);
    this.at += need;
    client.journalGen = this.gen;
    this.clients.push(client);
    return true;
  }

  private tick(): void {
    this.flush();
    // deletion checks every stream of every closed file: a few times a second is enough
    if (++this.ticks % 4 === 0) void this.collect();
  }

  private ticks = 0;

  /**
   * Hand what is buffered to the kernel (one write, chained after the previous one). When the
   * file is old enough this is its last write: the next records start a new generation (each
   * stream writes its open record again) and go to a new file.
   */
  flush(force = false): void {
    const used = this.at - HEADER_BYTES;
    if (used === 0 || this.failed) return;
    // Group commit: while a write is in flight, frames keep accumulating in this buffer (one
    // larger write next), unless it is full. Never a buffer per tick when the disk is slow.
    if (this.writing !== null && !force) return;
    const data = this.buf;
    const oldest = this.oldest;
    this.buf = this.spare.pop() ?? Buffer.allocUnsafeSlow(BUFFER_BYTES);
    this.at = HEADER_BYTES;
    this.oldest = Number.NaN;
    let last: ClosedFile | null = null;
    if (this.opts.now() - this.genStartedAt >= JOURNAL_ROTATE_MS) {
      last = { file: '', clients: this.clients, upTo: this.clients.map((c) => c.journalFront) };
      this.clients = [];
      this.gen++;
      this.genStartedAt = this.opts.now();
    }
    const prev = this.writing ?? Promise.resolve();
    const run = prev.then(() => this.write(data, used, oldest)).then(() => (last === null ? undefined : this.rotate(last)));
    this.writing = run;
    void run.finally(() => { if (this.writing === run) this.writing = null; });
  }

  private genStartedAt = 0;

  private async write(data: Buffer, used: number, oldest: number): Promise<void> {
    try {
      const fh = await this.current();
      let done = 0;
      while (done < used) done += (await fh.write(data, done, used - done, this.fileBytes + done)).bytesWritten;
      this.fileBytes += used;
      this.opts.onCommitted?.(used, this.opts.now() - oldest);
    } catch (err) {
      // The disk refused the journal (full, read-only): the recordings come first. The journal
      // stops and gives its space back; segment files go back to prompt writes (see `ok`), and a
      // crash may again lose up to the jitter window.
      this.failed = true;
      this.opts.onError?.(err as Error);
      await this.dropFiles();
    } finally {
      if (this.spare.length < 2) this.spare.push(data);
    }
  }

  /** The file's last write is done: close it; it is deleted once its streams are in segment files. */
  private async rotate(entry: ClosedFile): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh === null) return;
    entry.file = this.file;
    this.closed.push(entry);
    await fh.close().catch(() => undefined);
  }

  private async current(): Promise<FileHandle> {
    if (this.fh !== null) return this.fh;
    await mkdir(this.opts.dir, { recursive: true });
    this.file = path.join(this.opts.dir, `${String(Date.now()).padStart(15, '0')}-${this.token}-${String(this.seq++).padStart(6, '0')}${JOURNAL_EXT}`);
    this.fh = await open(this.file, 'w');
    this.fileBytes = 0;
    return this.fh;
  }

  /** Delete closed files whose audio every stream has in its segment files (or published). */
  private async collect(): Promise<void> {
    if (this.collecting) return;
    this.collecting = true;
    try {
      // any file whose streams are all safe goes, not only the oldest: a stream that went quiet
      // (its last second still in the ring until it ends) holds only the files it wrote to
      for (let k = 0; k < this.closed.length;) {
        const f = this.closed[k]!; // k < this.closed.length
        // upTo runs parallel to clients, so both last entries exist while clients is not empty
        while (f.clients.length > 0 && f.clients[f.clients.length - 1]!.durableTo() >= f.upTo[f.upTo.length - 1]!) {
          f.clients.pop();
          f.upTo.pop();
        }
        if (f.clients.length > 0) {
          k++;
          continue;
        }
        this.closed.splice(k, 1);
        await unlink(f.file).catch(() => undefined);
      }
    } finally {
      this.collecting = false;
    }
  }

  private collecting = false;

  /** false once the journal could not write: nothing is journaled any more */
  get ok(): boolean {
    return !this.failed;
  }

  private async dropFiles(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close().catch(() => undefined);
    for (const f of this.closed) await unlink(f.file).catch(() => undefined);
    this.closed.length = 0;
    if (this.file) await unlink(this.file).catch(() => undefined);
  }

  /** Streams whose frames are not all in segment files yet (tests, metrics). */
  get filesKept(): number {
    return this.closed.length + (this.fh !== null ? 1 : 0);
  }

  /** Write what is buffered and stop (a clean shutdown: every stream was published). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.flush(true);
    while (this.writing) await this.writing;
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close().catch(() => undefined);
    // published streams need none of it; what a stream still holds is replayed at the next start
    if (this.meta.size === 0) {
      for (const f of this.closed) await unlink(f.file).catch(() => undefined);
      if (this.file) await unlink(this.file).catch(() => undefined);
      this.closed.length = 0;
    }
  }
}

/** The journal files a previous process left, oldest first (this process's own excluded). */
export async function leftoverJournalFiles(dir: string, ownToken?: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => n.endsWith(JOURNAL_EXT) && (ownToken === undefined || !n.includes(`-${ownToken}-`)))
    .sort()
    .map((n) => path.join(dir, n));
}
