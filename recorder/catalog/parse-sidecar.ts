// Reading a sidecar from disk for the catalog: checks the fields the catalog and the API depend
// on; the rest of the sidecar is passed through.
import path from 'node:path';
import type { RecordingSidecar } from '../sidecar.js';
import { RECORDING_ID_RE } from '../storage-layout.js';
import { archiveFileName, isArchiveFormat } from '../archive/formats.js';
import { InvalidSidecarError } from './catalog.js';

export { InvalidSidecarError };

function isStr(v: unknown): v is string {
  return typeof v === 'string';
}

function isNullableStr(v: unknown): v is string | null {
  return v === null || typeof v === 'string';
}

/** `archive` names `<recordingId>.<its format>` beside the sidecar, nothing else. */
function validArchiveField(a: unknown, recordingId: unknown): boolean {
  if (typeof a !== 'object' || a === null) return false;
  const { format, file } = a as { format?: unknown; file?: unknown };
  return isArchiveFormat(format) && typeof recordingId === 'string' && file === archiveFileName(recordingId, format);
}

/**
 * Checks the fields the index and the API depend on; the rest of the sidecar is passed through.
 * `fileName` is the sidecar's own name, which must be `<recordingId>.json`.
 */
export function parseSidecar(text: string, fileName: string): RecordingSidecar {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new InvalidSidecarError(`not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidSidecarError('not a JSON object');
  const s = v as Record<string, unknown>;
  const problems: string[] = [];
  if (!isStr(s.recordingId) || !RECORDING_ID_RE.test(s.recordingId)) problems.push('recordingId');
  for (const k of ['accountSid', 'callSid', 'streamSid', 'startedAt', 'endedAt', 'audioFile', 'sha256'] as const) {
    if (!isStr(s[k])) problems.push(k);
  }
  for (const k of ['ctiSessionId', 'employeeId'] as const) {
    if (!isNullableStr(s[k])) problems.push(k);
  }
  if (s.channels !== 1 && s.channels !== 2) problems.push('channels');
  if (s.encoding !== 'mulaw' && s.encoding !== 'pcm16') problems.push('encoding');
  if (isStr(s.startedAt) && !Number.isFinite(Date.parse(s.startedAt))) problems.push('startedAt');
  if (isStr(s.audioFile) && (path.basename(s.audioFile) !== s.audioFile || !s.audioFile.endsWith('.wav') || s.audioFile.startsWith('.'))) {
    problems.push('audioFile');
  }
  if (s.archive !== undefined && !validArchiveField(s.archive, s.recordingId)) problems.push('archive');
  if (problems.length > 0) throw new InvalidSidecarError(`missing or invalid field(s): ${problems.join(', ')}`);
  if (fileName !== `${s.recordingId as string}.json`) {
    throw new InvalidSidecarError(`file name ${fileName} does not match recordingId ${s.recordingId as string}`);
  }
  return s as unknown as RecordingSidecar;
}
