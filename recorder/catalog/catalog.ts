// The recording catalog the list and search API answers from (contract section 8): SQLite under
// RECORDINGS_DIR by default (sqlite-catalog.ts), PostgreSQL shared by the cluster with
// DATABASE_URL (pg-catalog.ts). The sidecars on disk stay the source of truth: importer.ts fills
// and reconciles the catalog from them in the background.
//
// Order everywhere is ascending (startedAt, recordingId); cursors are keyset positions in that
// order, so inserts and removals between pages neither repeat nor skip listed items.
//
// Deleted recordings never come back: `remove` leaves a tombstone, and every insert (publish,
// import, an announcement from another node) skips a tombstoned id; `update` changes a listed row
// only, it never inserts (an attribution arriving after a deletion must not resurrect it).
import path from 'node:path';
import type { RecordingSidecar } from '../sidecar.js';
import { RECORDING_ID_RE } from '../storage-layout.js';

export interface IndexedRecording {
  readonly sidecar: RecordingSidecar;
  /** absolute path of the JSON sidecar */
  readonly sidecarPath: string;
  /** absolute path of the WAV beside it */
  readonly audioPath: string;
}

export interface RecordingQuery {
  /** only this account's recordings (a per-source API key, or the accountSid filter) */
  accountSid?: string;
  callSid?: string;
  ctiSessionId?: string;
  employeeId?: string;
  closeReason?: string;
  /** durationMs >= minDurationMs */
  minDurationMs?: number;
  /** startedAt >= from */
  from?: Date;
  /** startedAt < to */
  to?: Date;
  limit: number;
  /** from a previous page's nextCursor */
  cursor?: string;
  /** also count every match (all pages) */
  count?: boolean;
}

export interface RecordingPage {
  items: RecordingSidecar[];
  /** null when there is nothing after the last item */
  nextCursor: string | null;
  /** every match, on all pages (only when the query asked for it) */
  total?: number;
}

/** One sidecar read from disk, for a batch insert. */
export interface CatalogRow {
  sidecar: RecordingSidecar;
  /** absolute path of the sidecar */
  sidecarPath: string;
}

export interface Catalog {
  readonly backend: 'sqlite' | 'postgres';
  readonly recordingsDir: string;
  /** Runs the schema migrations that are not applied yet. */
  open(): Promise<void>;
  close(): Promise<void>;

  /** A recording was published (or announced by another node): insert or replace, unless deleted. */
  put(sidecar: RecordingSidecar, sidecarPath: string): Promise<void>;
  /** A listed recording's sidecar changed (attribution, archive): UPDATE only. false: not listed. */
  update(sidecar: RecordingSidecar): Promise<boolean>;
  /** Unlist (and tombstone) a recording; true when it was listed. */
  remove(recordingId: string): Promise<boolean>;
  get(recordingId: string): Promise<IndexedRecording | undefined>;
  /** All recordings of a CTI session, in time order. */
  byCtiSession(ctiSessionId: string): Promise<RecordingSidecar[]>;
  /**
   * All recordings of any of these calls (every account), in one query: a batch of CTI events
   * re-attributes the published recordings of the calls it changed with this (call-control.ts).
   */
  byCalls(callSids: readonly string[]): Promise<RecordingSidecar[]>;
  /** Throws InvalidCursorError for a cursor this catalog cannot have produced. */
  query(q: RecordingQuery): Promise<RecordingPage>;
  /** Recordings listed. */
  count(): Promise<number>;

  // --- import and reconcile (importer.ts) ---
  /** This catalog's clock for import marks (ms; PostgreSQL: the server's, shared by all nodes). */
  clock(): Promise<number>;
  /** Of `ids`, those listed; each is marked seen at `mark`. */
  markSeen(ids: readonly string[], mark: number): Promise<Set<string>>;
  /**
   * Insert or replace (a row whose sidecar and path are unchanged is left as it is), seen at
   * `mark`; tombstoned ids are skipped. Returns the rows now listed as given (all but those).
   */
  insertBatch(rows: readonly CatalogRow[], mark: number): Promise<number>;
  /** insertBatch of rows whose columns are made already (the importer's reader workers make them). */
  insertRows(rows: readonly RowFields[], mark: number): Promise<number>;
  /** Unlist rows not seen since `mark` (their sidecar left the disk); returns how many. */
  removeUnseen(mark: number): Promise<number>;
  /** Refresh the query planner's statistics (after an import changed many rows). */
  optimize(): Promise<void>;
  /** Forget tombstones older than `beforeMs` (their files are long gone). */
  pruneTombstones(beforeMs: number): Promise<number>;
  /** Runs `fn` as the only importer of this catalog (PostgreSQL: across the cluster). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  getMeta(key: string): Promise<string | null>;
  setMeta(key: string, value: string): Promise<void>;

  // --- retention ---
  /**
   * Up to `limit` recordings that started before `before`: of `accountSid` when given, else of
   * every account not in `except`. Oldest first.
   */
  startedBefore(before: Date, accountSid: string | null, except: readonly string[], limit: number): Promise<RecordingSidecar[]>;
}

/** A cursor that this catalog did not produce (or that was mangled on the way). */
export class InvalidCursorError extends Error {
  override name = 'InvalidCursorError';
}

export interface Position {
  /** startedAt, epoch ms */
  t: number;
  id: string;
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

/** The columns a row keeps beside the sidecar JSON (what the filters and the order use). */
export interface RowFields {
  id: string;
  accountSid: string;
  callSid: string;
  ctiSessionId: string | null;
  employeeId: string | null;
  closeReason: string | null;
  startedMs: number;
  durationMs: number;
  /** relative to RECORDINGS_DIR (nodes may mount the volume at different paths) */
  relPath: string;
  json: string;
}

export function rowFields(recordingsDir: string, sidecar: RecordingSidecar, sidecarPath: string): RowFields {
  const startedMs = Date.parse(sidecar.startedAt);
  if (!RECORDING_ID_RE.test(sidecar.recordingId)) throw new InvalidSidecarError(`invalid recordingId ${JSON.stringify(sidecar.recordingId)}`);
  if (!Number.isFinite(startedMs)) throw new InvalidSidecarError(`recording ${sidecar.recordingId}: startedAt ${JSON.stringify(sidecar.startedAt)} is not a date`);
  if (path.basename(sidecar.audioFile) !== sidecar.audioFile || sidecar.audioFile.startsWith('.')) {
    throw new InvalidSidecarError(`recording ${sidecar.recordingId}: audioFile ${JSON.stringify(sidecar.audioFile)} is not a plain file name`);
  }
  const relPath = path.relative(recordingsDir, path.resolve(sidecarPath));
  if (relPath.startsWith('..') || path.isAbsolute(relPath)) {
    throw new InvalidSidecarError(`recording ${sidecar.recordingId}: sidecar ${sidecarPath} is outside RECORDINGS_DIR`);
  }
  return {
    id: sidecar.recordingId,
    accountSid: sidecar.accountSid,
    callSid: sidecar.callSid,
    ctiSessionId: sidecar.ctiSessionId,
    employeeId: sidecar.employeeId,
    closeReason: typeof sidecar.closeReason === 'string' ? sidecar.closeReason : null,
    startedMs,
    durationMs: Number.isFinite(sidecar.durationMs) ? Math.round(sidecar.durationMs) : 0,
    relPath,
    json: JSON.stringify(sidecar),
  };
}

export function indexedOf(recordingsDir: string, json: string, relPath: string): IndexedRecording {
  const sidecar = JSON.parse(json) as RecordingSidecar;
  const sidecarPath = path.join(recordingsDir, relPath);
  return { sidecar, sidecarPath, audioPath: path.join(path.dirname(sidecarPath), sidecar.audioFile) };
}

/** A sidecar that cannot be catalogued: not JSON, missing fields, wrong names. */
export class InvalidSidecarError extends Error {
  override name = 'InvalidSidecarError';
}

export function checkLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`);
}

/**
 * The WHERE clause of a query (without the cursor), shared by both backends: `ph(i)` spells the
 * i-th placeholder (SQLite `?`, PostgreSQL `$i`). Column order of the indexes matches.
 */
export function whereOf(q: RecordingQuery, ph: (i: number) => string, params: unknown[]): string[] {
  const where: string[] = [];
  const add = (sql: string, v: unknown) => {
    params.push(v);
    where.push(sql.replace('?', ph(params.length)));
  };
  if (q.accountSid !== undefined) add('account_sid = ?', q.accountSid);
  if (q.callSid !== undefined) add('call_sid = ?', q.callSid);
  if (q.ctiSessionId !== undefined) add('cti_session_id = ?', q.ctiSessionId);
  if (q.employeeId !== undefined) add('employee_id = ?', q.employeeId);
  if (q.closeReason !== undefined) add('close_reason = ?', q.closeReason);
  if (q.minDurationMs !== undefined) add('duration_ms >= ?', q.minDurationMs);
  if (q.from !== undefined) add('started_ms >= ?', q.from.getTime());
  if (q.to !== undefined) add('started_ms < ?', q.to.getTime());
  return where;
}

/** A page from rows fetched with LIMIT `limit + 1` in cursor order (the extra row says there is more). */
export function pageOf(rows: { sidecar: string; started_ms: number; recording_id: string }[], limit: number, total?: number): RecordingPage {
  const more = rows.length > limit;
  if (more) rows.length = limit;
  const last = rows[rows.length - 1];
  return {
    items: rows.map((r) => JSON.parse(r.sidecar) as RecordingSidecar),
    nextCursor: more && last ? encodeCursor({ t: last.started_ms, id: last.recording_id }) : null,
    ...(total === undefined ? {} : { total }),
  };
}
