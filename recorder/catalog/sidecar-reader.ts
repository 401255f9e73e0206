// Reading and checking a batch of sidecars for the importer: what a reader worker (read-worker.ts)
// does off the main thread. Reading and parsing the files was ~100 µs per sidecar of main-thread
// time, the limit of a rebuild, and it blocked the event loop of a live node importing in the
// background. The answer is compact: the catalog's columns of each row in one flat array (strings
// and numbers, cheap to copy between threads), not the parsed sidecar objects.
//
// Files are read synchronously into one reused buffer (open, read, close: three system calls; the
// worker has nothing else to do meanwhile), so a batch costs no promise or buffer per file.
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { rowFields, type RowFields } from './catalog.js';
import { InvalidSidecarError, parseSidecar } from './parse-sidecar.js';

/** One batch of sidecars to read: `names[i]` lies in `dirs[dirOf[i]]`, whose files are `files[dirOf[i]]`. */
export interface ReadRequest {
  /** RECORDINGS_DIR of the catalog (rows keep their path relative to it) */
  base: string;
  dirs: string[];
  /** every file name of each directory (is the audio beside the sidecar?) */
  files: string[][];
  dirOf: number[];
  names: string[];
}

/** ROW_WIDTH values per row, in the order of `rowOf`. */
export const ROW_WIDTH = 10;

export interface ReadResult {
  rows: (string | number | null)[];
  /** per sidecar that could not be catalogued: its path, 'invalid' or 'io', the message, the errno code or '' */
  bad: string[];
}

/** A sidecar larger than this is refused (a real one is a few KB). */
export const MAX_SIDECAR_BYTES = 16 * 1024 * 1024;

let buf = Buffer.allocUnsafe(64 * 1024);

function readText(file: string): string {
  const fd = openSync(file, 'r');
  try {
    let n = 0;
    for (;;) {
      const want = buf.length - n;
      const got = readSync(fd, buf, n, want, null);
      n += got;
      // a short read of a regular file is its end (an empty read also)
      if (got < want) break;
      if (buf.length >= MAX_SIDECAR_BYTES) throw new InvalidSidecarError(`larger than ${MAX_SIDECAR_BYTES} bytes`);
      const bigger = Buffer.allocUnsafe(buf.length * 2);
      buf.copy(bigger, 0, 0, n);
      buf = bigger;
    }
    return buf.toString('utf8', 0, n);
  } finally {
    closeSync(fd);
  }
}

export function rowOf(f: RowFields): (string | number | null)[] {
  return [f.id, f.accountSid, f.callSid, f.ctiSessionId, f.employeeId, f.closeReason, f.startedMs, f.durationMs, f.relPath, f.json];
}

/** The i-th row of a ReadResult's `rows`. */
export function fieldsAt(rows: readonly (string | number | null)[], i: number): RowFields {
  const o = i * ROW_WIDTH;
  return {
    id: rows[o] as string,
    accountSid: rows[o + 1] as string,
    callSid: rows[o + 2] as string,
    ctiSessionId: rows[o + 3] as string | null,
    employeeId: rows[o + 4] as string | null,
    closeReason: rows[o + 5] as string | null,
    startedMs: rows[o + 6] as number,
    durationMs: rows[o + 7] as number,
    relPath: rows[o + 8] as string,
    json: rows[o + 9] as string,
  };
}

export function readBatch(req: ReadRequest): ReadResult {
  const rows: (string | number | null)[] = [];
  const bad: string[] = [];
  const fileSets = new Map<number, Set<string>>();
  for (let i = 0; i < req.names.length; i++) {
    const d = req.dirOf[i]!; // dirOf and names have one entry per sidecar
    const name = req.names[i]!;
    const sidecarPath = path.join(req.dirs[d]!, name);
    try {
      const sidecar = parseSidecar(readText(sidecarPath), name);
      let files = fileSets.get(d);
      if (files === undefined) {
        files = new Set(req.files[d]);
        fileSets.set(d, files);
      }
      // with ARCHIVE_KEEP_WAV=false the archive stands in for the removed WAV
      if (!files.has(sidecar.audioFile) && !(sidecar.archive && files.has(sidecar.archive.file))) {
        throw new InvalidSidecarError(`audio file ${sidecar.audioFile} is missing beside the sidecar`);
      }
      for (const v of rowOf(rowFields(req.base, sidecar, sidecarPath))) rows.push(v);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      bad.push(sidecarPath, e instanceof InvalidSidecarError ? 'invalid' : 'io', e.message, e.code ?? '');
    }
  }
  return { rows, bad };
}

/** A `bad` entry of a ReadResult as the error the importer reports. */
export function errorOf(kind: string, message: string, code: string): Error {
  if (kind === 'invalid') return new InvalidSidecarError(message);
  const e: NodeJS.ErrnoException = new Error(message);
  if (code !== '') e.code = code;
  return e;
}
