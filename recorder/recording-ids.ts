// Globally unique recordingIds. A recording is `<base>-<segment, 4 digits>`, where a stream's
// base is its streamSid, or `<streamSid>-r<n>` when that streamSid already recorded (a reused
// streamSid, another account's stream with the same streamSid, a second node): the first stream
// keeps its recording, the second is recorded beside it. The base is reserved by an exclusive
// create (`open(..., 'wx')`) of RECORDINGS_DIR/.ids/<shard>/<base> on the shared volume, so two
// streams (on one node or on several nodes sharing the volume) can never take the same id.
// Reservations are never removed: an id, once used, is never used again (not even after its
// recording was deleted), so a webhook eventId never names two different recordings.
import { open, mkdir } from 'node:fs/promises';
import { createHash, randomInt } from 'node:crypto';
import path from 'node:path';
import { fileExists, fsyncDir } from './atomic-file.js';

export const IDS_DIR = '.ids';
/** a stream that reused its streamSid this many times is refused a name: something is looping */
const MAX_GENERATIONS = 10_000;

export function streamBaseFor(streamSid: string, generation: number): string {
  return generation === 0 ? streamSid : `${streamSid}-r${generation}`;
}

export interface ReserveOptions {
  recordingsDir: string;
  streamSid: string;
  /** what the reservation file says (for an operator): account, call, node */
  owner: Record<string, string>;
  /**
   * Is a base already used by a recording that has no reservation (written before reservations
   * existed)? e.g. its first recording is in the index or its file exists.
   */
  usedWithoutReservation?: (base: string) => boolean | Promise<boolean>;
}

function reservationPath(recordingsDir: string, streamSid: string, base: string): string {
  const shard = createHash('sha256').update(streamSid).digest('hex').slice(0, 2);
  return path.join(recordingsDir, IDS_DIR, shard, base);
}

/** Reserve the first free base of a stream; durable (fsynced) before it resolves. */
export async function reserveStreamBase(o: ReserveOptions): Promise<string> {
  const dir = path.dirname(reservationPath(o.recordingsDir, o.streamSid, o.streamSid));
  await mkdir(dir, { recursive: true });
  const body = JSON.stringify({ ...o.owner, reservedAt: new Date().toISOString() });
  for (let g = 0; g < MAX_GENERATIONS; g++) {
    const base = streamBaseFor(o.streamSid, g);
    if (await fileExists(reservationPath(o.recordingsDir, o.streamSid, base))) continue;
    if (o.usedWithoutReservation && (await o.usedWithoutReservation(base))) continue;
    let fh;
    try {
      fh = await open(reservationPath(o.recordingsDir, o.streamSid, base), 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue; // another stream won the race
      throw err;
    }
    try {
      await fh.writeFile(body);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsyncDir(dir);
    return base;
  }
  throw new Error(`streamSid ${o.streamSid} has been used ${MAX_GENERATIONS} times`);
}

/**
 * When the volume refuses the reservation (full, read-only), a base that is unique with
 * overwhelming probability: the stream is still recorded, and never over another recording.
 */
export function unreservedBase(streamSid: string): string {
  return streamBaseFor(streamSid, 1_000_000_000 + randomInt(1_000_000_000));
}
