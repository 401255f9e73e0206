// The archive pool: after a recording is published (and kept), a compressed copy is made beside
// it by at most ARCHIVE_CONCURRENCY ffmpeg processes at a time, at the lowest CPU priority
// (SCHED_IDLE, nice 19, off a pinned media core: ffmpeg.ts), off the media path (ffmpeg does the
// work in its own process; this side only starts it and does file bookkeeping). A job holds its
// ffmpeg slot only while ffmpeg runs (encode, verify): its fsyncs, sidecar rewrite and webhook go
// on beside the next job's encode, so the encoder is never idle waiting for the disk. Jobs are
// durable (archive-queue.ts). Per job: encode to a temporary name, verify, fsync, rename, then
// the sidecar gains `archive`, the WAV is removed when ARCHIVE_KEEP_WAV=false, the webhook is
// told (`archived`), and only then is the job file deleted — so a crash at any point redoes or
// finishes the job at the next start, never leaves a sidecar pointing at nothing.
import { randomBytes } from 'node:crypto';
import { readdir, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { fsyncDir } from '../atomic-file.js';
import type { IndexedRecording } from '../catalog/catalog.js';
import type { RecordingSidecar } from '../sidecar.js';
import { ArchiveQueue, type ArchiveJob } from './archive-queue.js';
import { ARCHIVE_FORMATS, archiveFileName, type ArchiveFormatSetting } from './formats.js';
import { fsyncFile } from './ffmpeg.js';
import { makeArchive } from './make-archive.js';

export interface ArchiverOptions {
  recordingsDir: string;
  nodeId: string;
  concurrency: number;
  keepWav: boolean;
  /** ARCHIVE_FORMAT of the recording's data source */
  formatFor: (sidecar: RecordingSidecar) => ArchiveFormatSetting;
  lookup: (recordingId: string) => Promise<IndexedRecording | undefined>;
  /**
   * Resolves when the catalog's background import of RECORDINGS_DIR is not running (it starts
   * with the gateway, beside this pool). A job whose recording `lookup` does not find while its
   * sidecar is on disk waits for it: not indexed yet is not deleted.
   */
  untilIndexed?: () => Promise<void>;
  /** the sidecar rewrite path (one writer per recording); null when the recording is gone */
  rewriteSidecar: (recordingId: string, change: (cur: RecordingSidecar) => RecordingSidecar) => Promise<RecordingSidecar | null>;
  /** the webhook (`archived`), at least once per archive */
  onArchived?: (sidecar: RecordingSidecar) => Promise<void>;
  /** an archive could not be made (alarm) */
  onFailed: (recordingId: string, err: Error) => void;
  log: Logger;
  wallNow?: () => Date;
}

const gone = (err: NodeJS.ErrnoException) => {
  if (err.code !== 'ENOENT') throw err;
};

const TMP_SUFFIX = '.archive-tmp';

export class Archiver {
  readonly queue: ArchiveQueue;
  /** for metrics */
  readonly counters = { archived: 0, failures: 0, audioSeconds: 0 };
  readonly #o: ArchiverOptions;
  readonly #pending: ArchiveJob[] = [];
  /** ids pending or running (one job per recording) */
  readonly #queued = new Set<string>();
  /** jobs started and not finished (running ffmpeg, or their bookkeeping after it) */
  readonly #running = new Map<string, AbortController>();
  /** jobs holding an ffmpeg slot (at most ARCHIVE_CONCURRENCY) */
  #encoding = 0;
  readonly #workers = new Set<Promise<void>>();
  #started = false;
  #stopped = false;

  constructor(o: ArchiverOptions) {
    this.#o = o;
    this.queue = new ArchiveQueue(o.recordingsDir, o.nodeId);
  }

  /** jobs waiting or running */
  get queueLength(): number {
    return this.#pending.length + this.#running.size;
  }

  /** Load what a previous run left and start working. Returns the number of jobs found. */
  async start(): Promise<number> {
    const left = await this.queue.load((file, err) => this.#o.log.warn({ file, err }, 'skipping unreadable archive job'));
    for (const job of left) this.#push(job);
    this.#started = true;
    this.#pump();
    return left.length;
  }

  /** A recording was published and kept: queue its archive (on disk before this resolves). */
  async published(s: RecordingSidecar): Promise<void> {
    const format = this.#o.formatFor(s);
    const rec = await this.#o.lookup(s.recordingId);
    if (format === 'none' || !rec || this.#queued.has(s.recordingId)) return;
    const job: ArchiveJob = {
      recordingId: s.recordingId,
      format,
      sidecar: path.relative(this.#o.recordingsDir, rec.sidecarPath),
      enqueuedAt: (this.#o.wallNow?.() ?? new Date()).toISOString(),
    };
    this.#queued.add(job.recordingId);
    try {
      await this.queue.add(job);
    } catch (err) {
      this.#queued.delete(job.recordingId);
      throw err;
    }
    this.#queued.delete(job.recordingId);
    this.#push(job);
    this.#pump();
  }

  /** Stop: running ffmpeg processes are killed; their jobs stay queued for the next start. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const ac of this.#running.values()) ac.abort();
    await Promise.all(this.#workers);
  }

  #push(job: ArchiveJob): void {
    if (this.#queued.has(job.recordingId)) return;
    this.#queued.add(job.recordingId);
    this.#pending.push(job);
  }

  #pump(): void {
    if (!this.#started || this.#stopped) return;
    // a slot per ffmpeg; jobs past their ffmpeg (disk bookkeeping) bounded too, by as many again
    while (this.#encoding < this.#o.concurrency && this.#running.size < 2 * this.#o.concurrency && this.#pending.length > 0) {
      const job = this.#pending.shift()!;
      const ac = new AbortController();
      this.#running.set(job.recordingId, ac);
      this.#encoding++;
      let slot = true;
      const release = (): void => {
        if (!slot) return;
        slot = false;
        this.#encoding--;
        this.#pump();
      };
      const worker: Promise<void> = this.#run(job, ac.signal, release).finally(() => {
        release();
        this.#running.delete(job.recordingId);
        this.#queued.delete(job.recordingId);
        this.#workers.delete(worker);
        this.#pump();
      });
      this.#workers.add(worker);
    }
  }

  /** One job; `release` frees its ffmpeg slot (called once ffmpeg is done, else when the job ends). */
  async #run(job: ArchiveJob, signal: AbortSignal, release: () => void): Promise<void> {
    const id = job.recordingId;
    try {
      let rec = await this.#o.lookup(id);
      if (!rec && this.#o.untilIndexed && (await sizeOf(path.join(this.#o.recordingsDir, job.sidecar))) !== null) {
        // the sidecar is there but the catalog has not imported it yet (a start on a folder the
        // catalog is still filling from): wait for the import rather than drop the job
        const aborted = new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
        await Promise.race([this.#o.untilIndexed(), aborted]);
        if (signal.aborted) return; // shutdown: the job stays queued
        rec = await this.#o.lookup(id);
      }
      if (!rec) {
        // deleted (a CTI rule) since it was queued: leave no audio of it behind
        await this.#removeLeftovers(path.join(this.#o.recordingsDir, path.dirname(job.sidecar)), id);
        await this.queue.remove(id);
        return;
      }
      const dir = path.dirname(rec.sidecarPath);
      const name = archiveFileName(id, job.format);
      const final = path.join(dir, name);
      let sidecar: RecordingSidecar | null = rec.sidecar;
      const done = sidecar.archive;
      if (!(done?.format === job.format && done.file === name && (await sizeOf(final)) === done.bytes)) {
        await removeTemps(dir, id);
        const tmp = path.join(dir, `.${name}.${randomBytes(4).toString('hex')}${TMP_SUFFIX}`);
        let made;
        try {
          // while the WAV is kept a cheaper check may do (make-archive.ts, ArchiveVerify)
          made = await makeArchive(rec.audioPath, job.format, tmp, { verify: this.#o.keepWav ? 'packets' : 'decode', signal });
          release(); // ffmpeg is done: the next job's encode starts while this one's disk work goes on
          await fsyncFile(tmp);
          await rename(tmp, final);
        } catch (err) {
          await unlink(tmp).catch(() => undefined); // best effort (may not exist): the error that counts is rethrown
          throw err;
        }
        await fsyncDir(dir);
        const archive = {
          format: job.format, file: name, bytes: made.bytes, sha256: made.sha256, durationMs: made.durationMs, wavKept: this.#o.keepWav,
        };
        sidecar = await this.#o.rewriteSidecar(id, (cur) => ({ ...cur, archive }));
        if (sidecar === null) {
          await unlink(final).catch(gone); // deleted while it was being archived
          await this.queue.remove(id);
          return;
        }
        this.counters.archived++;
        this.counters.audioSeconds += made.durationMs / 1000;
        this.#o.log.info({ recordingId: id, format: job.format, bytes: made.bytes, durationMs: made.durationMs }, 'recording archived');
      }
      if (sidecar.archive?.wavKept === false) {
        await unlink(rec.audioPath).catch(gone);
        await fsyncDir(dir);
      }
      await this.#o.onArchived?.(sidecar);
      await this.queue.remove(id);
    } catch (err) {
      if (signal.aborted) return; // shutdown: the job stays queued
      this.counters.failures++;
      // the job file stays: the next start tries again (ffmpeg missing, disk full, ...)
      this.#o.onFailed(id, err as Error);
    }
  }

  /** Archive files and temporaries of a recording that no longer exists. */
  async #removeLeftovers(dir: string, id: string): Promise<void> {
    const sidecarLeft = await stat(path.join(dir, `${id}.json`)).then(() => true, () => false);
    if (sidecarLeft) return; // not ours to touch: an unindexed sidecar is still a recording
    await removeTemps(dir, id);
    for (const f of ARCHIVE_FORMATS) await unlink(path.join(dir, archiveFileName(id, f))).catch(gone);
  }
}

async function sizeOf(file: string): Promise<number | null> {
  return stat(file).then((s) => s.size, () => null);
}

/** Temporaries of earlier attempts (a crash, a kill): an orphaned ffmpeg may still write into one. */
async function removeTemps(dir: string, id: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    gone(err as NodeJS.ErrnoException);
    return;
  }
  for (const n of names) {
    if (n.startsWith(`.${id}.`) && n.endsWith(TMP_SUFFIX)) await unlink(path.join(dir, n)).catch(gone);
  }
}
