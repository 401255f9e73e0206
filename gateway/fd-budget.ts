// File-descriptor headroom. Every WebSocket is a descriptor, and each stream needs a few more
// (partial WAV, checkpoint, one at a time while publishing). If sockets took the last ones, a
// live call would hit EMFILE at publish and lose its recording, so new upgrades are refused
// (503) while the descriptors in use plus what the open sockets may still need would pass
// RLIMIT_NOFILE. Linux only (/proc); elsewhere there is no budget and MAX_STREAMS alone limits.
// The count of /proc/self/fd is refreshed asynchronously at most once a second, and between
// readings the sockets opened or closed since are added: nothing per frame, no sync I/O.
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';

/** descriptors a socket may still need once its stream runs (partial, checkpoint, one publish) */
export const FDS_PER_STREAM = 3;
/** kept free for everything else (API requests, Redis, the index, webhooks, logs) */
export const FIXED_RESERVE = 32;
const SAMPLE_MS = 1000;

/** The soft "Max open files" limit from /proc/self/limits text; null when absent or unlimited. */
export function parseOpenFilesLimit(limits: string): number | null {
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(limits);
  if (!m || m[1] === 'unlimited') return null;
  return Number(m[1]);
}

export class FdBudget {
  /** descriptors counted at the last reading, and the open sockets at that moment */
  private counted = 0;
  private socketsAtCount = 0;
  private countedAt = -Infinity;
  private counting = false;

  constructor(
    readonly limit: number,
    private readonly openSockets: () => number,
    private readonly countFds: () => Promise<number> = async () => (await readdir('/proc/self/fd')).length,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** This process's budget, or null where /proc is not available. */
  static forThisProcess(openSockets: () => number): FdBudget | null {
    try {
      const limit = parseOpenFilesLimit(readFileSync('/proc/self/limits', 'utf8'));
      return limit === null ? null : new FdBudget(limit, openSockets);
    } catch {
      return null;
    }
  }

  /** Read the count now (start-up, tests); later readings happen in the background. */
  async refresh(): Promise<void> {
    const sockets = this.openSockets();
    const n = await this.countFds();
    this.counted = n;
    this.socketsAtCount = sockets;
    this.countedAt = this.now();
  }

  /** descriptors in use: the last reading plus the sockets opened since */
  get inUse(): number {
    if (!this.counting && this.now() - this.countedAt >= SAMPLE_MS) {
      this.counting = true;
      // a failed count keeps the previous reading (taken at start); the next sample tries again
      void this.refresh().catch(() => undefined).finally(() => { this.counting = false; });
    }
    return this.counted + (this.openSockets() - this.socketsAtCount);
  }

  /** May one more socket be accepted? */
  allowsOneMore(): boolean {
    return this.inUse + 1 + FDS_PER_STREAM * (this.openSockets() + 1) + FIXED_RESERVE <= this.limit;
  }

  /** About how many streams this limit carries, counted from the descriptors in use now. */
  capacity(): number {
    return Math.max(0, Math.floor((this.limit - FIXED_RESERVE - this.inUse) / (FDS_PER_STREAM + 1)));
  }
}
