// Opening a file when the process (EMFILE) or the system (ENFILE) is out of descriptors, or the
// kernel says try again (EAGAIN), is a passing shortage, not a reason to lose a finished
// recording: retry with back-off until a descriptor frees up (sockets time out, other segments
// finish publishing). Used for every open on the way from partial to published file.
import { open, type FileHandle } from 'node:fs/promises';
import type { PathLike } from 'node:fs';

const SHORTAGE = new Set(['EMFILE', 'ENFILE', 'EAGAIN']);

export interface FdRetryOptions {
  /** first delay, doubled per attempt up to maxDelayMs */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** give up (rethrow) after this long */
  deadlineMs?: number;
}

export function isFdShortage(err: unknown): boolean {
  return typeof err === 'object' && err !== null && SHORTAGE.has((err as NodeJS.ErrnoException).code ?? '');
}

/** Run `fn`, again after a back-off for as long as it fails for lack of descriptors. */
export async function retryOnFdShortage<T>(fn: () => Promise<T>, opts: FdRetryOptions = {}): Promise<T> {
  const base = opts.baseDelayMs ?? 10;
  const max = opts.maxDelayMs ?? 1000;
  const deadline = performance.now() + (opts.deadlineMs ?? 5 * 60 * 1000);
  for (let delay = base; ; delay = Math.min(max, delay * 2)) {
    try {
      return await fn();
    } catch (err) {
      if (!isFdShortage(err) || performance.now() + delay > deadline) throw err;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** fs.promises.open that waits out a descriptor shortage. */
export function openRetrying(file: PathLike, flags: string | number, mode?: number): Promise<FileHandle> {
  return retryOnFdShortage(() => open(file, flags, mode));
}
