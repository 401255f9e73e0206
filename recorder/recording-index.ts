// The in-memory index of finished recordings that the API answers from. Filled once at start
// from RECORDINGS_DIR (load) and kept current by whoever publishes or deletes a recording
// (add / remove); in cluster mode other nodes' recordings arrive through `add` as well.
//
// Order everywhere is ascending (startedAt, recordingId). One sorted array holds everything;
// per-callSid / ctiSessionId / employeeId arrays, sorted the same way, let a filtered query
// walk only the candidates of its most selective filter.
import { opendir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { RecordingSidecar } from './sidecar.js';
import { RECORDING_ID_RE } from './storage-layout.js';
import { archiveFileName, isArchiveFormat } from './archive/formats.js';

export interface IndexedRecording {
  readonly sidecar: RecordingSidecar;
  /** absolute path of the JSON sidecar */
  readonly sidecarPath: string;
  /** absolute path of the WAV beside it */
  readonly audioPath: string;
}

export interface RecordingQuery {
  /** only this account's recordings (a per-source API key) */
  accountSid?: string;
  callSid?: string;
  ctiSessionId?: string;
  employeeId?: string;
  /** startedAt >= from */
  from?: Date;
  /** startedAt < to */
  to?: Date;
  limit: number;
  /** from a previous page's nextCursor */
  cursor?: string;
}

export interface RecordingPage {
  items: RecordingSidecar[];
  /** null when there is nothing after the last item */
  nextCursor: string | null;
}

/** A cursor that this index did not produce (or that was mangled on the way). */
export class InvalidCursorError extends Error {
  override name = 'InvalidCursorError';
}

/** A sidecar that cannot be indexed: not JSON, missing fields, wrong names. */
export class InvalidSidecarError extends Error {
  override name = 'InvalidSidecarError';
}

interface Entry extends IndexedRecording {
  /** startedAt as epoch ms: the primary sort key */
  readonly t: number;
  readonly id: string;
}

interface Position {
  t: number;
  id: string;
}

function compare(a: Position, b: Position): number {
  return a.t - b.t || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** First index whose entry sorts after `p` (or at/after it when `inclusive`). */
function lowerBound(list: readonly Entry[], p: Position, inclusive: boolean): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const c = compare(list[mid]!, p);
    if (c < 0 || (c === 0 && !inclusive)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function insertSorted(list: Entry[], e: Entry): void {
  list.splice(lowerBound(list, e, true), 0, e);
}

function removeSorted(list: Entry[], e: Entry): void {
  const i = lowerBound(list, e, true);
  if (list[i] === e) list.splice(i, 1);
}

const MAX_CURSOR_LENGTH = 256;

export function encodeCursor(p: Position): string {
  return Buffer.from(JSON.stringify([p.t, p.id]), 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string): Position {
  const bad = (why: string) =>
    new InvalidCursorError(`cursor ${JSON.stringify(cursor.slice(0, 40))} is not valid: ${why}; pass the nextCursor of a previous page unchanged`);
  if (cursor.length === 0 || cursor.length > MAX_CURSOR_LENGTH || !/^[A-Za-z0-9_-]+$/.test(cursor)) {
    throw bad('not base64url text of the expected size');
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad('does not decode');
  }
  if (
    !Array.isArray(value) || value.length !== 2 ||
    !Number.isSafeInteger(value[0]) || typeof value[1] !== 'string' || !RECORDING_ID_RE.test(value[1])
  ) {
    throw bad('does not name a position');
  }
  return { t: value[0] as number, id: value[1] };
}

function isStr(v: unknown): v is string {
  return typeof v === 'string';
}

function isNullableStr(v: unknown): v is string | null {
  return v === null || typeof v === 'string';
}

/** `archive` names `<recordingId>.<its format>` beside the sidecar, nothing else. */
function validArchiveField(a: unknown, recordingId: unknown): boolean {
  if (typeof a !== 'object' || a === null) return false;
  const { format, file } = a as { format?: unknown; file?: unknown };
  return isArchiveFormat(format) && typeof recordingId === 'string' && file === archiveFileName(recordingId, format);
}

/**
 * Checks the fields the index and the API depend on; the rest of the sidecar is passed through.
 * `fileName` is the sidecar's own name, which must be `<recordingId>.json`.
 */
export function parseSidecar(text: string, fileName: string): RecordingSidecar {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new InvalidSidecarError(`not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidSidecarError('not a JSON object');
  const s = v as Record<string, unknown>;
  const problems: string[] = [];
  if (!isStr(s.recordingId) || !RECORDING_ID_RE.test(s.recordingId)) problems.push('recordingId');
  for (const k of ['accountSid', 'callSid', 'streamSid', 'startedAt', 'endedAt', 'audioFile', 'sha256'] as const) {
    if (!isStr(s[k])) problems.push(k);
  }
  for (const k of ['ctiSessionId', 'employeeId'] as const) {
    if (!isNullableStr(s[k])) problems.push(k);
  }
  if (s.channels !== 1 && s.channels !== 2) problems.push('channels');
  if (s.encoding !== 'mulaw' && s.encoding !== 'pcm16') problems.push('encoding');
  if (isStr(s.startedAt) && !Number.isFinite(Date.parse(s.startedAt))) problems.push('startedAt');
  if (isStr(s.audioFile) && (path.basename(s.audioFile) !== s.audioFile || !s.audioFile.endsWith('.wav') || s.audioFile.startsWith('.'))) {
    problems.push('audioFile');
  }
  if (s.archive !== undefined && !validArchiveField(s.archive, s.recordingId)) problems.push('archive');
  if (problems.length > 0) throw new InvalidSidecarError(`missing or invalid field(s): ${problems.join(', ')}`);
  if (fileName !== `${s.recordingId as string}.json`) {
    throw new InvalidSidecarError(`file name ${fileName} does not match recordingId ${s.recordingId as string}`);
  }
  return s as unknown as RecordingSidecar;
}

/** How many sidecars are read at once while loading. */
const LOAD_CONCURRENCY = 32;

export class RecordingIndex {
  readonly recordingsDir: string;
  #all: Entry[] = [];
  #byId = new Map<string, Entry>();
  #byCall = new Map<string, Entry[]>();
  #byCti = new Map<string, Entry[]>();
  #byEmployee = new Map<string, Entry[]>();

  constructor(recordingsDir: string) {
    this.recordingsDir = path.resolve(recordingsDir);
  }

  get size(): number {
    return this.#all.length;
  }

  /**
   * Walks RECORDINGS_DIR (skipping dot-folders such as `.inprogress`, not following symlinks)
   * and indexes every `<recordingId>.json` whose audio file lies beside it. A sidecar that cannot
   * be read or parsed, or whose audio is missing, is reported through `onBadFile` and skipped.
   * Returns the number of recordings indexed by this call.
   */
  async load(onBadFile?: (path: string, err: Error) => void): Promise<number> {
    const found: Entry[] = [];
    const foundById = new Map<string, Entry>();
    const report = (p: string, err: Error) => onBadFile?.(p, err);
    const pending: Array<{ dir: string; name: string; files: Set<string> }> = [];

    const walk = async (dir: string): Promise<void> => {
      let handle;
      try {
        handle = await opendir(dir);
      } catch (err) {
        // the root may not exist yet on a fresh install: nothing to index
        if (dir === this.recordingsDir && (err as NodeJS.ErrnoException).code === 'ENOENT') return;
        report(dir, err as Error);
        return;
      }
      const subdirs: string[] = [];
      const files = new Set<string>();
      const sidecars: string[] = [];
      for await (const d of handle) {
        if (d.name.startsWith('.')) continue; // .inprogress, temp files of atomic writes
        if (d.isDirectory()) subdirs.push(path.join(dir, d.name));
        else if (d.isFile()) {
          files.add(d.name);
          if (d.name.endsWith('.json')) sidecars.push(d.name);
        }
      }
      for (const name of sidecars) pending.push({ dir, name, files });
      for (const sub of subdirs) await walk(sub);
    };
    await walk(this.recordingsDir);

    let next = 0;
    const worker = async () => {
      while (next < pending.length) {
        const { dir, name, files } = pending[next++]!;
        const sidecarPath = path.join(dir, name);
        try {
          const sidecar = parseSidecar(await readFile(sidecarPath, 'utf8'), name);
          // with ARCHIVE_KEEP_WAV=false the archive stands in for the removed WAV
          if (!files.has(sidecar.audioFile) && !(sidecar.archive && files.has(sidecar.archive.file))) {
            throw new InvalidSidecarError(`audio file ${sidecar.audioFile} is missing beside the sidecar`);
          }
          const seen = foundById.get(sidecar.recordingId);
          if (seen) throw new InvalidSidecarError(`recordingId ${sidecar.recordingId} is already indexed from ${seen.sidecarPath}`);
          const e = this.#entry(sidecar, sidecarPath);
          foundById.set(e.id, e);
          found.push(e);
        } catch (err) {
          report(sidecarPath, err as Error);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LOAD_CONCURRENCY, pending.length) }, worker));

    this.#addMany(found);
    return found.length;
  }

  /** Indexes a recording; one with the same recordingId is replaced. */
  add(sidecar: RecordingSidecar, sidecarPath: string): void {
    const e = this.#entry(sidecar, path.resolve(sidecarPath));
    this.remove(e.id);
    this.#byId.set(e.id, e);
    insertSorted(this.#all, e);
    for (const [map, key] of this.#keys(e)) {
      const list = map.get(key);
      if (list) insertSorted(list, e);
      else map.set(key, [e]);
    }
  }

  remove(recordingId: string): boolean {
    const e = this.#byId.get(recordingId);
    if (!e) return false;
    this.#byId.delete(recordingId);
    removeSorted(this.#all, e);
    for (const [map, key] of this.#keys(e)) {
      const list = map.get(key)!;
      removeSorted(list, e);
      if (list.length === 0) map.delete(key);
    }
    return true;
  }

  get(recordingId: string): IndexedRecording | undefined {
    const e = this.#byId.get(recordingId);
    return e && { sidecar: e.sidecar, sidecarPath: e.sidecarPath, audioPath: e.audioPath };
  }

  /** All recordings of a CTI session, in time order. */
  byCtiSession(ctiSessionId: string): RecordingSidecar[] {
    return (this.#byCti.get(ctiSessionId) ?? []).map((e) => e.sidecar);
  }

  /**
   * One page of recordings matching every given filter. The cursor is a position in the order,
   * not an offset, so recordings added or removed meanwhile neither repeat nor skip items that
   * were already in the index; ones added after the cursor position show up on later pages.
   * Throws InvalidCursorError for a cursor this index cannot have produced.
   */
  query(q: RecordingQuery): RecordingPage {
    if (!Number.isInteger(q.limit) || q.limit < 1) throw new RangeError(`limit must be a positive integer, got ${q.limit}`);
    const after = q.cursor === undefined ? undefined : decodeCursor(q.cursor);

    // Walk the smallest candidate list; the other filters are checked per entry.
    let candidates: readonly Entry[] = this.#all;
    for (const [map, key] of [
      [this.#byCall, q.callSid], [this.#byCti, q.ctiSessionId], [this.#byEmployee, q.employeeId],
    ] as const) {
      if (key === undefined) continue;
      const list = map.get(key) ?? [];
      if (list.length < candidates.length) candidates = list;
    }

    const fromT = q.from?.getTime();
    const toT = q.to?.getTime();
    let start = 0;
    if (fromT !== undefined) start = lowerBound(candidates, { t: fromT, id: '' }, true);
    if (after) start = Math.max(start, lowerBound(candidates, after, false));

    const items: RecordingSidecar[] = [];
    let last: Entry | undefined;
    let more = false;
    for (let i = start; i < candidates.length; i++) {
      const e = candidates[i]!;
      if (toT !== undefined && e.t >= toT) break;
      if (
        (q.accountSid !== undefined && e.sidecar.accountSid !== q.accountSid) ||
        (q.callSid !== undefined && e.sidecar.callSid !== q.callSid) ||
        (q.ctiSessionId !== undefined && e.sidecar.ctiSessionId !== q.ctiSessionId) ||
        (q.employeeId !== undefined && e.sidecar.employeeId !== q.employeeId)
      ) continue;
      if (items.length === q.limit) {
        more = true;
        break;
      }
      items.push(e.sidecar);
      last = e;
    }
    return { items, nextCursor: more && last ? encodeCursor(last) : null };
  }

  #entry(sidecar: RecordingSidecar, sidecarPath: string): Entry {
    const t = Date.parse(sidecar.startedAt);
    if (!RECORDING_ID_RE.test(sidecar.recordingId)) throw new InvalidSidecarError(`invalid recordingId ${JSON.stringify(sidecar.recordingId)}`);
    if (!Number.isFinite(t)) throw new InvalidSidecarError(`recording ${sidecar.recordingId}: startedAt ${JSON.stringify(sidecar.startedAt)} is not a date`);
    if (path.basename(sidecar.audioFile) !== sidecar.audioFile || sidecar.audioFile.startsWith('.')) {
      throw new InvalidSidecarError(`recording ${sidecar.recordingId}: audioFile ${JSON.stringify(sidecar.audioFile)} is not a plain file name`);
    }
    return {
      sidecar, sidecarPath, audioPath: path.join(path.dirname(sidecarPath), sidecar.audioFile), t, id: sidecar.recordingId,
    };
  }

  #keys(e: Entry): Array<[Map<string, Entry[]>, string]> {
    const keys: Array<[Map<string, Entry[]>, string]> = [[this.#byCall, e.sidecar.callSid]];
    if (e.sidecar.ctiSessionId !== null) keys.push([this.#byCti, e.sidecar.ctiSessionId]);
    if (e.sidecar.employeeId !== null) keys.push([this.#byEmployee, e.sidecar.employeeId]);
    return keys;
  }

  /** Bulk insert for load: append, then sort each touched list once. */
  #addMany(entries: Entry[]): void {
    if (entries.length === 0) return;
    // replacements first, while every list is still sorted (ids within `entries` are unique)
    for (const e of entries) this.remove(e.id);
    const touched = new Set<Entry[]>([this.#all]);
    for (const e of entries) {
      this.#byId.set(e.id, e);
      this.#all.push(e);
      for (const [map, key] of this.#keys(e)) {
        let list = map.get(key);
        if (!list) map.set(key, (list = []));
        list.push(e);
        touched.add(list);
      }
    }
    for (const list of touched) list.sort(compare);
  }
}
