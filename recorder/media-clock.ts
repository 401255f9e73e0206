// Twilio Media Streams audio is 8 kHz: call time in ms and in samples convert by 8. One place for
// the session, its pause spans, the journal replay and crash recovery.
export const SAMPLE_RATE = 8000;
export const SAMPLES_PER_MS = SAMPLE_RATE / 1000;
