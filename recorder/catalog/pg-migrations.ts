// The PostgreSQL catalog's schema, one numbered step per change; applied at open under an
// advisory lock (nodes starting together migrate once), each step in its own transaction.
// Never edit a step that shipped: add one.
import type { Migration } from './sqlite-migrations.js';

export const PG_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'recordings, tombstones, meta, import_seen',
    sql: `
      CREATE TABLE recordings (
        -- "C": the keyset order is byte order, as in SQLite and JavaScript
        recording_id   text COLLATE "C" PRIMARY KEY,
        account_sid    text NOT NULL,
        call_sid       text NOT NULL,
        cti_session_id text,
        employee_id    text,
        close_reason   text,
        started_ms     bigint NOT NULL,
        duration_ms    bigint NOT NULL,
        rel_path       text NOT NULL,
        sidecar        text NOT NULL,
        put_at         bigint NOT NULL
      );
      CREATE INDEX recordings_started  ON recordings (started_ms, recording_id);
      CREATE INDEX recordings_account  ON recordings (account_sid, started_ms, recording_id);
      CREATE INDEX recordings_call     ON recordings (call_sid, started_ms, recording_id);
      CREATE INDEX recordings_cti      ON recordings (cti_session_id, started_ms, recording_id);
      CREATE INDEX recordings_employee ON recordings (employee_id, started_ms, recording_id);
      CREATE INDEX recordings_close    ON recordings (close_reason, started_ms, recording_id);
      CREATE TABLE tombstones (recording_id text COLLATE "C" PRIMARY KEY, at_ms bigint NOT NULL);
      CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
      -- ids found on disk by the running reconcile (one at a time in the cluster: advisory lock)
      CREATE UNLOGGED TABLE import_seen (recording_id text COLLATE "C" PRIMARY KEY);
    `,
  },
  {
    version: 2,
    name: 'recording counts kept by triggers; account + closeReason index',
    sql: `
      -- the total without count(*) over the table: /metrics reads it on every scrape, and an
      -- unfiltered or account-only count=true is one lookup. Statement triggers: a batch of
      -- 2000 rows updates each account's count once. Accounts in sid order: two batches never
      -- wait on each other's counts in opposite orders (no deadlock).
      CREATE TABLE recording_counts (account_sid text PRIMARY KEY, n bigint NOT NULL);
      CREATE FUNCTION recording_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO recording_counts (account_sid, n)
          SELECT account_sid, count(*) FROM new_rows GROUP BY account_sid ORDER BY account_sid
          ON CONFLICT (account_sid) DO UPDATE SET n = recording_counts.n + EXCLUDED.n;
        RETURN NULL;
      END $$;
      CREATE FUNCTION recording_counts_sub() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        UPDATE recording_counts c SET n = c.n - d.n
          FROM (SELECT account_sid, count(*) AS n FROM old_rows GROUP BY account_sid) d
          WHERE c.account_sid = d.account_sid;
        RETURN NULL;
      END $$;
      CREATE FUNCTION recording_counts_move() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO recording_counts (account_sid, n)
          SELECT account_sid, sum(d) FROM (
            SELECT account_sid, 1 AS d FROM new_rows
            UNION ALL SELECT account_sid, -1 FROM old_rows
          ) m GROUP BY account_sid HAVING sum(d) <> 0 ORDER BY account_sid
          ON CONFLICT (account_sid) DO UPDATE SET n = recording_counts.n + EXCLUDED.n;
        RETURN NULL;
      END $$;
      CREATE TRIGGER recordings_count_insert AFTER INSERT ON recordings
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION recording_counts_add();
      CREATE TRIGGER recordings_count_delete AFTER DELETE ON recordings
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION recording_counts_sub();
      CREATE TRIGGER recordings_count_move AFTER UPDATE ON recordings
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION recording_counts_move();
      -- after the triggers: their lock on recordings holds writers off until this commits
      INSERT INTO recording_counts (account_sid, n) SELECT account_sid, count(*) FROM recordings GROUP BY account_sid;
      CREATE INDEX recordings_account_close ON recordings (account_sid, close_reason, started_ms, recording_id);
    `,
  },
];
