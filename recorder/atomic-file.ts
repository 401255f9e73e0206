// Durable file publication: a reader sees either nothing or the complete file, even across a
// crash. Write elsewhere, fsync the data, rename, fsync the directory (so the rename itself
// survives a power cut).
import { rename, mkdir } from 'node:fs/promises';
// every open here waits out a descriptor shortage (EMFILE) instead of losing a recording
import { openRetrying as open } from './fd-retry.js';
import path from 'node:path';

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Atomically replace `file` with `data`. */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  await fsyncDir(dir);
}

/** Move a finished file into place (same filesystem) and make the move durable. */
export async function publishFile(from: string, to: string): Promise<void> {
  const dir = path.dirname(to);
  await mkdir(dir, { recursive: true });
  await rename(from, to);
  await fsyncDir(dir);
}
