// The embedded catalog's schema, one numbered step per change. Applied at open, in order, each in
// its own transaction; `schema_migrations` records what ran. Never edit a step that shipped: add one.
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const SQLITE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'recordings, tombstones, meta',
    sql: `
      CREATE TABLE recordings (
        recording_id   TEXT PRIMARY KEY,
        account_sid    TEXT NOT NULL,
        call_sid       TEXT NOT NULL,
        cti_session_id TEXT,
        employee_id    TEXT,
        close_reason   TEXT,
        started_ms     INTEGER NOT NULL,
        duration_ms    INTEGER NOT NULL,
        rel_path       TEXT NOT NULL,
        sidecar        TEXT NOT NULL,
        put_at         INTEGER NOT NULL
      );
      -- one index per filter, each ending in the list order so a filtered page is a range scan
      CREATE INDEX recordings_started  ON recordings (started_ms, recording_id);
      CREATE INDEX recordings_account  ON recordings (account_sid, started_ms, recording_id);
      CREATE INDEX recordings_call     ON recordings (call_sid, started_ms, recording_id);
      CREATE INDEX recordings_cti      ON recordings (cti_session_id, started_ms, recording_id);
      CREATE INDEX recordings_employee ON recordings (employee_id, started_ms, recording_id);
      CREATE INDEX recordings_close    ON recordings (close_reason, started_ms, recording_id);
      CREATE TABLE tombstones (recording_id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL);
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    `,
  },
];
