// What the recorder needs to know about an account's settings. The gateway's configuration
// builds these from the environment and GATEWAY_CONFIG; the recorder only reads them, so the
// types live here and the core imports nothing from the edge.
import type { Encoding } from './sidecar.js';
import type { ArchiveFormatSetting } from './archive/formats.js';

export type PauseBehavior = 'silence' | 'skip';

/** Settings a data source (one Twilio account) may carry; unset ones inherit the global value. */
export interface SourceSettings {
  recordingFormat: Encoding;
  enablePauseResume: boolean;
  pauseBehavior: PauseBehavior;
  minSessionLengthS: number;
  longCallDurationMin: number;
  longHoldDurationMin: number;
  defaultEmployeeId: string | null;
  segmentMaxS: number;
  /** compressed copy made after publication (none: no archive) */
  archiveFormat: ArchiveFormatSetting;
  /** recordings that started longer ago are deleted by the maintenance sweep; null keeps all */
  retentionDays: number | null;
}

/** A configured account's settings; the gateway's DataSource adds its credentials and event feeds. */
export interface AccountSettings extends SourceSettings {
  accountSid: string;
}
