// Command line of `npm run loadtest`: every option, its default and its check, and the --help
// text built from the same table so the two never disagree.
import { parseArgs } from 'node:util';
import type { Track } from './audio-fixtures.js';

export interface LoadTestOptions {
  url: string;
  streams: number;
  rampS: number;
  durationS: number;
  tracks: Track[];
  authToken?: string;
  signUrl?: string;
  accountSid?: string;
  params: Record<string, string>;
  apiUrl: string;
  apiKey?: string;
  hangupFraction: number;
  pauseFraction: number;
  pauseAtS: number;
  pauseForS: number;
  scrapeIntervalS: number;
  settleS: number;
  reportDir: string;
  maxLostFrames?: number;
  maxConnectFailures?: number;
  maxLagP99Ms?: number;
  maxDiskLagP99Ms?: number;
}

export class UsageError extends Error {}

export const HELP = `usage: npm run loadtest -- [options]

Opens N Twilio-faithful Media Streams (connected, start, media every 20 ms per track with
Twilio's sequence numbers, chunks and timestamps, stop) against a gateway, scrapes its /metrics,
counts what it recorded, and writes a table, a JSON report and a self-contained HTML report.

target
  --url URL                WebSocket URL to dial (ws://127.0.0.1:8080/twilio/v1)
  --api-url URL            the gateway's HTTP base for /metrics, /v1/recordings and pause/resume
                           (derived from --url: same host and port, http/https)
  --api-key KEY            bearer key for /v1/* (API_KEYS on the gateway; not needed on loopback)
  --auth-token TOKEN       sign each upgrade (X-Twilio-Signature) with this Twilio auth token
  --sign-url URL           the public URL the signature covers (WEBSOCKET_TARGET_URL; default --url)
  --account-sid SID        accountSid in start (default: random per stream; set it when the
                           gateway has TWILIO_ACCOUNT_SID configured)

load
  --streams N              concurrent streams (10)
  --ramp S                 open the streams evenly over S seconds (streams/100, at least 1)
  --duration S             keep all streams running S seconds after the ramp (30)
  --tracks T               both | inbound | outbound (both)
  --param NAME=VALUE       a start.customParameters entry; repeatable; {i} becomes the stream
                           number, e.g. --param ctiSessionId=lt-{i} --param employeeId=E{i}
  --hangup-fraction F      this share of streams (0..1) ends by dropping the TCP connection
                           without stop, like a network loss (0)
  --pause-fraction F       this share of streams (0..1) is paused through
                           POST /v1/calls/:callSid/pause and resumed later; HTTP statuses are
                           counted; their streams are left out of the lost-frames count (0)
  --pause-at S             seconds after a stream starts that it is paused (2)
  --pause-for S            seconds it stays paused (2)

measurement and report
  --scrape-interval S      scrape /metrics every S seconds (5); event-loop delay p99 is per
                           interval (prom-client resets it on each scrape)
  --settle S               after the end, wait up to S seconds for recordings to be published (20)
  --report DIR             where loadtest-<time>.json and .html go (loadtest-results)

SLOs (exit code 1 when one is missed)
  --max-lost-frames N      frames sent minus frames the gateway recorded (sidecars'
                           framesReceived, via GET /v1/recordings?callSid=)
  --max-connect-failures N upgrades that failed or were refused
  --max-lag-p99-ms MS      gateway event-loop delay: the worst per-interval p99 after the ramp
  --max-disk-lag-p99-ms MS gateway frame-to-disk lag p99 over the run (histogram buckets; the
                           1 s jitter window and 500 ms writes put the floor near 1 000-1 500)

  -h, --help               this text

exit codes: 0 every SLO met, 1 an SLO missed, 2 bad options or the run could not be done`;

function num(name: string, v: string | undefined, def: number | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return def;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} ${JSON.stringify(v)}: expected a number ${min}..${max}`);
  return n;
}

export function parseOptions(argv: string[]): LoadTestOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        url: { type: 'string', default: 'ws://127.0.0.1:8080/twilio/v1' },
        'api-url': { type: 'string' },
        'api-key': { type: 'string' },
        'auth-token': { type: 'string' },
        'sign-url': { type: 'string' },
        'account-sid': { type: 'string' },
        streams: { type: 'string' },
        ramp: { type: 'string' },
        duration: { type: 'string' },
        tracks: { type: 'string', default: 'both' },
        param: { type: 'string', multiple: true },
        'hangup-fraction': { type: 'string' },
        'pause-fraction': { type: 'string' },
        'pause-at': { type: 'string' },
        'pause-for': { type: 'string' },
        'scrape-interval': { type: 'string' },
        settle: { type: 'string' },
        report: { type: 'string', default: 'loadtest-results' },
        'max-lost-frames': { type: 'string' },
        'max-connect-failures': { type: 'string' },
        'max-lag-p99-ms': { type: 'string' },
        'max-disk-lag-p99-ms': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return 'help';
  let wsUrl: URL;
  try {
    wsUrl = new URL(values.url);
  } catch {
    throw new UsageError(`--url ${JSON.stringify(values.url)}: not a URL`);
  }
  if (wsUrl.protocol !== 'ws:' && wsUrl.protocol !== 'wss:') throw new UsageError('--url must be ws:// or wss://');
  const trackMap: Record<string, Track[]> = { both: ['inbound', 'outbound'], inbound: ['inbound'], outbound: ['outbound'] };
  const tracks = trackMap[values.tracks];
  if (!tracks) throw new UsageError(`--tracks ${JSON.stringify(values.tracks)}: expected both, inbound or outbound`);
  const params: Record<string, string> = {};
  for (const p of values.param ?? []) {
    const eq = p.indexOf('=');
    if (eq < 1) throw new UsageError(`--param ${JSON.stringify(p)}: expected NAME=VALUE`);
    params[p.slice(0, eq)] = p.slice(eq + 1);
  }
  const streams = num('streams', values.streams, 10, 1, 100000)!;
  return {
    url: values.url,
    apiUrl: (values['api-url'] ?? `${wsUrl.protocol === 'wss:' ? 'https' : 'http'}://${wsUrl.host}`).replace(/\/$/, ''),
    apiKey: values['api-key'],
    authToken: values['auth-token'],
    signUrl: values['sign-url'],
    accountSid: values['account-sid'],
    streams,
    rampS: num('ramp', values.ramp, Math.max(1, streams / 100), 0, 3600)!,
    durationS: num('duration', values.duration, 30, 0, 86400)!,
    tracks,
    params,
    hangupFraction: num('hangup-fraction', values['hangup-fraction'], 0, 0, 1)!,
    pauseFraction: num('pause-fraction', values['pause-fraction'], 0, 0, 1)!,
    pauseAtS: num('pause-at', values['pause-at'], 2, 0, 86400)!,
    pauseForS: num('pause-for', values['pause-for'], 2, 0, 86400)!,
    scrapeIntervalS: num('scrape-interval', values['scrape-interval'], 5, 0.2, 3600)!,
    settleS: num('settle', values.settle, 20, 0, 3600)!,
    reportDir: values.report,
    maxLostFrames: num('max-lost-frames', values['max-lost-frames'], undefined, 0, Number.MAX_SAFE_INTEGER),
    maxConnectFailures: num('max-connect-failures', values['max-connect-failures'], undefined, 0, Number.MAX_SAFE_INTEGER),
    maxLagP99Ms: num('max-lag-p99-ms', values['max-lag-p99-ms'], undefined, 0, 1e9),
    maxDiskLagP99Ms: num('max-disk-lag-p99-ms', values['max-disk-lag-p99-ms'], undefined, 0, 1e9),
  };
}
