// RETENTION_DAYS (global and per data source; unset keeps everything): recordings that started
// longer ago are deleted by the maintenance sweep, once per cluster under its lease. Each goes
// through the same durable path as a rule deletion (RecordingOutcomes.deleteForRetention -> Deletions):
// unlisted, audited, its files removed with a crash-safe record, announced as `deleted`.
import type { Catalog } from './catalog/catalog.js';
import type { RecordingSidecar } from './sidecar.js';
import type { AccountSettings, SourceSettings } from './source-settings.js';

/** tombstones are kept this long after a deletion (a reconcile racing the deletion must not list it again) */
const TOMBSTONE_TTL_MS = 24 * 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface RetentionDeps {
  catalog: Catalog;
  /** the durable, audited, announced deletion of one recording */
  deleteRecording: (sidecar: RecordingSidecar) => Promise<void>;
  /** ids whose deletion is not finished (never handed over twice; re-tombstoned) */
  pendingDeletions: () => Promise<Iterable<string>>;
  defaults: SourceSettings;
  sources: readonly AccountSettings[];
  wallNow: () => Date;
  log: { info: (o: object, m: string) => void; error: (o: object, m: string) => void };
  /** recordings fetched per catalog query */
  batch?: number;
  /** deletions per sweep at most (the next sweep goes on) */
  maxPerRun?: number;
}

export class Retention {
  #running = false;

  constructor(private readonly d: RetentionDeps) {}

  /** Whether any account has a retention period. */
  get enabled(): boolean {
    return this.d.defaults.retentionDays !== null || this.d.sources.some((s) => s.retentionDays !== null);
  }

  /** One sweep; returns the recordings handed to deletion. A sweep still running is not doubled. */
  async runOnce(): Promise<number> {
    if (this.#running) return 0;
    this.#running = true;
    try {
      const now = this.d.wallNow().getTime();
      await this.d.catalog.pruneTombstones(now - TOMBSTONE_TTL_MS);
      const pending = new Set(await this.d.pendingDeletions());
      // a deletion still pending keeps its tombstone however long it takes
      for (const id of pending) await this.d.catalog.remove(id);
      if (!this.enabled) return 0;
      const max = this.d.maxPerRun ?? 20_000;
      let deleted = 0;
      for (const s of this.d.sources) {
        if (s.retentionDays === null) continue;
        deleted += await this.#sweep(new Date(now - s.retentionDays * DAY_MS), s.accountSid, [], pending, max - deleted);
      }
      // accounts without a data source of their own (the embedded default records any account)
      if (this.d.defaults.retentionDays !== null) {
        deleted += await this.#sweep(new Date(now - this.d.defaults.retentionDays * DAY_MS), null,
          this.d.sources.map((s) => s.accountSid), pending, max - deleted);
      }
      if (deleted > 0) this.d.log.info({ deleted }, 'retention: recordings past RETENTION_DAYS deleted');
      return deleted;
    } finally {
      this.#running = false;
    }
  }

  async #sweep(before: Date, accountSid: string | null, except: string[], pending: Set<string>, budget: number): Promise<number> {
    const batch = this.d.batch ?? 500;
    let n = 0;
    while (n < budget) {
      const old = (await this.d.catalog.startedBefore(before, accountSid, except, Math.min(batch, budget - n)))
        .filter((s) => !pending.has(s.recordingId));
      if (old.length === 0) break;
      for (const s of old) {
        try {
          await this.d.deleteRecording(s);
        } catch (err) {
          // unlisted already; its files stay until the tombstone expires and a reconcile lists it again
          this.d.log.error({ recordingId: s.recordingId, err }, 'retention: deletion failed');
        }
        n++;
      }
    }
    return n;
  }
}
