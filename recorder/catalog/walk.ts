// The importer's walk of RECORDINGS_DIR, depth first with `concurrency` directories listed at once.
// Memory stays flat however many recordings the tree holds: what waits to be listed is kept as the
// listings on the current path (a frame per directory: its subdirectory names and how far the
// walk is through them), not as one path string per directory found. The walk that held every
// call directory's path at once took 400 MB of heap at a million recordings.
import { readdir } from 'node:fs/promises';
import type { Dirent } from 'node:fs';
import path from 'node:path';

export interface WalkOptions {
  root: string;
  /** directories listed at once */
  concurrency: number;
  /**
   * One directory's entries (dot-names already left out). Resolve when they are dealt with: the
   * walk does not list more while `visit`s are pending, so a slow consumer holds the walk back.
   */
  visit: (dir: string, entries: readonly Dirent[]) => Promise<void>;
  /** a directory that could not be listed (the root missing is not an error: nothing is there) */
  onError: (dir: string, err: Error) => void;
  signal?: AbortSignal;
}

interface Frame {
  dir: string;
  /** subdirectory names of `dir` */
  names: string[];
  /** the next one to list */
  next: number;
}

/** Lists every directory under `root` (symlinks not followed, dot-names skipped). */
export async function walkDirectories(o: WalkOptions): Promise<void> {
  const stack: Frame[] = [{ dir: path.dirname(o.root), names: [path.basename(o.root)], next: 0 }];
  let active = 0;
  let waiting: (() => void)[] = [];
  const wakeAll = () => {
    const w = waiting;
    waiting = [];
    for (const r of w) r();
  };
  /** the next directory to list, deepest first */
  const take = (): string | null => {
    for (let top = stack.at(-1); top !== undefined; top = stack.at(-1)) {
      if (top.next < top.names.length) return path.join(top.dir, top.names[top.next++]!); // next < length
      stack.pop();
    }
    return null;
  };

  const list = async (dir: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (dir === o.root && (err as NodeJS.ErrnoException).code === 'ENOENT') return;
      o.onError(dir, err as Error);
      return;
    }
    const kept = entries.filter((d) => !d.name.startsWith('.')); // .inprogress, .deletions, the catalog, temp files
    const subdirs = kept.filter((d) => d.isDirectory()).map((d) => d.name);
    if (subdirs.length > 0) stack.push({ dir, names: subdirs, next: 0 });
    await o.visit(dir, kept);
  };

  const worker = async (): Promise<void> => {
    for (;;) {
      if (o.signal?.aborted) return;
      const dir = take();
      if (dir === null) {
        if (active === 0) return wakeAll(); // nothing listed, nothing being listed: done
        await new Promise<void>((r) => waiting.push(r)); // a listing under way may add subdirectories
        continue;
      }
      active++;
      try {
        await list(dir);
      } finally {
        active--;
        wakeAll();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.concurrency) }, worker));
}
