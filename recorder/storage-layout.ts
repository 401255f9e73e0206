// Where recordings live on disk (contract section 3). Every path is built from ids that were
// checked by shape first, so nothing a client sends can point outside RECORDINGS_DIR.
import path from 'node:path';

export const ACCOUNT_SID_RE = /^AC[0-9a-f]{32}$/;
export const CALL_SID_RE = /^CA[0-9a-f]{32}$/;
/**
 * Twilio's MZ + 32 hex, or a UUID (seen as streamSid in Twilio's own captures): both are safe as
 * file names, and refusing a stream for the shape of its id would lose the whole call.
 */
const STREAM_SID_SHAPE = 'MZ[0-9a-f]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}';
export const STREAM_SID_RE = new RegExp(`^(?:${STREAM_SID_SHAPE})$`);
/**
 * `<streamSid>-<segment index, 4 digits>`, or `<streamSid>-r<n>-<segment>` for the n-th later
 * stream that reused the streamSid (recording-ids.ts): unique across accounts and nodes.
 */
export const RECORDING_ID_RE = new RegExp(`^(?:${STREAM_SID_SHAPE})(?:-r[1-9]\\d{0,9})?-\\d{4}$`);

/** In-progress segments live here (same filesystem, so the final rename is atomic). */
export const IN_PROGRESS_DIR = '.inprogress';

/** `base`: the stream's reserved name (its streamSid, or `<streamSid>-r<n>`; recording-ids.ts) */
export function recordingIdFor(base: string, segmentIndex: number): string {
  return `${base}-${String(segmentIndex).padStart(4, '0')}`;
}

export function streamSidOfRecordingId(recordingId: string): string {
  return recordingId.replace(/(?:-r\d+)?-\d{4}$/, '');
}

/** `<accountSid>/<YYYY>/<MM>/<DD>/<callSid>`, relative to RECORDINGS_DIR, dated by UTC stream start. */
export function callDir(accountSid: string, callSid: string, streamStartedAt: Date): string {
  if (!ACCOUNT_SID_RE.test(accountSid)) throw new Error(`invalid accountSid ${JSON.stringify(accountSid)}`);
  if (!CALL_SID_RE.test(callSid)) throw new Error(`invalid callSid ${JSON.stringify(callSid)}`);
  const y = String(streamStartedAt.getUTCFullYear());
  const m = String(streamStartedAt.getUTCMonth() + 1).padStart(2, '0');
  const d = String(streamStartedAt.getUTCDate()).padStart(2, '0');
  return path.join(accountSid, y, m, d, callSid);
}

export interface SegmentPaths {
  /** final audio file, absolute */
  audio: string;
  /** final sidecar, absolute */
  sidecar: string;
  /** audio while being written, absolute */
  partial: string;
  /** what the in-progress segment is (ids, start time), for crash recovery; absolute */
  partialMeta: string;
  /** periodic frame-count checkpoint of the in-progress segment, for crash recovery; absolute */
  partialStats: string;
}

/** extension of the stats checkpoint beside a partial (not `.json`: it is no meta file) */
export const CHECKPOINT_EXT = '.ckpt';

/**
 * extension of a stream's pause record (pause-record.ts): `.inprogress/<base><ext>`, one per
 * stream that was ever paused, beside its partials (not `.json`: it is no meta file)
 */
export const PAUSE_RECORD_EXT = '.pause';

/** The pause record of the stream whose reserved name is `base`. */
export function pauseRecordPath(recordingsDir: string, base: string): string {
  return path.join(recordingsDir, IN_PROGRESS_DIR, `${base}${PAUSE_RECORD_EXT}`);
}

/** The stream's reserved name (`base`) of one of its recordings: the id without `-<segment>`. */
export function baseOfRecordingId(recordingId: string): string {
  return recordingId.replace(/-\d{4}$/, '');
}

export function segmentPaths(
  recordingsDir: string, accountSid: string, callSid: string, streamStartedAt: Date, recordingId: string,
): SegmentPaths {
  if (!RECORDING_ID_RE.test(recordingId)) throw new Error(`invalid recordingId ${JSON.stringify(recordingId)}`);
  const dir = path.join(recordingsDir, callDir(accountSid, callSid, streamStartedAt));
  const inprogress = path.join(recordingsDir, IN_PROGRESS_DIR);
  return {
    audio: path.join(dir, `${recordingId}.wav`),
    sidecar: path.join(dir, `${recordingId}.json`),
    partial: path.join(inprogress, `${recordingId}.wav`),
    partialMeta: path.join(inprogress, `${recordingId}.json`),
    partialStats: path.join(inprogress, `${recordingId}${CHECKPOINT_EXT}`),
  };
}

/** Where a published sidecar lives (its folder is dated by the stream's start, not the segment's). */
export function sidecarPathOf(recordingsDir: string, s: { accountSid: string; callSid: string; recordingId: string; startedAt: string; offsetMs: number }): string {
  const streamStart = new Date(Date.parse(s.startedAt) - s.offsetMs);
  return segmentPaths(recordingsDir, s.accountSid, s.callSid, streamStart, s.recordingId).sidecar;
}
