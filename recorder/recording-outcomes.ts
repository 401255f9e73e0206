// What happens to a recording once it is published, after the call policy (call-control.ts)
// decided: kept (its sidecar takes the call's latest attribution, it is indexed and announced
// `finished` / `failed`), or deleted (audited, unlisted, handed to the durable deletion path and
// announced `deleted` once its files are gone), and later rewrites of an indexed sidecar
// (attribution, archive). Every outcome is announced once to the webhook outbox.
// Contract sections 5 and 7.
import { readFile, unlink } from 'node:fs/promises';
import type { CallState } from './call-states.js';
import type { Catalog } from './catalog/catalog.js';
import type { RecordingSidecar } from './sidecar.js';
import type { StreamIdentity } from './stream-session.js';
import { sidecarPathOf } from './storage-layout.js';
import { KeyedLock, writeFileAtomic } from './atomic-file.js';
import type { Deletions } from './deletions.js';

export type RecordingEvent = 'finished' | 'failed' | 'deleted';
export type DeleteReason = 'not_responding' | 'min_session_length' | 'retention';

/** One deletion, as the audit log line records it (contract section 7). */
export interface AuditEntry {
  recordingId: string;
  accountSid: string;
  callSid: string;
  /** `rule` (min_session_length, retention) or `event` (not_responding) */
  cause: 'rule' | 'event';
  reason: DeleteReason;
  /** who caused it: `rule`, `twilio:<AccountSid>` (signed TaskRouter), `key:<id>`, `loopback`, ... */
  actor: string;
}

export interface RecordingOutcomesDeps {
  index: Catalog;
  recordingsDir: string;
  /** durable rule deletions (alarm and retry when the disk refuses) */
  deletions: Deletions;
  /** the account scope of a recording (see CallControl.scopeOf): a call's recordings are its scope's only */
  scopeOf: (accountSid: string) => string;
  /** one structured line per deletion (audit: true) */
  audit?: (entry: AuditEntry) => void;
  /** hand an outcome to the webhook outbox (absent when no webhook is configured) */
  announce?: (event: RecordingEvent, body: Record<string, unknown>) => Promise<void>;
  /** a recording entered the catalog / changed in it / left it: cluster mode tells the other nodes */
  onIndexed?: (sidecar: RecordingSidecar) => void;
  onUpdated?: (sidecar: RecordingSidecar) => void;
  onRemoved?: (recordingId: string) => void;
  onError: (what: string, err: Error) => void;
}

export class RecordingOutcomes {
  /** one sidecar rewrite at a time per recording, so concurrent events never lose fields */
  private readonly sidecarLock = new KeyedLock();

  constructor(private readonly deps: RecordingOutcomesDeps) {}

  /**
   * A published segment is kept: the events since its sidecar was written apply, then it is
   * indexed and announced. Throws when any step fails (the caller leaves the outcome undone).
   */
  async keep(sidecar: RecordingSidecar, s: CallState | undefined): Promise<void> {
    // events since the segment's sidecar was written (a rotated segment that waited) apply too
    if (s !== undefined) sidecar = await this.rewriteAttribution(sidecar, s) ?? sidecar;
    await this.deps.index.put(sidecar, sidecarPathOf(this.deps.recordingsDir, sidecar));
    this.deps.onIndexed?.(sidecar);
    // not this.announce: a webhook that could not be queued must leave the outcome undone
    await this.deps.announce?.(sidecar.writeError === undefined ? 'finished' : 'failed', { ...sidecar });
  }

  /** A published segment not indexed yet is deleted by a rule or an event: audited, then its files. */
  async deleteUnlisted(sidecar: RecordingSidecar, cause: AuditEntry['cause'], reason: DeleteReason, actor: string): Promise<void> {
    this.audit(sidecar, cause, reason, actor);
    await this.deleteFiles(sidecar, reason);
  }

  /** An indexed recording deleted by a CTI event: audited, unlisted, then its files. */
  async deleteListed(sidecar: RecordingSidecar, reason: DeleteReason, actor: string): Promise<void> {
    this.audit(sidecar, 'event', reason, actor);
    await this.deps.index.remove(sidecar.recordingId);
    this.deps.onRemoved?.(sidecar.recordingId);
    await this.deleteFiles(sidecar, reason);
  }

  /**
   * RETENTION_DAYS (maintenance sweep): a published recording that is too old is unlisted, audited
   * and handed to the durable deletion path like any rule deletion (`deleted`, reason retention).
   */
  async deleteForRetention(sidecar: RecordingSidecar): Promise<void> {
    await this.deps.index.remove(sidecar.recordingId);
    this.deps.onRemoved?.(sidecar.recordingId);
    this.audit(sidecar, 'rule', 'retention', 'rule');
    await this.deleteFiles(sidecar, 'retention');
  }

  /** A segment that could not be published at all: announce it as failed. */
  async onSegmentError(recordingId: string, err: Error, id: StreamIdentity): Promise<void> {
    await this.announce('failed', {
      recordingId, accountSid: id.accountSid, callSid: id.callSid, streamSid: id.streamSid, error: err.message,
    });
  }

  /** The `deleted` webhook of a deletion whose files are gone (deletions.ts calls this). */
  async onDeleted(sidecar: RecordingSidecar, reason: string): Promise<void> {
    await this.announce('deleted', { ...sidecar, deleteReason: reason });
  }

  private async announce(event: RecordingEvent, body: Record<string, unknown>): Promise<void> {
    if (!this.deps.announce) return;
    try {
      await this.deps.announce(event, body);
    } catch (err) {
      this.deps.onError(`queueing the ${event} webhook of ${String(body.recordingId)}`, err as Error);
    }
  }

  private audit(sidecar: RecordingSidecar, cause: AuditEntry['cause'], reason: DeleteReason, actor: string): void {
    this.deps.audit?.({
      recordingId: sidecar.recordingId, accountSid: sidecar.accountSid, callSid: sidecar.callSid, cause, reason, actor,
    });
  }

  /** The published recordings of a call of this scope (another account's are never touched). */
  async publishedOf(scope: string, callSid: string): Promise<RecordingSidecar[]> {
    const { items } = await this.deps.index.query({ callSid, limit: 100_000 });
    return items.filter((r) => this.deps.scopeOf(r.accountSid) === scope);
  }

  /** Announced as `deleted` once the files are gone (now, or by a later retry: deletions.ts). */
  private async deleteFiles(sidecar: RecordingSidecar, reason: DeleteReason): Promise<void> {
    await this.deps.deletions.delete(sidecar, reason);
  }

  /** CTI events after the stream ended: the published sidecars take the new attribution. */
  async reattributePublished(s: CallState): Promise<void> {
    for (const listed of await this.publishedOf(s.accountSid, s.callSid)) {
      // unchanged or deleted meanwhile: rewriteSidecar leaves it alone
      await this.rewriteSidecar(listed.recordingId, (old) => attributed(old, s));
    }
  }

  /**
   * The same for several calls with one catalog query (a batch of Kinesis events): each
   * published sidecar takes its call's attribution as it stands now, i.e. after the batch.
   */
  async reattributePublishedOf(states: readonly CallState[]): Promise<void> {
    if (states.length === 0) return;
    const byKey = new Map<string, CallState>();
    for (const s of states) byKey.set(`${s.accountSid}:${s.callSid}`, s);
    const calls = [...new Set(states.map((s) => s.callSid))];
    for (const listed of await this.deps.index.byCalls(calls)) {
      const s = byKey.get(`${this.deps.scopeOf(listed.accountSid)}:${listed.callSid}`);
      if (s !== undefined) await this.rewriteSidecar(listed.recordingId, (old) => attributed(old, s));
    }
  }

  /**
   * A segment not indexed yet (its outcome is being decided): the sidecar takes the events since
   * it was written. Same lock as rewriteSidecar. null: nothing to change, or deleted meanwhile.
   */
  private rewriteAttribution(listed: RecordingSidecar, s: CallState): Promise<RecordingSidecar | null> {
    return this.sidecarLock.run(listed.recordingId, async () => {
      const file = sidecarPathOf(this.deps.recordingsDir, listed);
      const old = await readSidecar(file);
      const updated = old && attributed(old, s);
      if (!updated) return null;
      await writeFileAtomic(file, JSON.stringify(updated, null, 2) + '\n');
      return updated;
    });
  }

  /**
   * The one path that rewrites an indexed sidecar (attribution, archive): one writer per
   * recording at a time (sidecarLock), reading the sidecar as it is on disk now, so a concurrent
   * rewrite never loses the other's fields. `change` returns the new sidecar (null: no change).
   * Returns the sidecar as it now stands, or null when the recording is not (or no longer)
   * indexed: a recording deleted meanwhile is never brought back.
   */
  rewriteSidecar(recordingId: string, change: (cur: RecordingSidecar) => RecordingSidecar | null): Promise<RecordingSidecar | null> {
    return this.sidecarLock.run(recordingId, async () => {
      const listed = await this.deps.index.get(recordingId);
      if (!listed) return null;
      const file = sidecarPathOf(this.deps.recordingsDir, listed.sidecar);
      const cur = await readSidecar(file);
      if (cur === null) return null; // its deletion removed the file
      const updated = change(cur);
      if (updated === null) return cur;
      await writeFileAtomic(file, JSON.stringify(updated, null, 2) + '\n');
      // UPDATE only: a recording deleted while the file was written is not listed again
      if (!(await this.deps.index.update(updated))) {
        // its deletion may have unlinked before our rename
        await unlink(file).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; });
        return null;
      }
      this.deps.onUpdated?.(updated);
      return updated;
    });
  }
}

/** The sidecar with a call's attribution applied; null when it changes nothing. */
function attributed(old: RecordingSidecar, s: CallState): RecordingSidecar | null {
  const updated: RecordingSidecar = {
    ...old,
    ctiSessionId: s.ctiSessionId ?? old.ctiSessionId,
    employeeId: s.employeeId ?? old.employeeId,
  };
  return updated.ctiSessionId === old.ctiSessionId && updated.employeeId === old.employeeId ? null : updated;
}

/** A sidecar as it is on disk now; null when it is gone (deleted meanwhile) or unreadable. */
async function readSidecar(file: string): Promise<RecordingSidecar | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as RecordingSidecar;
  } catch {
    return null;
  }
}
