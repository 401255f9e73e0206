// In-process micro-benchmark of the per-message hot path, without sockets or other processes:
// where do the µs of one media message go? (the socket-level comparison is bench.ts)
//   node --import tsx loadtest/micro.ts
import pino from 'pino';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseTwilioMessage, decodeBase64Into, ParseFailure } from '../gateway/twilio/twilio-protocol.js';
import { TwilioStreamHandler } from '../gateway/twilio/twilio-stream.js';
import { Recorder } from '../recorder/recorder.js';
import { loadConfig } from '../gateway/config.js';
import { frameFor } from './audio-fixtures.js';

const WARM = 50_000;
const N = 200_000;
const sid = `MZ${'a'.repeat(32)}`;

/** 2 tracks × (WARM + N)/2 frames, in time order, as Twilio sends them (Buffers, as ws delivers). */
function messages(): Buffer[] {
  const payloads = [0, 1].map((t) => Array.from({ length: 500 }, (_, i) => frameFor(1, t ? 'outbound' : 'inbound', i).toString('base64')));
  const out: Buffer[] = [];
  for (let i = 0; i < WARM + N; i++) {
    const t = i & 1;
    const f = i >> 1;
    out.push(Buffer.from(`{"event":"media","sequenceNumber":"${i + 2}","streamSid":"${sid}","media":{"track":"${t ? 'outbound' : 'inbound'}","chunk":"${f + 1}","timestamp":"${f * 20}","payload":"${payloads[t]![f % 500]}"}}`));
  }
  return out;
}

function bench(name: string, msgs: Buffer[], f: (b: Buffer) => void): number {
  for (let i = 0; i < WARM; i++) f(msgs[i]!);
  const c0 = process.cpuUsage();
  for (let i = WARM; i < WARM + N; i++) f(msgs[i]!);
  const c = process.cpuUsage(c0);
  const us = (c.user + c.system) / N;
  console.log(`| ${name} | ${us.toFixed(2)} |`);
  return us;
}

async function main(): Promise<void> {
  const msgs = messages();
  const scratch = Buffer.alloc(4000);
  console.log('| step | CPU µs per media message |\n|---|---:|');
  bench('baseline: JSON.parse + Buffer.from(base64)', msgs, (b) => {
    const m = JSON.parse(b.toString()) as { event: string; media: { payload: string } };
    if (m.event === 'media') Buffer.from(m.media.payload, 'base64');
  });
  bench('JSON.parse only', msgs, (b) => JSON.parse(b.toString()) as unknown);
  bench('parse + schema check', msgs, (b) => parseTwilioMessage(b.toString()));
  bench('parse + check + decode into scratch', msgs, (b) => {
    const m = parseTwilioMessage(b.toString());
    if (!(m instanceof ParseFailure) && m.event === 'media') decodeBase64Into(m.media.payload, scratch);
  });
  const dir = mkdtempSync(path.join(tmpdir(), 'micro-'));
  const { defaults } = loadConfig({}); // the embedded defaults, as `npm start` runs
  const rec = new Recorder({
    recordingsDir: dir, nodeId: 'micro', idleTimeoutMs: 1e9,
    settingsFor: () => defaults,
  });
  const h = new TwilioStreamHandler({ close() {} }, {
    recorder: rec, acceptAccount: () => true, log: pino({ level: 'silent' }), onProtocolError() {},
    errorBudget: { limit: 50, windowMs: 10_000 }, startTimeoutMs: 0, now: () => performance.now(),
    // frames go in far faster than real time: allow the largest lead
    maxLeadMs: 86_400_000, onAudioDropped() {}, onLeadRefused() {},
  });
  h.onMessage(Buffer.from(`{"event":"start","sequenceNumber":"1","streamSid":"${sid}","start":{"accountSid":"AC${'b'.repeat(32)}","callSid":"CA${'c'.repeat(32)}","streamSid":"${sid}","tracks":["inbound","outbound"],"customParameters":{},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}`), false);
  bench('gateway: whole handler (timeline + segment writes queued)', msgs, (b) => h.onMessage(b, false));
  h.endByServer('stop');
  await h.finished;
  console.log(`\nframes placed: ${rec.counters.framesReceived} of ${WARM + N}`);
  rmSync(dir, { recursive: true, force: true });
}

void main();
