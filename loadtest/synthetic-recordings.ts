// Synthetic recordings for catalog tests and benchmarks: a real sidecar cloned with new SIDs,
// spread over `days` days, written in the real layout (contract section 3) with a tiny WAV
// beside each. Deterministic for a seed: recording i has the same ids in every run.
import { link, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { segmentPaths } from '../recorder/storage-layout.js';
import { buildWavHeader } from '../codecs/wav.js';

export interface SyntheticOptions {
  recordingsDir: string;
  count: number;
  /** a real sidecar to clone (every other field is kept) */
  template: RecordingSidecar;
  /** recordings spread evenly over this many days before `end` */
  days?: number;
  end?: Date;
  accounts?: readonly string[];
  employees?: number;
  /** files written at once */
  concurrency?: number;
  onProgress?: (written: number) => void;
  /** index of the first recording (to add more later without repeating ids) */
  first?: number;
  /**
   * every WAV a hard link to `<linkAudioTo>.<n>` (made here), a new n every 60000 links (ext4
   * allows 65000 per inode): a million recordings without a million data blocks
   */
  linkAudioTo?: string;
}

const CLOSE_REASONS = ['stop', 'hangup', 'stop', 'idle', 'stop', 'rotate'] as const;
const WAV = Buffer.concat([buildWavHeader({ encoding: 'mulaw', channels: 1, sampleRate: 8000, dataBytes: 8 }), Buffer.alloc(8, 0xff)]);

const hex32 = (n: number, salt: number) => ((n * 2654435761 + salt) >>> 0).toString(16).padStart(8, '0') + n.toString(16).padStart(24, '0');

/** The i-th synthetic recording's sidecar (no I/O). */
export function syntheticSidecar(o: SyntheticOptions, i: number): RecordingSidecar {
  const days = o.days ?? 28;
  const end = (o.end ?? new Date('2026-01-01T00:00:00Z')).getTime();
  const accounts = o.accounts ?? ['AC' + 'a'.repeat(32)];
  const employees = o.employees ?? 1000;
  const span = days * 24 * 3600 * 1000;
  const startedMs = end - span + Math.floor((i * span) / Math.max(o.count + (o.first ?? 0), 1));
  const callSid = `CA${hex32(Math.floor(i / 2), 1)}`; // two streams per call
  const streamSid = `MZ${hex32(i, 2)}`;
  const recordingId = `${streamSid}-0000`;
  const durationMs = 5000 + ((i * 7919) % 600_000);
  return {
    ...o.template,
    recordingId,
    accountSid: accounts[i % accounts.length]!, // modulo keeps the index in range
    callSid,
    streamSid,
    ctiSessionId: `cti-${Math.floor(i / 2)}`,
    employeeId: `emp-${(i * 31) % employees}`,
    segmentIndex: 0,
    startedAt: new Date(startedMs).toISOString(),
    endedAt: new Date(startedMs + durationMs).toISOString(),
    durationMs,
    offsetMs: 0,
    closeReason: CLOSE_REASONS[i % CLOSE_REASONS.length]!,
    audioFile: `${recordingId}.wav`,
    audioBytes: WAV.length,
    archive: undefined,
  };
}

/** The tiny WAV every synthetic recording carries. */
export const SYNTHETIC_WAV = WAV;

/** Writes `count` recordings (sidecar + WAV); returns their sidecars' count. */
export async function writeSyntheticRecordings(o: SyntheticOptions): Promise<number> {
  const first = o.first ?? 0;
  let next = first;
  let written = 0;
  const made = new Set<string>();
  const worker = async () => {
    while (next < first + o.count) {
      const i = next++;
      const s = syntheticSidecar(o, i);
      const p = segmentPaths(o.recordingsDir, s.accountSid, s.callSid, new Date(s.startedAt), s.recordingId);
      const dir = path.dirname(p.sidecar);
      if (!made.has(dir)) {
        await mkdir(dir, { recursive: true });
        made.add(dir);
        if (made.size > 10_000) made.clear();
      }
      if (o.linkAudioTo) {
        const target = `${o.linkAudioTo}.${Math.floor(i / 60_000)}`;
        await writeFile(target, WAV, { flag: 'wx' }).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'EEXIST') throw e; });
        await link(target, p.audio);
      }
      else await writeFile(p.audio, WAV);
      await writeFile(p.sidecar, JSON.stringify(s, null, 2));
      written++;
      if (written % 10_000 === 0) o.onProgress?.(written);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency ?? 32 }, worker));
  return written;
}
