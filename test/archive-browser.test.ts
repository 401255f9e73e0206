// An Opus archive plays in a real browser (Debian's chromium, headless): the <audio> element
// loads it from the gateway, learns its duration, seeks to the middle (Range requests answered
// 206) and plays on from there; Chromium's own decoder finds the caller's tone on the left and
// the agent's on the right.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startTestGateway, waitForRecordings } from './fixtures/harness.js';
import { until } from './fixtures/calls.js';
import { TONE_HZ, toneCall } from './fixtures/archive.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';

t.setTimeout(240_000);
const FRAMES = 30_000; // 10 min: larger than what Chromium fetches at once, so seeking needs Range

t.test('headless Chromium plays an Opus archive served with Range, seeking to the middle', async (t) => {
  // the call is sent faster than real time: 10 min of timestamps must not be refused as a lead,
  // nor 9.6 MB arriving at once be dropped as disk backpressure
  const g = await startTestGateway(t, { ARCHIVE_FORMAT: 'opus', MAX_TIMESTAMP_LEAD_S: '3600', WRITE_QUEUE_MAX_KB: '65536' });
  const call = await toneCall(g.wsUrl, FRAMES);
  const [p] = await waitForRecordings(g.http, call.callSid, 1);
  t.same(g.gw.alarms.recent().filter((a) => a.kind === 'audio_dropped').map((a) => a.message), [], 'every frame of the call was kept');
  await until(async () => ((await (await fetch(`${g.http}/v1/recordings/${p.recordingId}`)).json()) as RecordingSidecar).archive, 'the archive', 150_000);

  const profile = await mkdtemp(path.join(os.tmpdir(), 'chromium-profile-'));
  t.teardown(() => rm(profile, { recursive: true, force: true }));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--autoplay-policy=no-user-gesture-required',
    ],
  });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  const audioResponses: { status: number; range: string | undefined }[] = [];
  page.on('response', (r) => {
    if (r.url().includes('/audio')) audioResponses.push({ status: r.status(), range: r.request().headers().range });
  });
  await page.goto(`${g.http}/healthz`); // same origin as the audio

  const url = `/v1/recordings/${p.recordingId}/audio?format=opus`;
  const played = await page.evaluate(async (src) => {
    const a = document.createElement('audio');
    a.preload = 'metadata';
    document.body.append(a);
    const once = (ev: string) => new Promise<void>((resolve, reject) => {
      a.addEventListener(ev, () => resolve(), { once: true });
      a.addEventListener('error', () => reject(new Error(`media error ${a.error?.code}: ${a.error?.message}`)), { once: true });
    });
    const meta = once('loadedmetadata');
    a.src = src;
    await meta;
    const duration = a.duration;
    const seeked = once('seeked');
    a.currentTime = duration / 2;
    await seeked;
    const afterSeek = a.currentTime;
    await a.play();
    const deadline = Date.now() + 30_000;
    while (a.currentTime < afterSeek + 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const reached = a.currentTime;
    a.pause();
    return { duration, afterSeek, reached, error: a.error?.message ?? null };
  }, url);
  t.ok(Math.abs(played.duration - FRAMES / 50) < 0.05, `the browser reads the duration: ${played.duration} s`);
  t.ok(Math.abs(played.afterSeek - played.duration / 2) < 0.1, `seeked to the middle: ${played.afterSeek} s`);
  t.ok(played.reached >= played.afterSeek + 1, `played on from the middle: ${played.afterSeek} -> ${played.reached} s`);
  t.equal(played.error, null);
  t.ok(audioResponses.some((r) => r.status === 206 && r.range !== undefined && !/^bytes=0-/.test(r.range)), `Range requests past the start answered 206: ${JSON.stringify(audioResponses)}`);
  t.notOk(audioResponses.some((r) => r.status >= 400), 'no request failed');

  // Chromium's decoder: two channels, the caller's tone left, the agent's right
  const decoded = await page.evaluate(async ({ src, hz }) => {
    const bytes = await (await fetch(src)).arrayBuffer();
    const ctx = new OfflineAudioContext(2, 8000, 8000);
    const buf = await ctx.decodeAudioData(bytes);
    const power = (x: Float32Array, f: number) => {
      const k = 2 * Math.cos((2 * Math.PI * f) / buf.sampleRate);
      let s1 = 0;
      let s2 = 0;
      for (const v of x) {
        const s0 = v + k * s1 - s2;
        s2 = s1;
        s1 = s0;
      }
      return s1 * s1 + s2 * s2 - k * s1 * s2;
    };
    const db = (x: Float32Array, own: number, other: number) => 10 * Math.log10(power(x, own) / Math.max(power(x, other), 1e-12));
    const mid = (c: number) => buf.getChannelData(c).subarray(buf.length / 2 - 4000, buf.length / 2 + 4000);
    return {
      channels: buf.numberOfChannels,
      duration: buf.duration,
      left: db(mid(0), hz.inbound, hz.outbound),
      right: db(mid(1), hz.outbound, hz.inbound),
    };
  }, { src: url, hz: TONE_HZ });
  t.equal(decoded.channels, 2);
  t.ok(Math.abs(decoded.duration - FRAMES / 50) < 0.02, `decoded duration ${decoded.duration} s`);
  t.ok(decoded.left > 30, `left: the caller's tone (${decoded.left.toFixed(1)} dB over the agent's)`);
  t.ok(decoded.right > 30, `right: the agent's tone (${decoded.right.toFixed(1)} dB over the caller's)`);
});
