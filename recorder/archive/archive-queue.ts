// The durable archive queue: one small JSON file per pending recording in
// RECORDINGS_DIR/.archive-queue/<nodeId>/, written atomically when the recording is published
// and deleted when its archive is done (or the recording is gone). A restart loads what is
// left and finishes it. Per node, because in a cluster the volume is shared and each node
// archives what it published.
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../atomic-file.js';
import { RECORDING_ID_RE } from '../storage-layout.js';
import { isArchiveFormat, type ArchiveFormat } from './formats.js';

export const ARCHIVE_QUEUE_DIR = '.archive-queue';

export interface ArchiveJob {
  recordingId: string;
  format: ArchiveFormat;
  /** the sidecar, relative to RECORDINGS_DIR: where to clean up if the recording is deleted meanwhile */
  sidecar: string;
  enqueuedAt: string;
}

function parseJob(text: string, name: string): ArchiveJob {
  const j = JSON.parse(text) as Partial<ArchiveJob>;
  if (
    typeof j.recordingId !== 'string' || !RECORDING_ID_RE.test(j.recordingId) || `${j.recordingId}.json` !== name ||
    !isArchiveFormat(j.format) || typeof j.sidecar !== 'string' || path.isAbsolute(j.sidecar) ||
    j.sidecar.split(/[\\/]/).includes('..') || typeof j.enqueuedAt !== 'string'
  ) {
    throw new Error('not an archive job');
  }
  return j as ArchiveJob;
}

export class ArchiveQueue {
  readonly dir: string;

  constructor(recordingsDir: string, nodeId: string) {
    this.dir = path.join(recordingsDir, ARCHIVE_QUEUE_DIR, nodeId);
  }

  /** Jobs left by a previous run, oldest first; unreadable files are reported and left alone. */
  async load(onBad: (file: string, err: Error) => void): Promise<ArchiveJob[]> {
    await mkdir(this.dir, { recursive: true });
    const jobs: ArchiveJob[] = [];
    for (const name of await readdir(this.dir)) {
      if (name.startsWith('.') || !name.endsWith('.json')) continue; // temp files of atomic writes
      const file = path.join(this.dir, name);
      try {
        jobs.push(parseJob(await readFile(file, 'utf8'), name));
      } catch (err) {
        onBad(file, err as Error);
      }
    }
    return jobs.sort((a, b) => a.enqueuedAt.localeCompare(b.enqueuedAt) || a.recordingId.localeCompare(b.recordingId));
  }

  /** On disk before it resolves. One job per recording: a second add replaces the first. */
  async add(job: ArchiveJob): Promise<void> {
    await writeFileAtomic(path.join(this.dir, `${job.recordingId}.json`), JSON.stringify(job));
  }

  async remove(recordingId: string): Promise<void> {
    await unlink(path.join(this.dir, `${recordingId}.json`)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}
