// The cluster catalog: PostgreSQL (DATABASE_URL) shared by every node, so a recording published
// on one node is listed by all at once. Same schema and semantics as sqlite-catalog.ts; times
// for import marks come from the server's clock (one clock for every node).
import pg from 'pg';
import path from 'node:path';
import type { RecordingSidecar } from '../sidecar.js';
import {
  checkLimit, decodeCursor, indexedOf, pageOf, rowFields, whereOf,
  type Catalog, type CatalogRow, type IndexedRecording, type RecordingPage, type RecordingQuery, type RowFields,
} from './catalog.js';
import { PG_MIGRATIONS } from './pg-migrations.js';
import type { Migration } from './sqlite-migrations.js';

/** advisory lock keys (any constants unique to this schema) */
const MIGRATE_LOCK = 0x52ec0001;
const IMPORT_LOCK = 0x52ec0002;
const NOW_MS = '(extract(epoch from clock_timestamp()) * 1000)::bigint';
const INT8 = 20;

const UPSERT_SET = `account_sid = EXCLUDED.account_sid, call_sid = EXCLUDED.call_sid, cti_session_id = EXCLUDED.cti_session_id,
  employee_id = EXCLUDED.employee_id, close_reason = EXCLUDED.close_reason, started_ms = EXCLUDED.started_ms,
  duration_ms = EXCLUDED.duration_ms, rel_path = EXCLUDED.rel_path, sidecar = EXCLUDED.sidecar, put_at = EXCLUDED.put_at`;

/** One statement of an import: mark the ids seen, upsert the rows, count those tombstoned. */
const IMPORT_CHUNK = `
  WITH seen AS (INSERT INTO import_seen (recording_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING),
  ins AS (
    INSERT INTO recordings (recording_id, account_sid, call_sid, cti_session_id, employee_id, close_reason, started_ms, duration_ms, rel_path, sidecar, put_at)
    SELECT u.*, $11::bigint FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::text[])
      AS u(recording_id, account_sid, call_sid, cti_session_id, employee_id, close_reason, started_ms, duration_ms, rel_path, sidecar)
    WHERE NOT EXISTS (SELECT 1 FROM tombstones t WHERE t.recording_id = u.recording_id)
    ON CONFLICT (recording_id) DO UPDATE SET ${UPSERT_SET}
    -- a row whose sidecar and place did not change is left as it is (a rebuild rewrites nothing)
    WHERE (recordings.sidecar, recordings.rel_path) IS DISTINCT FROM (EXCLUDED.sidecar, EXCLUDED.rel_path))
  SELECT count(*)::bigint AS n FROM tombstones WHERE recording_id = ANY($1::text[])`;

export async function migratePg(pool: pg.Pool, migrations: readonly Migration[] = PG_MIGRATIONS): Promise<number[]> {
  const c = await pool.connect();
  try {
    await c.query('SELECT pg_advisory_lock($1)', [MIGRATE_LOCK]);
    await c.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)');
    const done = new Set((await c.query<{ version: number }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
    const newest = Math.max(0, ...migrations.map((m) => m.version));
    const beyond = [...done].filter((v) => v > newest);
    if (beyond.length > 0) {
      throw new Error(`the catalog database has schema version ${Math.max(...beyond)}, newer than this gateway knows (${newest}): run the newer gateway`);
    }
    const applied: number[] = [];
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (done.has(m.version)) continue;
      await c.query('BEGIN');
      try {
        await c.query(m.sql);
        await c.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())', [m.version, m.name]);
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK');
        throw err;
      }
      applied.push(m.version);
    }
    return applied;
  } finally {
    // a session lock: it also ends with the connection, so a failed unlock leaves nothing held
    await c.query('SELECT pg_advisory_unlock($1)', [MIGRATE_LOCK]).catch(() => undefined);
    c.release();
  }
}

export class PgCatalog implements Catalog {
  readonly backend = 'postgres' as const;
  readonly recordingsDir: string;
  readonly pool: pg.Pool;

  constructor(recordingsDir: string, databaseUrl: string, poolSize = 10) {
    this.recordingsDir = path.resolve(recordingsDir);
    this.pool = new pg.Pool({
      connectionString: databaseUrl,
      max: poolSize,
      // bigint columns hold ms since 1970 and small durations: safe as JS numbers
      types: { getTypeParser: (oid: number, format?: 'text' | 'binary') => (oid === INT8 ? Number : pg.types.getTypeParser(oid, format) as (value: string) => unknown) }, // pg-types declares its parsers as any
    });
    // an idle client losing its connection must not crash the process; the next query reconnects
    this.pool.on('error', () => undefined);
  }

  async open(): Promise<void> {
    await migratePg(this.pool);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  async put(sidecar: RecordingSidecar, sidecarPath: string): Promise<void> {
    const r = rowFields(this.recordingsDir, sidecar, sidecarPath);
    await this.pool.query(`
      INSERT INTO recordings (recording_id, account_sid, call_sid, cti_session_id, employee_id, close_reason, started_ms, duration_ms, rel_path, sidecar, put_at)
      SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, ${NOW_MS}
      WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE recording_id = $1)
      ON CONFLICT (recording_id) DO UPDATE SET ${UPSERT_SET}`,
    [r.id, r.accountSid, r.callSid, r.ctiSessionId, r.employeeId, r.closeReason, r.startedMs, r.durationMs, r.relPath, r.json]);
  }

  async update(sidecar: RecordingSidecar): Promise<boolean> {
    const cur = await this.pool.query<{ rel_path: string }>('SELECT rel_path FROM recordings WHERE recording_id = $1', [sidecar.recordingId]);
    if (cur.rows.length === 0) return false;
    const r = rowFields(this.recordingsDir, sidecar, path.join(this.recordingsDir, cur.rows[0]!.rel_path));
    const res = await this.pool.query(`UPDATE recordings SET account_sid = $2, call_sid = $3, cti_session_id = $4, employee_id = $5,
      close_reason = $6, started_ms = $7, duration_ms = $8, sidecar = $9 WHERE recording_id = $1`,
    [r.id, r.accountSid, r.callSid, r.ctiSessionId, r.employeeId, r.closeReason, r.startedMs, r.durationMs, r.json]);
    return (res.rowCount ?? 0) > 0;
  }

  async remove(recordingId: string): Promise<boolean> {
    // one statement: the tombstone and the removal commit together
    const res = await this.pool.query(`
      WITH t AS (INSERT INTO tombstones (recording_id, at_ms) VALUES ($1, ${NOW_MS})
                 ON CONFLICT (recording_id) DO UPDATE SET at_ms = EXCLUDED.at_ms)
      DELETE FROM recordings WHERE recording_id = $1`, [recordingId]);
    return (res.rowCount ?? 0) > 0;
  }

  async get(recordingId: string): Promise<IndexedRecording | undefined> {
    const res = await this.pool.query<{ sidecar: string; rel_path: string }>('SELECT sidecar, rel_path FROM recordings WHERE recording_id = $1', [recordingId]);
    const row = res.rows[0];
    return row && indexedOf(this.recordingsDir, row.sidecar, row.rel_path);
  }

  async byCtiSession(ctiSessionId: string): Promise<RecordingSidecar[]> {
    const res = await this.pool.query<{ sidecar: string }>('SELECT sidecar FROM recordings WHERE cti_session_id = $1 ORDER BY started_ms, recording_id', [ctiSessionId]);
    return res.rows.map((r) => JSON.parse(r.sidecar) as RecordingSidecar);
  }

  async byCalls(callSids: readonly string[]): Promise<RecordingSidecar[]> {
    if (callSids.length === 0) return [];
    const res = await this.pool.query<{ sidecar: string }>('SELECT sidecar FROM recordings WHERE call_sid = ANY($1::text[])', [callSids]);
    return res.rows.map((r) => JSON.parse(r.sidecar) as RecordingSidecar);
  }

  async query(q: RecordingQuery): Promise<RecordingPage> {
    checkLimit(q.limit);
    const after = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
    const params: unknown[] = [];
    const where = whereOf(q, (i) => `$${i}`, params);
    let total: number | undefined;
    if (q.count) total = await this.#total(q, where, params);
    if (after) {
      params.push(after.t, after.id);
      where.push(`(started_ms, recording_id) > ($${params.length - 1}, $${params.length})`);
    }
    const limit = Math.min(q.limit, 1_000_000);
    params.push(limit + 1);
    const res = await this.pool.query<{ sidecar: string; started_ms: number; recording_id: string }>(
      `SELECT sidecar, started_ms, recording_id FROM recordings${where.length ? ` WHERE ${where.join(' AND ')}` : ''}
       ORDER BY started_ms, recording_id LIMIT $${params.length}`, params);
    return pageOf(res.rows, limit, total);
  }

  /** count=true: the kept counts when the query has no filter or only an account, else count(*). */
  async #total(q: RecordingQuery, where: string[], params: unknown[]): Promise<number> {
    if (where.length === 0) return this.count();
    if (where.length === 1 && q.accountSid !== undefined) {
      return (await this.pool.query<{ n: number }>('SELECT n FROM recording_counts WHERE account_sid = $1', [q.accountSid])).rows[0]?.n ?? 0;
    }
    // an aggregate without GROUP BY returns exactly one row
    return (await this.pool.query<{ n: number }>(`SELECT count(*) AS n FROM recordings WHERE ${where.join(' AND ')}`, params)).rows[0]!.n;
  }

  async count(): Promise<number> {
    // sum(bigint) is numeric: cast back to bigint (parsed as a number); an aggregate returns one row
    return (await this.pool.query<{ n: number }>('SELECT coalesce(sum(n), 0)::bigint AS n FROM recording_counts')).rows[0]!.n;
  }

  async clock(): Promise<number> {
    return (await this.pool.query<{ t: number }>(`SELECT ${NOW_MS} AS t`)).rows[0]!.t; // SELECT without FROM returns one row
  }

  async markSeen(ids: readonly string[], _mark: number): Promise<Set<string>> {
    await this.pool.query('INSERT INTO import_seen (recording_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING', [ids]);
    const res = await this.pool.query<{ recording_id: string }>('SELECT recording_id FROM recordings WHERE recording_id = ANY($1::text[])', [ids]);
    return new Set(res.rows.map((r) => r.recording_id));
  }

  async insertBatch(rows: readonly CatalogRow[], mark: number): Promise<number> {
    return this.insertRows(rows.map((r) => rowFields(this.recordingsDir, r.sidecar, r.sidecarPath)), mark);
  }

  /**
   * The rows and sidecar bytes of one import statement (a statement ends after the row that reaches
   * either). `pg` builds a statement's array parameters on the main thread in one go, escaping every
   * sidecar's JSON: 2 000 rows in one statement held the event loop ~200 ms; 250 rows hold it a
   * few ms, with a loop turn between statements.
   */
  chunkRows = 250;
  chunkBytes = 256 * 1024;

  /**
   * In one transaction, in statements of at most `chunkRows` rows / about `chunkBytes` of sidecars,
   * the event loop free between them. Returns the rows listed (a tombstoned one is not).
   */
  async insertRows(rows: readonly RowFields[], mark: number): Promise<number> {
    const c = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await c.query('BEGIN');
      let tombstoned = 0;
      for (let at = 0; at < rows.length;) {
        if (at > 0) await new Promise((res) => setImmediate(res));
        const cols: unknown[][] = Array.from({ length: 10 }, () => []);
        let bytes = 0;
        const end = Math.min(rows.length, at + Math.max(1, this.chunkRows));
        while (at < end && bytes < this.chunkBytes) {
          const r = rows[at++]!; // at < end <= rows.length
          const v = [r.id, r.accountSid, r.callSid, r.ctiSessionId, r.employeeId, r.closeReason, r.startedMs, r.durationMs, r.relPath, r.json];
          for (let i = 0; i < v.length; i++) cols[i]!.push(v[i]); // cols has one array per column of v
          bytes += r.json.length;
        }
        // one statement per chunk (named: parsed once per connection); a data-modifying CTE runs
        // to completion whether or not the outer query reads it
        const res = await c.query<{ n: number }>({ name: 'catalog-import-chunk', text: IMPORT_CHUNK, values: [...cols, mark] });
        tombstoned += res.rows[0]!.n; // an aggregate returns one row
      }
      await c.query('COMMIT');
      return rows.length - tombstoned;
    } catch (err) {
      // the statement's error is the one to report; a connection that cannot roll back is
      // destroyed (release with an error), never handed back to the pool mid-transaction
      await c.query('ROLLBACK').catch((e: unknown) => { broken = e instanceof Error ? e : new Error(String(e)); });
      throw err;
    } finally {
      c.release(broken);
    }
  }

  async removeUnseen(mark: number): Promise<number> {
    const res = await this.pool.query(`DELETE FROM recordings r WHERE put_at < $1
      AND NOT EXISTS (SELECT 1 FROM import_seen s WHERE s.recording_id = r.recording_id)`, [mark]);
    await this.pool.query('TRUNCATE import_seen');
    return res.rowCount ?? 0;
  }

  async optimize(): Promise<void> {
    // statistics for the planner, and the visibility map that lets count(*) scan an index only
    await this.pool.query('VACUUM (ANALYZE) recordings');
  }

  async pruneTombstones(beforeMs: number): Promise<number> {
    return (await this.pool.query('DELETE FROM tombstones WHERE at_ms < $1', [beforeMs])).rowCount ?? 0;
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    // one importer in the whole cluster; the lock goes with this session if the node dies
    const c = await this.pool.connect();
    try {
      await c.query('SELECT pg_advisory_lock($1)', [IMPORT_LOCK]);
      await this.pool.query('TRUNCATE import_seen');
      return await fn();
    } finally {
      await c.query('SELECT pg_advisory_unlock($1)', [IMPORT_LOCK]).catch(() => undefined);
      c.release();
    }
  }

  async getMeta(key: string): Promise<string | null> {
    return (await this.pool.query<{ value: string }>('SELECT value FROM meta WHERE key = $1', [key])).rows[0]?.value ?? null;
  }

  async setMeta(key: string, value: string): Promise<void> {
    await this.pool.query('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value', [key, value]);
  }

  async startedBefore(before: Date, accountSid: string | null, except: readonly string[], limit: number): Promise<RecordingSidecar[]> {
    const params: unknown[] = [before.getTime()];
    let sql = 'SELECT sidecar FROM recordings WHERE started_ms < $1';
    if (accountSid !== null) {
      params.push(accountSid);
      sql += ` AND account_sid = $${params.length}`;
    } else if (except.length > 0) {
      params.push(except);
      sql += ` AND account_sid <> ALL($${params.length}::text[])`;
    }
    params.push(limit);
    sql += ` ORDER BY started_ms, recording_id LIMIT $${params.length}`;
    const res = await this.pool.query<{ sidecar: string }>(sql, params);
    return res.rows.map((r) => JSON.parse(r.sidecar) as RecordingSidecar);
  }
}
