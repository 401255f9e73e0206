// Test-only crash injection: with GATEWAY_TEST_CRASH_AT=<step> the process SIGKILLs itself when
// it reaches that named step of publication or recovery, so a test can prove that a crash at
// every step is recovered. Inert unless the variable is set (one string comparison per step,
// never per frame).
const target = process.env.GATEWAY_TEST_CRASH_AT ?? '';

/** Named steps, in the order a segment goes through them. */
export type CrashStep =
  | 'publish:audio-renamed'      // WAV under its final name, no sidecar yet
  | 'publish:sidecar-written'    // WAV and sidecar published, outcome (rules, index, webhook) not yet
  | 'publish:outcome-done'       // outcome done, the partial's marks still in .inprogress
  | 'recovery:audio-renamed'     // recovery published the WAV, not the sidecar
  | 'recovery:sidecar-written'   // recovery wrote the sidecar, outcome not yet
  | 'delete:sidecar-removed'     // a rule deletion removed the sidecar, not the audio
  | 'webhook:claimed';           // an outbox event was claimed, not yet sent

export function crashPoint(step: CrashStep): void {
  if (target !== '' && target === step) process.kill(process.pid, 'SIGKILL');
}
