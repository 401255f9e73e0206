// Durable file publication: a reader sees either nothing or the complete file, even across a
// crash. Write elsewhere, fsync the data, rename, fsync the directory (so the rename itself
// survives a power cut).
import { rename, mkdir, unlink, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
// every open here waits out a descriptor shortage (EMFILE) instead of losing a recording
import { openRetrying as open } from './fd-retry.js';
import path from 'node:path';

async function syncDirNow(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** per directory: the fsync running, and the one queued behind it (shared by every caller meanwhile) */
const dirSyncs = new Map<string, { running: Promise<void>; queued: Promise<void> | null }>();

/**
 * Make the entries of `dir` durable. A caller needs an fsync that starts after its call (its
 * rename is done by then): while one runs, every caller waits for the single next one, so a burst
 * of streams starting at once (all renaming into .inprogress) costs two directory syncs, not one each.
 */
export function fsyncDir(dir: string): Promise<void> {
  const s = dirSyncs.get(dir);
  if (s === undefined) {
    const entry = { running: syncDirNow(dir), queued: null as Promise<void> | null };
    dirSyncs.set(dir, entry);
    const settle = (): void => {
      if (entry.queued === null) {
        dirSyncs.delete(dir);
        return;
      }
      // the queued sync starts now and becomes the running one
      entry.running = entry.queued;
      entry.queued = null;
      void entry.running.then(settle, settle);
    };
    void entry.running.then(settle, settle);
    return entry.running;
  }
  // runs once the running one settled (whatever its outcome): one open + fsync + close for all
  s.queued ??= s.running.then(() => syncDirNow(dir), () => syncDirNow(dir));
  return s.queued;
}

/**
 * Atomically replace `file` with `data`. The temporary name is unique per call (random, not the
 * pid: in containers every process is pid 1, and two rewrites in one process share a pid), and
 * created exclusively, so concurrent writers never write into one another's temporary file: the
 * last rename wins with a complete file. Callers that read-modify-write serialise per file
 * (see KeyedLock) so that no update is lost.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx');
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined); // best effort (may not exist): the error that counts is rethrown
    throw err;
  }
  await fsyncDir(dir);
}

/** Move a finished file into place (same filesystem) and make the move durable. */
export async function publishFile(from: string, to: string): Promise<void> {
  const dir = path.dirname(to);
  await mkdir(dir, { recursive: true });
  await rename(from, to);
  await fsyncDir(dir);
}

/**
 * One runner at a time per key (e.g. one writer per recording's sidecar): each call waits for
 * the previous one of its key, then runs; keys with nothing waiting are forgotten.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const result = prev.then(fn);
    const tail = result.then(() => undefined, () => undefined);
    this.tails.set(key, tail);
    void tail.then(() => { if (this.tails.get(key) === tail) this.tails.delete(key); });
    return result;
  }
}

/** Does `file` exist (any error reading it counts as no)? */
export async function fileExists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}
