// Deletions by a recording rule, made durable: before any file goes, a record of the deletion
// (the sidecar and the reason) is written to RECORDINGS_DIR/.deletions/<recordingId>.json. Then
// the sidecar and the audio are removed, `onDeleted` runs (the `deleted` webhook), and the record
// goes. The compressed archive (.opus/.flac/.mp3, made or being made) goes with the audio, named
// from the recording id, so a retry after a restart removes it too. A deletion that fails (the
// disk refuses the unlink) raises a `delete_failed` alarm and is retried with back-off; a restart
// retries whatever records are left, so a recording a rule deleted never comes back into the
// index, and its audio never stays on disk for good.
import { readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from './atomic-file.js';
import { crashPoint } from './crash-points.js';
import { sidecarPathOf } from './storage-layout.js';
import type { RecordingSidecar } from './sidecar.js';
import type { AlarmInput, AlarmKind } from './alarms.js';
import { ARCHIVE_FORMATS, archiveFileName } from './archive/formats.js';

export const DELETIONS_DIR = '.deletions';

export interface DeletionRecord {
  sidecar: RecordingSidecar;
  reason: string;
  at: string;
  /** the node that decided it: in a cluster, only that node retries it */
  nodeId?: string;
}

export interface DeletionsOptions {
  recordingsDir: string;
  nodeId: string;
  /** cluster mode: retry only this node's deletions (the volume is shared) */
  onlyOwn: boolean;
  raise: (kind: AlarmKind, input: AlarmInput) => void;
  /** the files are gone (runs again after a crash before the record went: at least once) */
  onDeleted: (rec: DeletionRecord) => Promise<void>;
  log: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };
  baseDelayMs?: number;
  maxDelayMs?: number;
  wallNow?: () => Date;
}

export class Deletions {
  readonly dir: string;
  /** recordingId → failures so far, for deletions waiting for a retry */
  private readonly retrying = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly inFlight = new Set<Promise<unknown>>();
  private stopped = false;

  constructor(private readonly o: DeletionsOptions) {
    this.dir = path.join(o.recordingsDir, DELETIONS_DIR);
  }

  /** recordingIds whose deletion is not finished (the index must not list them) */
  async pendingIds(): Promise<string[]> {
    try {
      return (await readdir(this.dir)).filter((n) => n.endsWith('.json') && !n.startsWith('.')).map((n) => n.slice(0, -5));
    } catch {
      return [];
    }
  }

  /** Retry every deletion a previous run left unfinished. Returns how many there were. */
  async resume(): Promise<number> {
    const ids = await this.pendingIds();
    for (const id of ids) {
      let rec: DeletionRecord;
      try {
        rec = JSON.parse(await readFile(path.join(this.dir, `${id}.json`), 'utf8')) as DeletionRecord;
      } catch (err) {
        this.o.log.warn({ recordingId: id, err }, 'unreadable deletion record: left for an operator');
        continue;
      }
      if (this.o.onlyOwn && rec.nodeId !== undefined && rec.nodeId !== this.o.nodeId) continue;
      this.o.log.info({ recordingId: id, reason: rec.reason }, 'retrying a deletion left by the previous run');
      void this.track(this.attempt(rec)); // fire and forget: attempt() logs, alarms and retries its own failures
    }
    return ids.length;
  }

  /** Delete a published recording for `reason`; resolves true when its files are gone now. */
  async delete(sidecar: RecordingSidecar, reason: string): Promise<boolean> {
    const rec: DeletionRecord = { sidecar, reason, at: (this.o.wallNow?.() ?? new Date()).toISOString(), nodeId: this.o.nodeId };
    await writeFileAtomic(this.recordPath(sidecar.recordingId), JSON.stringify(rec));
    return this.track(this.attempt(rec));
  }

  private recordPath(recordingId: string): string {
    return path.join(this.dir, `${recordingId}.json`);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    // the caller awaits `p` and sees its error; this chain only must not raise it a second time
    void p.finally(() => this.inFlight.delete(p)).catch(() => undefined);
    return p;
  }

  private async attempt(rec: DeletionRecord): Promise<boolean> {
    const id = rec.sidecar.recordingId;
    try {
      const sidecarPath = sidecarPathOf(this.o.recordingsDir, rec.sidecar);
      const gone = (e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; };
      // the sidecar first: the index never lists a recording whose audio is already gone
      await unlink(sidecarPath).catch(gone);
      crashPoint('delete:sidecar-removed');
      const dir = path.dirname(sidecarPath);
      await unlink(path.join(dir, rec.sidecar.audioFile)).catch(gone);
      // every format, not only sidecar.archive: an archive job may have renamed its file in after
      // the sidecar was read (the archiver also removes a late one: its sidecar rewrite finds the
      // recording gone)
      for (const f of ARCHIVE_FORMATS) await unlink(path.join(dir, archiveFileName(id, f))).catch(gone);
      await this.o.onDeleted(rec);
      await unlink(this.recordPath(id)).catch(gone);
      if (this.retrying.delete(id)) this.o.log.info({ recordingId: id }, 'deletion retried successfully');
      return true;
    } catch (err) {
      const failures = (this.retrying.get(id) ?? 0) + 1;
      this.retrying.set(id, failures);
      const delay = Math.min(this.o.maxDelayMs ?? 5 * 60_000, (this.o.baseDelayMs ?? 1000) * 2 ** Math.min(failures - 1, 30));
      if (failures === 1) {
        this.o.raise('delete_failed', {
          message: `recording ${id} could not be deleted (${rec.reason}): ${(err as Error).message}; retrying`,
          recordingId: id, callSid: rec.sidecar.callSid, streamSid: rec.sidecar.streamSid,
          details: { reason: rec.reason, code: (err as NodeJS.ErrnoException).code ?? null },
        });
      } else {
        this.o.log.warn({ recordingId: id, attempts: failures, retryInMs: delay, err }, 'deletion still failing; will retry');
      }
      if (!this.stopped) {
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          if (!this.stopped) void this.track(this.attempt(rec)); // as in resume(): attempt() handles its failures
        }, delay);
        timer.unref();
        this.timers.add(timer);
      }
      return false;
    }
  }

  /** deletions waiting for a retry (for tests and metrics) */
  get failing(): number {
    return this.retrying.size;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }
}
