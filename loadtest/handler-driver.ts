// Instructions per media message of the gateway's handler path (parser -> session -> timeline ->
// journal and segment writer), for callgrind: deterministic where the shared machine's CPU
// timings are not. Feeds `count` of the prebuilt messages (always 2 × MAX are built, so message
// construction costs the same in every run) of 20 both_tracks streams in time order, runs the
// 50 ms journal commit every 50 ms of audio and lets the disk writes happen between batches.
//
//   npx esbuild loadtest/handler-driver.ts --bundle --platform=node --format=esm \
//     --outfile=/tmp/driver.mjs --banner:js="import{createRequire}from'module';const require=createRequire(import.meta.url);"
//   valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file=/tmp/cg.N node /tmp/driver.mjs N
//   instructions per message = (Ir(2N) - Ir(N)) / N
import pino from 'pino';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TwilioStreamHandler } from '../gateway/twilio/twilio-stream.js';
import { Recorder } from '../recorder/recorder.js';
import { loadConfig } from '../gateway/config.js';
import { frameFor } from './audio-fixtures.js';

const STREAMS = 20;
const MAX = 40_000;
const count = Number(process.argv[2] ?? 20_000);
const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');
const sidOf = (k: number) => `MZ${hex(k, 32)}`;

/** Twilio's shape and field order (as the shared load generator sends it), as ws delivers it. */
function messages(): Buffer[] {
  const payloads = [0, 1].map((t) => Array.from({ length: 250 }, (_, i) => frameFor(1, t ? 'outbound' : 'inbound', i).toString('base64')));
  const out: Buffer[] = [];
  const seq = new Array<number>(STREAMS).fill(1);
  for (let f = 0; out.length < 2 * MAX; f++) {
    for (let k = 0; k < STREAMS; k++) {
      for (const t of [0, 1]) {
        out.push(Buffer.from(`{"event":"media","sequenceNumber":"${seq[k] = seq[k]! + 1}","media":{"track":"${t ? 'outbound' : 'inbound'}","chunk":"${f + 1}","timestamp":"${f * 20}","payload":"${payloads[t]![f % 250]!}"},"streamSid":"${sidOf(k)}"}`));
      }
    }
  }
  return out;
}

async function main(): Promise<void> {
  const msgs = messages();
  const dir = mkdtempSync(path.join(tmpdir(), 'driver-'));
  const { defaults } = loadConfig({});
  const rec = new Recorder({
    recordingsDir: dir, nodeId: 'driver', idleTimeoutMs: 1e9, settingsFor: () => defaults,
    journalDir: path.join(dir, '.journal', 'driver'),
  });
  const handlers = Array.from({ length: STREAMS }, (_, k) => {
    const h = new TwilioStreamHandler({ close() {} }, {
      recorder: rec, acceptAccount: () => true, log: pino({ level: 'silent' }), onProtocolError() {},
      errorBudget: { limit: 50, windowMs: 10_000 }, startTimeoutMs: 0, now: () => performance.now(),
      maxLeadMs: 86_400_000, onAudioDropped() {}, onLeadRefused() {},
    });
    h.onMessage(Buffer.from(`{"event":"start","sequenceNumber":"1","streamSid":"${sidOf(k)}","start":{"accountSid":"AC${'b'.repeat(32)}","callSid":"CA${hex(k, 32)}","streamSid":"${sidOf(k)}","tracks":["inbound","outbound"],"customParameters":{},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}`), false);
    return h;
  });
  // 50 ms of audio of every stream per batch: then the journal's commit and the I/O it started
  const batch = STREAMS * 2 * 50 / 20;
  const journal = (rec as unknown as { journal?: { flush(): void } | null }).journal;
  for (let i = 0; i < count; i += batch) {
    for (let m = i; m < Math.min(count, i + batch); m++) {
      const b = msgs[m]!; // m < count <= msgs.length
      handlers[(m >> 1) % STREAMS]!.onMessage(b, false);
    }
    journal?.flush();
    await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setTimeout(r, 300));
  console.log(JSON.stringify({ count, framesReceived: rec.counters.framesReceived }));
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

void main();
