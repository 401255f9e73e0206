// The embedded catalog: one SQLite file under RECORDINGS_DIR (better-sqlite3, WAL). Calls are
// synchronous underneath and short (indexed lookups, batches of a few thousand rows), and none is
// on the per-frame path; the async interface is the one PostgreSQL needs.
import Database, { type Database as Db, type Statement } from 'better-sqlite3';
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import type { RecordingSidecar } from '../sidecar.js';
import {
  checkLimit, decodeCursor, indexedOf, pageOf, rowFields, whereOf,
  type Catalog, type CatalogRow, type IndexedRecording, type RecordingPage, type RecordingQuery, type RowFields,
} from './catalog.js';
import { SQLITE_MIGRATIONS, type Migration } from './sqlite-migrations.js';
import { BitSet } from './bitset.js';

export const SQLITE_FILE = '.catalog.sqlite';

/**
 * A single node's catalog is RECORDINGS_DIR/.catalog.sqlite. In a cluster without DATABASE_URL
 * every node keeps its own (the volume is shared; SQLite must not be shared over it):
 * RECORDINGS_DIR/.catalog/<nodeId>.sqlite. Dot-names are never taken for recordings.
 */
export function catalogFileFor(recordingsDir: string, clusterNodeId: string | null): string {
  return clusterNodeId === null
    ? path.join(path.resolve(recordingsDir), SQLITE_FILE)
    : path.join(path.resolve(recordingsDir), '.catalog', `${clusterNodeId}.sqlite`);
}

const COLUMNS = 'recording_id, account_sid, call_sid, cti_session_id, employee_id, close_reason, started_ms, duration_ms, rel_path, sidecar, put_at';
const UPSERT = `
  INSERT INTO recordings (${COLUMNS})
  SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
  WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE recording_id = ?)
  ON CONFLICT (recording_id) DO UPDATE SET
    account_sid = excluded.account_sid, call_sid = excluded.call_sid, cti_session_id = excluded.cti_session_id,
    employee_id = excluded.employee_id, close_reason = excluded.close_reason, started_ms = excluded.started_ms,
    duration_ms = excluded.duration_ms, rel_path = excluded.rel_path, sidecar = excluded.sidecar, put_at = excluded.put_at`;
/**
 * The import's upsert leaves a row as it is when its sidecar and place did not change: a rebuild
 * over a filled catalog then costs a lookup per row, not a rewrite of the row and its eight index
 * entries. (Every other column comes from the sidecar; the seen mark keeps the row from the removal.)
 */
const UPSERT_CHANGED = `${UPSERT}
  WHERE recordings.sidecar IS NOT excluded.sidecar OR recordings.rel_path IS NOT excluded.rel_path
  RETURNING rowid`;

/** rows per slice of the reconcile's removal (a few ms of the event loop each) */
const REMOVE_SLICE = 5_000;

function upsertParams(r: RowFields, mark: number): unknown[] {
  return [r.id, r.accountSid, r.callSid, r.ctiSessionId, r.employeeId, r.closeReason, r.startedMs, r.durationMs, r.relPath, r.json, mark, r.id];
}

/** Applies the steps of `migrations` newer than what the file has; returns the versions applied. */
export function migrateSqlite(db: Db, migrations: readonly Migration[] = SQLITE_MIGRATIONS): number[] {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)');
  const done = new Set((db.prepare('SELECT version FROM schema_migrations').all() as { version: number }[]).map((r) => r.version));
  const newest = Math.max(0, ...migrations.map((m) => m.version));
  const beyond = [...done].filter((v) => v > newest);
  if (beyond.length > 0) {
    throw new Error(`the catalog has schema version ${Math.max(...beyond)}, newer than this gateway knows (${newest}): run the newer gateway, or rebuild the catalog (npm run catalog:rebuild)`);
  }
  const applied: number[] = [];
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (done.has(m.version)) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, new Date().toISOString());
    })();
    applied.push(m.version);
  }
  return applied;
}

export class SqliteCatalog implements Catalog {
  readonly backend = 'sqlite' as const;
  readonly recordingsDir: string;
  readonly file: string;
  #db: Db | null = null;
  #stmts = new Map<string, Statement>();
  /** rowids the running import found on disk (markSeen, insertBatch); the others are unlisted */
  #seen = new BitSet();
  /**
   * How long an import transaction runs before it commits and lets the event loop turn (a slice
   * ends after the row that passes it). 5 ms: the longest turns measured ~12-15 ms of CPU with the
   * commit; 10 ms gave ~20 ms, for a few % less CPU per row.
   */
  sliceMs = 5;

  constructor(recordingsDir: string, file?: string) {
    this.recordingsDir = path.resolve(recordingsDir);
    this.file = file ?? path.join(this.recordingsDir, SQLITE_FILE);
  }

  get db(): Db {
    if (this.#db === null) throw new Error('catalog is not open');
    return this.#db;
  }

  async open(): Promise<void> {
    mkdirSync(path.dirname(this.file), { recursive: true });
    const db = new Database(this.file);
    db.pragma('journal_mode = WAL');
    // WAL + NORMAL survives a process crash; a power cut may lose the last commits, which the
    // next reconcile puts back from the sidecars
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 5000');
    // a bounded page cache: memory stays flat whatever the catalog holds
    db.pragma('cache_size = -16000');
    db.pragma('temp_store = FILE');
    this.#db = db;
    migrateSqlite(db);
  }

  async close(): Promise<void> {
    this.#stmts.clear();
    this.#db?.close();
    this.#db = null;
  }

  #stmt(sql: string): Statement {
    let s = this.#stmts.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.#stmts.set(sql, s);
    }
    return s;
  }

  async put(sidecar: RecordingSidecar, sidecarPath: string): Promise<void> {
    this.#stmt(UPSERT).run(...upsertParams(rowFields(this.recordingsDir, sidecar, sidecarPath), Date.now()));
  }

  async update(sidecar: RecordingSidecar): Promise<boolean> {
    const cur = this.#stmt('SELECT rel_path FROM recordings WHERE recording_id = ?').get(sidecar.recordingId) as { rel_path: string } | undefined;
    if (!cur) return false;
    const r = rowFields(this.recordingsDir, sidecar, path.join(this.recordingsDir, cur.rel_path));
    const res = this.#stmt(`UPDATE recordings SET account_sid = ?, call_sid = ?, cti_session_id = ?, employee_id = ?, close_reason = ?,
      started_ms = ?, duration_ms = ?, sidecar = ? WHERE recording_id = ?`)
      .run(r.accountSid, r.callSid, r.ctiSessionId, r.employeeId, r.closeReason, r.startedMs, r.durationMs, r.json, r.id);
    return res.changes > 0;
  }

  async remove(recordingId: string): Promise<boolean> {
    const del = this.#stmt('DELETE FROM recordings WHERE recording_id = ?');
    const tomb = this.#stmt('INSERT INTO tombstones (recording_id, at_ms) VALUES (?, ?) ON CONFLICT (recording_id) DO UPDATE SET at_ms = excluded.at_ms');
    return this.db.transaction(() => {
      tomb.run(recordingId, Date.now());
      return del.run(recordingId).changes > 0;
    })();
  }

  async get(recordingId: string): Promise<IndexedRecording | undefined> {
    const row = this.#stmt('SELECT sidecar, rel_path FROM recordings WHERE recording_id = ?').get(recordingId) as { sidecar: string; rel_path: string } | undefined;
    return row && indexedOf(this.recordingsDir, row.sidecar, row.rel_path);
  }

  async byCtiSession(ctiSessionId: string): Promise<RecordingSidecar[]> {
    const rows = this.#stmt('SELECT sidecar FROM recordings WHERE cti_session_id = ? ORDER BY started_ms, recording_id').all(ctiSessionId) as { sidecar: string }[];
    return rows.map((r) => JSON.parse(r.sidecar) as RecordingSidecar);
  }

  async byCalls(callSids: readonly string[]): Promise<RecordingSidecar[]> {
    if (callSids.length === 0) return [];
    // one statement whatever the number of calls: the list as one JSON parameter (the
    // recordings_call index is searched once per call)
    const rows = this.#stmt('SELECT sidecar FROM recordings WHERE call_sid IN (SELECT value FROM json_each(?))')
      .all(JSON.stringify(callSids)) as { sidecar: string }[];
    return rows.map((r) => JSON.parse(r.sidecar) as RecordingSidecar);
  }

  async query(q: RecordingQuery): Promise<RecordingPage> {
    checkLimit(q.limit);
    const after = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
    const params: unknown[] = [];
    const where = whereOf(q, () => '?', params);
    let total: number | undefined;
    if (q.count) total = this.#total(q, where, params);
    if (after) {
      where.push('(started_ms, recording_id) > (?, ?)');
      params.push(after.t, after.id);
    }
    // limit + 1: whether there is a next page, without a second query
    const limit = Math.min(q.limit, Number.MAX_SAFE_INTEGER - 1);
    const sql = `SELECT sidecar, started_ms, recording_id FROM recordings${where.length ? ` WHERE ${where.join(' AND ')}` : ''}
      ORDER BY started_ms, recording_id LIMIT ?`;
    const rows = this.#stmt(sql).all(...params, limit + 1) as { sidecar: string; started_ms: number; recording_id: string }[];
    return pageOf(rows, limit, total);
  }

  /** count=true: the kept counts when the query has no filter or only an account, else count(*). */
  #total(q: RecordingQuery, where: string[], params: unknown[]): number {
    if (where.length === 0) return this.#countAll();
    if (where.length === 1 && q.accountSid !== undefined) {
      return (this.#stmt('SELECT n FROM recording_counts WHERE account_sid = ?').pluck().get(q.accountSid) as number | undefined) ?? 0;
    }
    return this.#stmt(`SELECT count(*) FROM recordings WHERE ${where.join(' AND ')}`).pluck().get(...params) as number;
  }

  #countAll(): number {
    return this.#stmt('SELECT coalesce(sum(n), 0) FROM recording_counts').pluck().get() as number;
  }

  async count(): Promise<number> {
    return this.#countAll();
  }

  async clock(): Promise<number> {
    return Date.now();
  }

  async markSeen(ids: readonly string[], _mark: number): Promise<Set<string>> {
    const rowid = this.#stmt('SELECT rowid FROM recordings WHERE recording_id = ?').pluck();
    const present = new Set<string>();
    let slice = performance.now() + this.sliceMs;
    for (const id of ids) {
      const r = rowid.get(id) as number | undefined;
      if (r !== undefined) {
        this.#seen.add(r);
        present.add(id);
      }
      if (performance.now() > slice) {
        await new Promise((res) => setImmediate(res));
        slice = performance.now() + this.sliceMs;
      }
    }
    return present;
  }

  async insertBatch(rows: readonly CatalogRow[], mark: number): Promise<number> {
    return this.insertRows(rows.map((r) => rowFields(this.recordingsDir, r.sidecar, r.sidecarPath)), mark);
  }

  /**
   * In transactions of about `sliceMs` each (their commit adds a few ms, a WAL checkpoint more),
   * the event loop free between them: a 2 000-row transaction held the loop 100 ms and more of
   * CPU (a live node importing in the background paid that on its media path). A row inserted is
   * in the catalog whatever happens to the rest.
   */
  async insertRows(rows: readonly RowFields[], mark: number): Promise<number> {
    const ins = this.#stmt(UPSERT_CHANGED).pluck();
    const rowid = this.#stmt('SELECT rowid FROM recordings WHERE recording_id = ?').pluck();
    let i = 0;
    let n = 0;
    const slice = this.db.transaction((until: number) => {
      do {
        const f = rows[i++]!; // i < rows.length
        // no rowid back: listed already as it is (looked up), or deleted (tombstoned: not listed)
        const at = (ins.get(...upsertParams(f, mark)) ?? rowid.get(f.id)) as number | undefined;
        if (at === undefined) continue;
        this.#seen.add(at);
        n++;
      } while (i < rows.length && performance.now() < until);
    });
    while (i < rows.length) {
      // a turn of the loop first: the caller's turn (a batch received from a reader, its rows
      // made) must not run into the first slice
      await new Promise((res) => setImmediate(res));
      slice(performance.now() + this.sliceMs);
    }
    return n;
  }

  async removeUnseen(mark: number): Promise<number> {
    // The rowids of every row, in slices of a covering index (never the rows themselves: a million
    // of them are over a GB), the event loop free between slices; those not marked seen and put
    // before the run began are unlisted.
    const slice = this.#stmt(`SELECT rowid, started_ms, recording_id FROM recordings INDEXED BY recordings_started
      WHERE (started_ms, recording_id) > (?, ?) ORDER BY started_ms, recording_id LIMIT ${REMOVE_SLICE}`).raw();
    const del = this.#stmt('DELETE FROM recordings WHERE rowid = ? AND put_at < ?');
    const seen = this.#seen;
    let removed = 0;
    for (let after: [number, string] = [-Number.MAX_SAFE_INTEGER, '']; ;) {
      const rows = slice.all(...after) as [number, number, string][];
      const gone = rows.filter(([rowid]) => !seen.has(rowid));
      if (gone.length > 0) removed += this.db.transaction(() => gone.reduce((n, [rowid]) => n + del.run(rowid, mark).changes, 0))();
      const last = rows.at(-1);
      if (rows.length < REMOVE_SLICE || last === undefined) break;
      after = [last[1], last[2]];
      await new Promise((r) => setImmediate(r));
    }
    this.#seen = new BitSet();
    return removed;
  }

  async optimize(): Promise<void> {
    // sampled statistics (analysis_limit): milliseconds at a million rows, not seconds; without
    // them the planner picked a filter's index badly (458 ms p99 for a combined filter)
    this.db.pragma('analysis_limit = 1000');
    this.db.exec('ANALYZE');
  }

  async pruneTombstones(beforeMs: number): Promise<number> {
    return this.#stmt('DELETE FROM tombstones WHERE at_ms < ?').run(beforeMs).changes;
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    // one process owns the file (in a cluster each node has its own: catalogFileFor); the
    // importer runs one at a time, so a run starts with nothing marked seen
    this.#seen = new BitSet();
    return fn();
  }

  async getMeta(key: string): Promise<string | null> {
    const row = this.#stmt('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
    return row?.value ?? null;
  }

  async setMeta(key: string, value: string): Promise<void> {
    this.#stmt('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  async startedBefore(before: Date, accountSid: string | null, except: readonly string[], limit: number): Promise<RecordingSidecar[]> {
    const params: unknown[] = [before.getTime()];
    let sql = 'SELECT sidecar FROM recordings WHERE started_ms < ?';
    if (accountSid !== null) {
      sql += ' AND account_sid = ?';
      params.push(accountSid);
    } else if (except.length > 0) {
      sql += ` AND account_sid NOT IN (${except.map(() => '?').join(', ')})`;
      params.push(...except);
    }
    sql += ' ORDER BY started_ms, recording_id LIMIT ?';
    const rows = this.db.prepare(sql).all(...params, limit) as { sidecar: string }[];
    return rows.map((r) => JSON.parse(r.sidecar) as RecordingSidecar);
  }
}
