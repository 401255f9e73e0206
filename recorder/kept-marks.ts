// The durable form of "kept" (a `connected` CTI event): one small marker file per call,
// RECORDINGS_DIR/.kept/<accountSid | any>/<shard>/<callSid>, written (fsynced) before the event
// is answered, and checked before any not_responding deletion. So a replayed
// reservation.rejected after a restart, or after the in-memory call state expired, deletes
// nothing that a `connected` kept. `any`: the event's account was not known.
import path from 'node:path';
import { fileExists, writeFileAtomic } from './atomic-file.js';
import { ACCOUNT_SID_RE, CALL_SID_RE } from './storage-layout.js';

export const KEPT_DIR = '.kept';
const ANY = 'any';

export class KeptMarks {
  constructor(private readonly recordingsDir: string) {}

  private file(accountSid: string | null, callSid: string): string {
    if (!CALL_SID_RE.test(callSid)) throw new Error(`invalid callSid ${JSON.stringify(callSid)}`);
    const account = accountSid !== null && ACCOUNT_SID_RE.test(accountSid) ? accountSid : ANY;
    return path.join(this.recordingsDir, KEPT_DIR, account, callSid.slice(-2), callSid);
  }

  async mark(accountSid: string | null, callSid: string, at: Date): Promise<void> {
    await writeFileAtomic(this.file(accountSid, callSid), JSON.stringify({ keptAt: at.toISOString() }));
  }

  /** kept by an event of that account, or by one whose account was not known */
  async isKept(accountSid: string | null, callSid: string): Promise<boolean> {
    if (!CALL_SID_RE.test(callSid)) return false;
    if (await fileExists(this.file(null, callSid))) return true;
    return accountSid !== null && ACCOUNT_SID_RE.test(accountSid) && fileExists(this.file(accountSid, callSid));
  }
}
