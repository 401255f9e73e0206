// The JSON sidecar written beside every finished segment: the contract (section 3) lists the
// required fields; the rest are accounting and provenance that playback and QA rely on.

export type Track = 'inbound' | 'outbound';
export type Encoding = 'mulaw' | 'pcm16';
export type CloseReason =
  | 'stop' | 'hangup' | 'idle' | 'rotate' | 'long_call' | 'shutdown' | 'recovered';

export interface PausedInterval {
  /** call time in ms (ms since stream start, the clock of `media.timestamp`) */
  from: number;
  to: number;
}

/** Per-track frame accounting for one segment. */
export interface TrackFrameStats {
  /** media messages accepted and placed on the timeline */
  received: number;
  /** 20 ms-equivalents of audio that never arrived and were written as silence */
  missing: number;
  /** frames whose span was already filled: dropped */
  duplicate: number;
  /** frames that arrived out of order but inside the open window: put in place */
  late: number;
  /** frames that arrived after their span had already been written: dropped */
  tooLate: number;
}

export interface RecordingSidecar {
  recordingId: string;
  accountSid: string;
  callSid: string;
  streamSid: string;
  ctiSessionId: string | null;
  employeeId: string | null;
  segmentIndex: number;
  tracks: Track[];
  channels: 1 | 2;
  encoding: Encoding;
  sampleRate: 8000;
  startedAt: string;
  endedAt: string;
  durationMs: number;
  /** call time (ms since stream start) of this segment's first sample */
  offsetMs: number;
  framesReceived: number;
  framesMissing: number;
  framesDuplicate: number;
  framesLate: number;
  framesTooLate: number;
  frames: Partial<Record<Track, TrackFrameStats>>;
  pausedIntervals: PausedInterval[];
  closeReason: CloseReason;
  customParameters: Record<string, string>;
  /** file name of the audio beside this sidecar */
  audioFile: string;
  audioBytes: number;
  sha256: string;
  nodeId: string;
  /** media frames dropped because the call was paused (present when > 0) */
  framesPaused?: number;
  /** set when the disk refused a write: the audio before it is kept, after it is lost */
  writeError?: string;
  /** 20 ms frames (all tracks, like framesReceived) not kept because the disk fell behind: silence in the file instead */
  framesDroppedDiskBackpressure?: number;
  /** present once the compressed archive is made (ARCHIVE_FORMAT other than none) */
  archive?: ArchiveInfo;
}

/** The compressed copy beside the WAV (contract section 10), once it is made and verified. */
export interface ArchiveInfo {
  format: 'opus' | 'flac' | 'mp3';
  /** file name beside the sidecar: `<recordingId>.opus|.flac|.mp3` */
  file: string;
  bytes: number;
  sha256: string;
  /** of the decoded archive (lossy codecs may differ from the WAV by a few ms) */
  durationMs: number;
  /** false: the WAV was removed after the archive was verified (ARCHIVE_KEEP_WAV=false) */
  wavKept: boolean;
}

export type FrameTotals = Pick<RecordingSidecar, 'framesReceived' | 'framesMissing' | 'framesDuplicate' | 'framesLate' | 'framesTooLate'>;

/** The sidecar's totals are the sums of its per-track accounting. */
export function frameTotals(frames: Partial<Record<Track, TrackFrameStats>>): FrameTotals {
  const t: FrameTotals = { framesReceived: 0, framesMissing: 0, framesDuplicate: 0, framesLate: 0, framesTooLate: 0 };
  for (const s of Object.values(frames)) {
    if (s === undefined) continue; // eslint-disable-line @typescript-eslint/no-unnecessary-condition -- Partial allows an explicit undefined value
    t.framesReceived += s.received;
    t.framesMissing += s.missing;
    t.framesDuplicate += s.duplicate;
    t.framesLate += s.late;
    t.framesTooLate += s.tooLate;
  }
  return t;
}
