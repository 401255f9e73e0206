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
  {
    version: 2,
    name: 'recording counts kept by triggers; account + closeReason index',
    sql: `
      -- the total without count(*) over the table: /metrics reads it on every scrape, and an
      -- unfiltered or account-only count=true is one lookup (catalog section 8)
      CREATE TABLE recording_counts (account_sid TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO recording_counts (account_sid, n) SELECT account_sid, count(*) FROM recordings GROUP BY account_sid;
      CREATE TRIGGER recordings_count_insert AFTER INSERT ON recordings BEGIN
        INSERT INTO recording_counts (account_sid, n) VALUES (NEW.account_sid, 1)
          ON CONFLICT (account_sid) DO UPDATE SET n = n + 1;
      END;
      CREATE TRIGGER recordings_count_delete AFTER DELETE ON recordings BEGIN
        UPDATE recording_counts SET n = n - 1 WHERE account_sid = OLD.account_sid;
      END;
      CREATE TRIGGER recordings_count_move AFTER UPDATE OF account_sid ON recordings
        WHEN OLD.account_sid IS NOT NEW.account_sid BEGIN
        UPDATE recording_counts SET n = n - 1 WHERE account_sid = OLD.account_sid;
        INSERT INTO recording_counts (account_sid, n) VALUES (NEW.account_sid, 1)
          ON CONFLICT (account_sid) DO UPDATE SET n = n + 1;
      END;
      -- an account's recordings by close reason (a per-source API key scopes every query to its
      -- account): a range scan in list order even when the two together match nothing
      CREATE INDEX recordings_account_close ON recordings (account_sid, close_reason, started_ms, recording_id);
    `,
  },
];
