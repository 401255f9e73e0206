// Issue 8 item 9: crash recovery without a checkpoint reads the audio in bounded pieces. A real
// gateway process recovers a 200 MB partial (about 1 h 45 min of stereo PCM, no checkpoint);
// its peak resident memory (VmHWM) stays within 100 MB of the same process recovering a tiny one.
import t from 'tap';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buildWavHeader } from '../codecs/wav.js';
import { randomSid } from '../loadtest/sids.js';
import { getJson } from './fixtures/harness.js';
import { until } from './fixtures/calls.js';
import { startProcess, tempDir } from './fixtures/gateway-process.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

t.setTimeout(180_000);

async function partial(dir: string, dataBytes: number): Promise<{ callSid: string; recordingId: string }> {
  const inprogress = path.join(dir, '.inprogress');
  await mkdir(inprogress, { recursive: true });
  const streamSid = randomSid('MZ');
  const callSid = randomSid('CA');
  const recordingId = `${streamSid}-0000`;
  const meta = {
    recordingId, accountSid: randomSid('AC'), callSid, streamSid, ctiSessionId: null, employeeId: null, segmentIndex: 0,
    tracks: ['inbound', 'outbound'], channels: 2, encoding: 'pcm16', sampleRate: 8000, startedAt: new Date().toISOString(),
    offsetMs: 0, pausedIntervals: [], customParameters: {}, audioFile: `${recordingId}.wav`, nodeId: 'n1',
  };
  await writeFile(path.join(inprogress, `${recordingId}.json`), JSON.stringify(meta));
  const fh = await open(path.join(inprogress, `${recordingId}.wav`), 'w');
  await fh.write(buildWavHeader({ encoding: 'pcm16', channels: 2, sampleRate: 8000, dataBytes: 0 }));
  // a tone on both channels, so every 20 ms block counts as received audio
  const piece = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < piece.length; i += 2) piece.writeInt16LE(((i >> 2) % 40) * 300 - 6000, i);
  for (let left = dataBytes; left > 0; left -= piece.length) await fh.write(piece, 0, Math.min(piece.length, left));
  await fh.close();
  return { callSid, recordingId };
}

async function peakAfterRecovery(t: Tap, dataBytes: number): Promise<{ kb: number; rec: RecordingSidecar }> {
  const cwd = await tempDir(t, 'gw-recmem-');
  const dir = path.join(cwd, 'rec');
  const { callSid } = await partial(dir, dataBytes);
  const p = await startProcess(t, cwd, { RECORDINGS_DIR: dir, NODE_ID: 'n1' });
  await until(async () => (await fetch(`${p.http}/readyz`)).status === 200, 'recovery', 120_000);
  const status = await readFile(`/proc/${p.child.pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]);
  const [rec] = (await getJson<{ items: RecordingSidecar[] }>(`${p.http}/v1/recordings?callSid=${callSid}`)).body.items;
  p.child.kill('SIGTERM');
  await p.exited;
  return { kb, rec: rec! };
}
type Tap = Parameters<typeof tempDir>[0];

t.test('recovering a long partial without a checkpoint stays in bounded memory', async (t) => {
  const small = await peakAfterRecovery(t, 320_000);
  const bigBytes = 200 * 1024 * 1024;
  const big = await peakAfterRecovery(t, bigBytes);
  t.equal(big.rec.closeReason, 'recovered');
  t.equal(big.rec.durationMs, bigBytes / 4 / 8, 'the whole partial was recovered');
  t.equal(big.rec.frames.inbound!.received, bigBytes / 4 / 160, 'frame counts derived from the audio');
  t.ok(big.kb - small.kb < 100 * 1024, `peak RSS ${Math.round(big.kb / 1024)} MB vs ${Math.round(small.kb / 1024)} MB for a tiny partial`);
});
