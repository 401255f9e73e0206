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
];
