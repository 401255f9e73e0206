// The compressed forms a recording can be archived in or played back as (contract section 10),
// and the ffmpeg arguments that make each. Call audio is 8 kHz G.711: narrowband, so low
// bitrates keep it intelligible; each channel is coded on its own (caller and agent must never
// bleed into each other, which joint/intensity stereo would do at these rates).

export const ARCHIVE_FORMATS = ['opus', 'flac', 'mp3'] as const;
export type ArchiveFormat = (typeof ARCHIVE_FORMATS)[number];
/** ARCHIVE_FORMAT: an archive format, or none (no compressed copy) */
export type ArchiveFormatSetting = ArchiveFormat | 'none';

export function isArchiveFormat(v: unknown): v is ArchiveFormat {
  return (ARCHIVE_FORMATS as readonly unknown[]).includes(v);
}

interface FormatSpec {
  /** file extension, without the dot */
  ext: string;
  contentType: string;
  /** ffmpeg muxer (-f) */
  muxer: string;
  /** encoder arguments for `channels` channels of 8 kHz audio */
  codec(channels: number): string[];
  /** the ffmpeg configure flag the encoder needs (checked at start-up) */
  needs: string | null;
  /**
   * The container states the exact length (Ogg Opus: the last granule position less the
   * pre-skip), so reading its pages (no decode) proves the file complete. Used while the WAV is kept; an
   * archive that replaces the WAV is also decoded in full (at the decoder's 48 kHz into /dev/null:
   * make-archive.ts). Opus only: decoding it is the costly part (a third of the encode's CPU),
   * while FLAC and MP3 decode cheaply and MP3's packets include the encoder delay and padding.
   */
  packetsGiveLength: boolean;
}

const SPECS: Record<ArchiveFormat, FormatSpec> = {
  // Ogg Opus, speech mode, 8 kbit/s per channel (stereo: 16 kbit/s, 1/8 of mu-law WAV).
  // Channel mapping family 255: one independent Opus stream per channel. With the usual
  // coupled stereo stream libopus folds anything under ~19 kbit/s to mono (measured: caller and
  // agent 1 dB apart at 16 kbit/s, 70+ dB apart this way). Chromium and ffmpeg decode it.
  opus: {
    ext: 'opus',
    contentType: 'audio/ogg; codecs=opus',
    muxer: 'ogg',
    // CPU, measured (BENCHMARKS.md): one worker must archive an audio hour in 12 s to keep up
    // with 300 calls. compression_level 0 (of 0..10) and 120 ms packets (the longest Opus has:
    // two 60 ms frames, SILK codes each as three 20 ms frames; less per-packet work and Ogg
    // overhead): ~8.5 CPU s per audio hour against ~19 s at level 3 with 20 ms packets, and
    // 14 % smaller files.
    codec: (ch) => [
      '-c:a', 'libopus', '-b:a', `${8 * ch}k`, '-application', 'voip', '-compression_level', '0', '-frame_duration', '120',
      ...(ch > 1 ? ['-mapping_family', '255'] : []),
    ],
    needs: '--enable-libopus',
    packetsGiveLength: true,
  },
  // Lossless: the PCM16 decode of the mu-law, sample for sample.
  flac: {
    ext: 'flac',
    contentType: 'audio/flac',
    muxer: 'flac',
    codec: () => ['-c:a', 'flac', '-compression_level', '8'],
    needs: null,
    packetsGiveLength: false,
  },
  // MPEG-2.5 layer III (the only MP3 flavour at 8 kHz), 16 kbit/s per channel, plain stereo
  // (joint stereo would mix the caller into the agent's channel at this rate).
  mp3: {
    ext: 'mp3',
    contentType: 'audio/mpeg',
    muxer: 'mp3',
    codec: (ch) => ['-c:a', 'libmp3lame', '-b:a', `${16 * ch}k`, '-joint_stereo', '0'],
    needs: '--enable-libmp3lame',
    packetsGiveLength: false,
  },
};

export function formatSpec(format: ArchiveFormat): FormatSpec {
  return SPECS[format];
}

/** `<recordingId>.<ext>`: the archive's name beside the WAV and the sidecar. */
export function archiveFileName(recordingId: string, format: ArchiveFormat): string {
  return `${recordingId}.${SPECS[format].ext}`;
}
