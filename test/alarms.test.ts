// An alarm is a structured log line (alarm: true, kind), a metric and an entry in /v1/alarms.
import t from 'tap';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { runStream } from '../loadtest/stream-runner.js';
import { randomSid } from '../loadtest/sids.js';
import { startTestGateway, getJson } from './fixtures/harness.js';

t.test('a segment that cannot be published raises one alarm: log line, metric, API', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk))); cb(); } });
  const account = randomSid('AC');
  const g = await startTestGateway(t, { LOG_LEVEL: 'info' }, { logger: pino({ level: 'info' }, sink) });
  // A file where the account's folder must go: publishing fails, recording must not crash.
  await writeFile(path.join(g.dir, account), 'in the way');
  const res = await runStream({ url: g.wsUrl, tracks: ['inbound'], seed: 1, frames: 20, realtime: false, accountSid: account });
  t.equal(res.closeCode, 1000, 'the stream itself ends normally');
  let alarms: { items: { kind: string; recordingId?: string; message: string }[] } = { items: [] };
  for (let i = 0; i < 100 && alarms.items.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    alarms = (await getJson<typeof alarms>(`${g.http}/v1/alarms`)).body;
  }
  t.equal(alarms.items.length, 1);
  t.match(alarms.items[0], { kind: 'segment_publish_failed', recordingId: `${res.streamSid}-0000`, message: /could not be published/ });
  const logged = lines.filter((l) => l.alarm === true);
  t.equal(logged.length, 1, 'one alarm log line');
  t.match(logged[0], { kind: 'segment_publish_failed', level: 50 });
  const metrics = await (await fetch(`${g.http}/metrics`)).text();
  t.match(metrics, /gateway_alarms_total\{kind="segment_publish_failed"\} 1/);
  t.match(metrics, /gateway_segment_errors_total 1/);
  const filtered = await getJson<typeof alarms>(`${g.http}/v1/alarms?kind=long_call`);
  t.same(filtered.body.items, [], 'filter by kind');
  const bad = await getJson<{ error: string }>(`${g.http}/v1/alarms?limit=0`);
  t.equal(bad.status, 400);
  t.equal(bad.body.error, 'bad_request');
});
