// Twilio-style resource ids: a two-letter prefix and 32 lower-case hex digits.
import { randomBytes } from 'node:crypto';

export type SidPrefix = 'AC' | 'CA' | 'MZ';

/** `prefix` + 32 random lower-case hex digits, e.g. `randomSid('MZ')` → `MZ51c0ffee…`. */
export function randomSid(prefix: SidPrefix): string {
  return prefix + randomBytes(16).toString('hex');
}

/** true when `sid` is `prefix` + exactly 32 lower-case hex digits. */
export function isSid(sid: string, prefix: SidPrefix): boolean {
  return sid.length === 34 && sid.startsWith(prefix) && /^[0-9a-f]{32}$/.test(sid.slice(2));
}
