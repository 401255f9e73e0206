import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import {
  ConfigError, loadConfig, maskUrlCredentials, redactConfig, SECRET_SETTINGS, SETTING_NAMES, SOURCE_SETTING_NAMES,
} from '../gateway/config.js';
import type { GatewayConfig } from '../gateway/config-types.js';
import type { SourceSettings } from '../recorder/source-settings.js';

const SID_A = `AC${'a'.repeat(32)}`;
const SID_B = `AC${'0123456789abcdef'.repeat(2)}`;
const SID_C = `AC${'c'.repeat(32)}`;
const TOKEN_A = 'a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0';
const TOKEN_B = 'b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1';
const TOKEN_ENV = 'e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2';
const KEY_1 = 'key-one-0123456789';
const KEY_2 = 'key-two-0123456789';
const WEBHOOK_SECRET = 'whsec-0123456789-abcdef';

/** A fake readFile over an in-memory set of files (objects are serialised as JSON). */
function files(map: Record<string, unknown>): (p: string) => string {
  return (p) => {
    if (!(p in map)) throw Object.assign(new Error(`ENOENT: no such file, open '${p}'`), { code: 'ENOENT' });
    const v = map[p];
    return typeof v === 'string' ? v : JSON.stringify(v);
  };
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

const withFile = (content: unknown, env: NodeJS.ProcessEnv = {}): GatewayConfig =>
  loadConfig({ GATEWAY_CONFIG: '/etc/gw.json', ...env }, files({ '/etc/gw.json': content }));
const fileError = (content: unknown, env: NodeJS.ProcessEnv = {}): ConfigError =>
  configError(() => withFile(content, env));

const DEFAULT_SOURCE: SourceSettings = {
  recordingFormat: 'mulaw',
  enablePauseResume: false,
  pauseBehavior: 'silence',
  minSessionLengthS: 0,
  longCallDurationMin: 120,
  longHoldDurationMin: 30,
  defaultEmployeeId: null,
  segmentMaxS: 3600,
  archiveFormat: 'none',
  retentionDays: null,
};

t.test('an empty environment gives the contract defaults', async (t) => {
  const c = loadConfig({});
  const { nodeId, ...rest } = c;
  t.same(rest, {
    port: 8080,
    host: '0.0.0.0',
    recordingsDir: path.resolve('recordings'),
    redisUrl: null,
    databaseUrl: null,
    websocketTargetUrl: null,
    drainTimeoutS: 30,
    streamIdleTimeoutS: 30,
    maintenanceIntervalS: 300,
    apiKeys: [],
    recordingWebhookUrl: null,
    recordingWebhookSecret: null,
    logLevel: 'info',
    writeQueueMaxBytes: 4 * 1024 * 1024,
    archiveConcurrency: 1,
    archiveKeepWav: true,
    maxStreams: 2000,
    startTimeoutS: 10,
    maxTimestampLeadS: 60,
    defaults: DEFAULT_SOURCE,
    sources: [],
  });
  t.strictSame(c.defaults, DEFAULT_SOURCE, 'defaultEmployeeId is null, not undefined');
  t.ok(path.isAbsolute(c.recordingsDir));
  t.match(nodeId, /^[A-Za-z0-9._-]{1,64}$/);
  t.equal(nodeId, os.hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64) || 'gateway');
});

t.test('NODE_ID defaults to the host name, made valid', async (t) => {
  const load = async (hostname: string) => {
    const mod = await t.mockImport<typeof import('../gateway/config.js')>('../gateway/config.js', {
      'node:os': { default: { ...os, hostname: () => hostname } },
    });
    return mod.loadConfig({}).nodeId;
  };
  t.equal(await load('rec-node-7.example.com'), 'rec-node-7.example.com');
  t.equal(await load('weird host/name'), 'weird-host-name');
  t.equal(await load('x'.repeat(80)), 'x'.repeat(64));
  t.equal(await load(''), 'gateway');
});

t.test('every setting accepts good values', async (t) => {
  const cases: Array<[string, string, (c: GatewayConfig) => unknown, unknown]> = [
    ['PORT', '0', (c) => c.port, 0],
    ['PORT', '65535', (c) => c.port, 65535],
    ['PORT', '09000', (c) => c.port, 9000],
    ['HOST', '127.0.0.1', (c) => c.host, '127.0.0.1'],
    ['HOST', '::', (c) => c.host, '::'],
    ['HOST', 'localhost', (c) => c.host, 'localhost'],
    ['HOST', 'gw-1.internal.example', (c) => c.host, 'gw-1.internal.example'],
    ['RECORDINGS_DIR', '/var/lib/rec', (c) => c.recordingsDir, '/var/lib/rec'],
    ['RECORDINGS_DIR', 'data/rec', (c) => c.recordingsDir, path.resolve('data/rec')],
    ['REDIS_URL', 'redis://redis:6379/0', (c) => c.redisUrl, 'redis://redis:6379/0'],
    ['REDIS_URL', 'rediss://:pw@cache.example.com', (c) => c.redisUrl, 'rediss://:pw@cache.example.com'],
    ['DATABASE_URL', 'postgres://postgres@db:5432/gateway', (c) => c.databaseUrl, 'postgres://postgres@db:5432/gateway'],
    ['DATABASE_URL', 'postgresql://u:pw@db.example.com/rec?sslmode=require', (c) => c.databaseUrl, 'postgresql://u:pw@db.example.com/rec?sslmode=require'],
    ['RETENTION_DAYS', '1', (c) => c.defaults.retentionDays, 1],
    ['RETENTION_DAYS', '36500', (c) => c.defaults.retentionDays, 36500],
    ['NODE_ID', 'node_1.a-b', (c) => c.nodeId, 'node_1.a-b'],
    ['NODE_ID', 'n'.repeat(64), (c) => c.nodeId, 'n'.repeat(64)],
    ['TWILIO_ACCOUNT_SID', SID_B, (c) => c.sources.map((s) => [s.accountSid, s.authToken]), [[SID_B, null]]],
    ['WEBSOCKET_TARGET_URL', 'wss://lb.example.com/twilio/v1', (c) => c.websocketTargetUrl,
      'wss://lb.example.com/twilio/v1'],
    ['WEBSOCKET_TARGET_URL', 'ws://10.0.0.5:8080/twilio/v1/', (c) => c.websocketTargetUrl,
      'ws://10.0.0.5:8080/twilio/v1/'],
    ['TWILIO_ENABLE_PAUSE_RESUME', 'TRUE', (c) => c.defaults.enablePauseResume, true],
    ['TWILIO_ENABLE_PAUSE_RESUME', 'true', (c) => c.defaults.enablePauseResume, true],
    ['TWILIO_ENABLE_PAUSE_RESUME', '1', (c) => c.defaults.enablePauseResume, true],
    ['TWILIO_ENABLE_PAUSE_RESUME', 'False', (c) => c.defaults.enablePauseResume, false],
    ['TWILIO_ENABLE_PAUSE_RESUME', '0', (c) => c.defaults.enablePauseResume, false],
    ['PAUSE_BEHAVIOR', 'skip', (c) => c.defaults.pauseBehavior, 'skip'],
    ['PAUSE_BEHAVIOR', 'Silence', (c) => c.defaults.pauseBehavior, 'silence'],
    ['DRAIN_TIMEOUT_S', '0', (c) => c.drainTimeoutS, 0],
    ['DRAIN_TIMEOUT_S', '3600', (c) => c.drainTimeoutS, 3600],
    ['STREAM_IDLE_TIMEOUT_S', '1', (c) => c.streamIdleTimeoutS, 1],
    ['STREAM_IDLE_TIMEOUT_S', '3600', (c) => c.streamIdleTimeoutS, 3600],
    ['MIN_SESSION_LENGTH_S', '0', (c) => c.defaults.minSessionLengthS, 0],
    ['MIN_SESSION_LENGTH_S', '3600', (c) => c.defaults.minSessionLengthS, 3600],
    ['LONG_CALL_DURATION_MIN', '1', (c) => c.defaults.longCallDurationMin, 1],
    ['LONG_CALL_DURATION_MIN', '1440', (c) => c.defaults.longCallDurationMin, 1440],
    ['LONG_HOLD_DURATION_MIN', '1', (c) => c.defaults.longHoldDurationMin, 1],
    ['LONG_HOLD_DURATION_MIN', '3000', (c) => c.defaults.longHoldDurationMin, 3000],
    ['MAINTENANCE_INTERVAL_S', '1', (c) => c.maintenanceIntervalS, 1],
    ['MAINTENANCE_INTERVAL_S', '86400', (c) => c.maintenanceIntervalS, 86400],
    ['DEFAULT_EMPLOYEE_ID', 'agent 007', (c) => c.defaults.defaultEmployeeId, 'agent 007'],
    ['DEFAULT_EMPLOYEE_ID', 'Zoë', (c) => c.defaults.defaultEmployeeId, 'Zoë'],
    ['RECORDING_FORMAT', 'pcm16', (c) => c.defaults.recordingFormat, 'pcm16'],
    ['RECORDING_FORMAT', 'MULAW', (c) => c.defaults.recordingFormat, 'mulaw'],
    ['SEGMENT_MAX_S', '10', (c) => c.defaults.segmentMaxS, 10],
    ['SEGMENT_MAX_S', '86400', (c) => c.defaults.segmentMaxS, 86400],
    ['API_KEYS', ` ${KEY_1} , ${KEY_2},${KEY_1}`, (c) => c.apiKeys, [KEY_1, KEY_2]],
    ['API_KEYS', KEY_1, (c) => c.apiKeys, [KEY_1]],
    ['RECORDING_WEBHOOK_SECRET', WEBHOOK_SECRET, (c) => c.recordingWebhookSecret, WEBHOOK_SECRET],
    ['LOG_LEVEL', 'silent', (c) => c.logLevel, 'silent'],
    ['LOG_LEVEL', 'DEBUG', (c) => c.logLevel, 'debug'],
    ['LOG_LEVEL', 'fatal', (c) => c.logLevel, 'fatal'],
    ['ARCHIVE_FORMAT', 'opus', (c) => c.defaults.archiveFormat, 'opus'],
    ['ARCHIVE_FORMAT', 'FLAC', (c) => c.defaults.archiveFormat, 'flac'],
    ['ARCHIVE_FORMAT', 'mp3', (c) => c.defaults.archiveFormat, 'mp3'],
    ['ARCHIVE_FORMAT', 'none', (c) => c.defaults.archiveFormat, 'none'],
    ['ARCHIVE_CONCURRENCY', '1', (c) => c.archiveConcurrency, 1],
    ['ARCHIVE_CONCURRENCY', '64', (c) => c.archiveConcurrency, 64],
    ['ARCHIVE_KEEP_WAV', 'false', (c) => c.archiveKeepWav, false],
    ['ARCHIVE_KEEP_WAV', '1', (c) => c.archiveKeepWav, true],
  ];
  for (const [name, value, get, expected] of cases) {
    t.same(get(loadConfig({ [name]: value })), expected, `${name}=${JSON.stringify(value)}`);
  }
  const signed = loadConfig({ TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: TOKEN_A });
  t.same(signed.sources.map((s) => [s.accountSid, s.authToken]), [[SID_A, TOKEN_A]]);
  const oddToken = loadConfig({ TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: 'Odd!Token~16chars' });
  t.equal(oddToken.sources[0]!.authToken, 'Odd!Token~16chars', 'any printable token of 16..128 chars');
  const hook = loadConfig({ RECORDING_WEBHOOK_URL: 'https://hooks.example.com/rec?x=1', RECORDING_WEBHOOK_SECRET: WEBHOOK_SECRET });
  t.equal(hook.recordingWebhookUrl, 'https://hooks.example.com/rec?x=1');
  t.equal(hook.recordingWebhookSecret, WEBHOOK_SECRET);
  t.equal(loadConfig({ RECORDING_WEBHOOK_URL: 'http://10.1.1.1:9000/', RECORDING_WEBHOOK_SECRET: WEBHOOK_SECRET })
    .recordingWebhookUrl, 'http://10.1.1.1:9000/');
  t.same(loadConfig({ TWILIO_ENABLE_PAUSE_RESUME: 'true' }).sources, [], 'global settings add no source');
});

// What each setting allows, pinned: the ranges are part of the contract with operators.
const ALLOWED: Record<string, string> = {
  PORT: 'an integer 0..65535',
  HOST: 'an IP address or a host name',
  RECORDINGS_DIR: 'a non-empty directory path',
  REDIS_URL: 'a redis:// or rediss:// URL with a host',
  NODE_ID: '1..64 characters from A-Z a-z 0-9 . _ -',
  TWILIO_ACCOUNT_SID: 'AC followed by 32 lower-case hex digits',
  TWILIO_AUTH_TOKEN: '16..128 printable ASCII characters without spaces',
  WEBSOCKET_TARGET_URL: 'a wss:// or ws:// URL with a host and no credentials, query string or fragment',
  TWILIO_ENABLE_PAUSE_RESUME: 'true, false, 1 or 0',
  PAUSE_BEHAVIOR: 'one of silence, skip',
  DRAIN_TIMEOUT_S: 'an integer 0..3600',
  STREAM_IDLE_TIMEOUT_S: 'an integer 1..3600',
  MIN_SESSION_LENGTH_S: 'an integer 0..3600',
  LONG_CALL_DURATION_MIN: 'an integer 1..1440',
  LONG_HOLD_DURATION_MIN: 'an integer 1..3000',
  MAINTENANCE_INTERVAL_S: 'an integer 1..86400',
  DEFAULT_EMPLOYEE_ID: '1..128 characters without control characters or surrounding spaces',
  RECORDING_FORMAT: 'one of mulaw, pcm16',
  SEGMENT_MAX_S: 'an integer 10..86400',
  API_KEYS: 'comma-separated keys, each 16..256 printable ASCII characters without spaces, no empty entries',
  RECORDING_WEBHOOK_URL: 'an http:// or https:// URL with a host',
  RECORDING_WEBHOOK_SECRET: '16..1024 characters without control characters',
  LOG_LEVEL: 'one of fatal, error, warn, info, debug, trace, silent',
  WRITE_QUEUE_MAX_KB: 'an integer 16..1048576',
  ARCHIVE_FORMAT: 'one of none, opus, flac, mp3',
  ARCHIVE_CONCURRENCY: 'an integer 1..64',
  ARCHIVE_KEEP_WAV: 'true, false, 1 or 0',
  MAX_STREAMS: 'an integer 1..100000',
  START_TIMEOUT_S: 'an integer 1..300',
  MAX_TIMESTAMP_LEAD_S: 'an integer 1..86400',
  DATABASE_URL: 'a postgres:// or postgresql:// URL with a host',
  RETENTION_DAYS: 'an integer 1..36500',
};

/** Test names must stay on one TAP line. */
const ascii = (s: string): string =>
  s.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

const VALID = 'is not valid';
const RANGE = 'is out of range';
const ENUM = 'is not allowed';
const NOT_INT = ['1.5', '', '12abc', '  ', ' 12', '0x10', '1e3', '+5'];
const BAD: Array<[string, string, string]> = [
  ...NOT_INT.map((v): [string, string, string] => ['PORT', v, VALID]),
  ['PORT', '65536', RANGE],
  ['WRITE_QUEUE_MAX_KB', '15', RANGE],
  ['WRITE_QUEUE_MAX_KB', '1048577', RANGE],
  ['WRITE_QUEUE_MAX_KB', '1.5', VALID],
  ['ARCHIVE_FORMAT', '', ENUM],
  ['ARCHIVE_FORMAT', 'ogg', ENUM],
  ['ARCHIVE_FORMAT', 'wav', ENUM],
  ...NOT_INT.map((v): [string, string, string] => ['ARCHIVE_CONCURRENCY', v, VALID]),
  ['ARCHIVE_CONCURRENCY', '0', RANGE],
  ['ARCHIVE_CONCURRENCY', '65', RANGE],
  ['ARCHIVE_KEEP_WAV', '', VALID],
  ['ARCHIVE_KEEP_WAV', 'no', VALID],
  ...NOT_INT.map((v): [string, string, string] => ['MAX_STREAMS', v, VALID]),
  ['MAX_STREAMS', '0', RANGE],
  ['MAX_STREAMS', '100001', RANGE],
  ...NOT_INT.map((v): [string, string, string] => ['START_TIMEOUT_S', v, VALID]),
  ['START_TIMEOUT_S', '0', RANGE],
  ['START_TIMEOUT_S', '301', RANGE],
  ...NOT_INT.map((v): [string, string, string] => ['MAX_TIMESTAMP_LEAD_S', v, VALID]),
  ['MAX_TIMESTAMP_LEAD_S', '0', RANGE],
  ['MAX_TIMESTAMP_LEAD_S', '86401', RANGE],
  ['DATABASE_URL', '', VALID],
  ['DATABASE_URL', 'mysql://db:3306/x', VALID],
  ['DATABASE_URL', 'postgres://', VALID],
  ['DATABASE_URL', 'postgres://u:pw@db/x y', VALID],
  ['DATABASE_URL', 'db:5432', VALID],
  ...NOT_INT.map((v): [string, string, string] => ['RETENTION_DAYS', v, VALID]),
  ['RETENTION_DAYS', '0', RANGE],
  ['RETENTION_DAYS', '-3', RANGE],
  ['RETENTION_DAYS', '36501', RANGE],
  ['PORT', '-1', RANGE],
  ['PORT', '99999999999999999999999', RANGE],
  ['HOST', '', VALID],
  ['HOST', 'bad host', VALID],
  ['HOST', '-leading.dash', VALID],
  ['HOST', 'under_score', VALID],
  ['HOST', 'http://x', VALID],
  ['RECORDINGS_DIR', '', VALID],
  ['RECORDINGS_DIR', '   ', VALID],
  ['RECORDINGS_DIR', 'rec\nordings', VALID],
  ['REDIS_URL', '', VALID],
  ['REDIS_URL', 'http://redis:6379', VALID],
  ['REDIS_URL', 'redis://', VALID],
  ['REDIS_URL', 'localhost:6379', VALID],
  ['REDIS_URL', 'redis://a b', VALID],
  ['REDIS_URL', 'not a url', VALID],
  ['NODE_ID', '', VALID],
  ['NODE_ID', 'node 1', VALID],
  ['NODE_ID', 'node/1', VALID],
  ['NODE_ID', 'n'.repeat(65), VALID],
  ['TWILIO_ACCOUNT_SID', '', VALID],
  ['TWILIO_ACCOUNT_SID', `AC${'A'.repeat(32)}`, VALID],
  ['TWILIO_ACCOUNT_SID', `AB${'a'.repeat(32)}`, VALID],
  ['TWILIO_ACCOUNT_SID', `AC${'a'.repeat(31)}`, VALID],
  ['TWILIO_ACCOUNT_SID', `AC${'a'.repeat(33)}`, VALID],
  ['TWILIO_ACCOUNT_SID', `AC${'g'.repeat(32)}`, VALID],
  ['WEBSOCKET_TARGET_URL', '', VALID],
  ['WEBSOCKET_TARGET_URL', 'https://lb.example.com/twilio/v1', VALID],
  ['WEBSOCKET_TARGET_URL', 'wss://lb.example.com/twilio/v1?x=1', VALID],
  ['WEBSOCKET_TARGET_URL', 'wss://lb.example.com/twilio/v1?', VALID],
  ['WEBSOCKET_TARGET_URL', 'wss://lb.example.com/twilio/v1#frag', VALID],
  ['WEBSOCKET_TARGET_URL', 'wss://user:pw@lb.example.com/twilio/v1', VALID],
  ['WEBSOCKET_TARGET_URL', 'wss://user@lb.example.com/twilio/v1', VALID],
  ['WEBSOCKET_TARGET_URL', '/twilio/v1', VALID],
  ['WEBSOCKET_TARGET_URL', ' wss://lb.example.com/twilio/v1', VALID],
  ['WEBSOCKET_TARGET_URL', 'wss://lb.example.com:99999/twilio/v1', VALID],
  ['TWILIO_ENABLE_PAUSE_RESUME', '', VALID],
  ['TWILIO_ENABLE_PAUSE_RESUME', 'yes', VALID],
  ['TWILIO_ENABLE_PAUSE_RESUME', 'on', VALID],
  ['TWILIO_ENABLE_PAUSE_RESUME', '2', VALID],
  ['TWILIO_ENABLE_PAUSE_RESUME', ' true', VALID],
  ['PAUSE_BEHAVIOR', '', ENUM],
  ['PAUSE_BEHAVIOR', 'drop', ENUM],
  ...NOT_INT.map((v): [string, string, string] => ['DRAIN_TIMEOUT_S', v, VALID]),
  ['DRAIN_TIMEOUT_S', '-1', RANGE],
  ['DRAIN_TIMEOUT_S', '3601', RANGE],
  ...NOT_INT.map((v): [string, string, string] => ['STREAM_IDLE_TIMEOUT_S', v, VALID]),
  ['STREAM_IDLE_TIMEOUT_S', '0', RANGE],
  ['STREAM_IDLE_TIMEOUT_S', '3601', RANGE],
  ...NOT_INT.map((v): [string, string, string] => ['MIN_SESSION_LENGTH_S', v, VALID]),
  ['MIN_SESSION_LENGTH_S', '-1', RANGE],
  ['MIN_SESSION_LENGTH_S', '4000', RANGE],
  ...NOT_INT.map((v): [string, string, string] => ['LONG_CALL_DURATION_MIN', v, VALID]),
  ['LONG_CALL_DURATION_MIN', '0', RANGE],
  ['LONG_CALL_DURATION_MIN', '1441', RANGE],
  ...NOT_INT.map((v): [string, string, string] => ['LONG_HOLD_DURATION_MIN', v, VALID]),
  ['LONG_HOLD_DURATION_MIN', '0', RANGE],
  ['LONG_HOLD_DURATION_MIN', '3001', RANGE],
  ...NOT_INT.map((v): [string, string, string] => ['MAINTENANCE_INTERVAL_S', v, VALID]),
  ['MAINTENANCE_INTERVAL_S', '0', RANGE],
  ['MAINTENANCE_INTERVAL_S', '86401', RANGE],
  ['DEFAULT_EMPLOYEE_ID', '', VALID],
  ['DEFAULT_EMPLOYEE_ID', ' agent', VALID],
  ['DEFAULT_EMPLOYEE_ID', 'agent\u2028x', VALID],
  ['DEFAULT_EMPLOYEE_ID', 'agent\tx', VALID],
  ['DEFAULT_EMPLOYEE_ID', 'e'.repeat(129), VALID],
  ['RECORDING_FORMAT', '', ENUM],
  ['RECORDING_FORMAT', 'wav', ENUM],
  ['RECORDING_FORMAT', 'pcm', ENUM],
  ...NOT_INT.map((v): [string, string, string] => ['SEGMENT_MAX_S', v, VALID]),
  ['SEGMENT_MAX_S', '9', RANGE],
  ['SEGMENT_MAX_S', '86401', RANGE],
  ['RECORDING_WEBHOOK_URL', '', VALID],
  ['RECORDING_WEBHOOK_URL', 'ftp://hooks.example.com/x', VALID],
  ['RECORDING_WEBHOOK_URL', 'hooks.example.com/x', VALID],
  ['RECORDING_WEBHOOK_URL', 'wss://hooks.example.com/x', VALID],
  ['LOG_LEVEL', '', ENUM],
  ['LOG_LEVEL', 'verbose', ENUM],
  ['LOG_LEVEL', 'warning', ENUM],
  // secrets: the values must never be shown
  ['TWILIO_AUTH_TOKEN', '', VALID],
  ['TWILIO_AUTH_TOKEN', 'tooShortSecret1', VALID],
  ['TWILIO_AUTH_TOKEN', 'sekrit with a space inside', VALID],
  ['TWILIO_AUTH_TOKEN', `sekrit${'x'.repeat(123)}`, VALID],
  ['TWILIO_AUTH_TOKEN', 'sekritTokenWith\u00e9Accent', VALID],
  ['API_KEYS', '', VALID],
  ['API_KEYS', 'sekritTiny', VALID],
  ['API_KEYS', `${KEY_1},,${KEY_2}`, VALID],
  ['API_KEYS', `${KEY_1}, ,${KEY_2}`, VALID],
  ['API_KEYS', `${KEY_1},`, VALID],
  ['API_KEYS', `${KEY_1},sekrit with space here`, VALID],
  ['API_KEYS', `${KEY_1},${'k'.repeat(257)}`, VALID],
  ['RECORDING_WEBHOOK_SECRET', '', VALID],
  ['RECORDING_WEBHOOK_SECRET', 'sekrit-short', VALID],
  ['RECORDING_WEBHOOK_SECRET', 'sekrit-with-newline\n-in-it', VALID],
  ['RECORDING_WEBHOOK_SECRET', `sekrit${'w'.repeat(1019)}`, VALID],
];

t.test('the bad-value table covers every setting', async (t) => {
  t.same([...SECRET_SETTINGS].sort(), ['API_KEYS', 'RECORDING_WEBHOOK_SECRET', 'TWILIO_AUTH_TOKEN']);
  t.same([...new Set(BAD.map(([name]) => name))].sort(), [...SETTING_NAMES].sort());
  t.same(Object.keys(ALLOWED).sort(), [...SETTING_NAMES].sort());
});

t.test('every bad value gives a one-line ConfigError naming setting, value and allowed range', async (t) => {
  for (const [name, value, problem] of BAD) {
    const label = `${name}=${ascii(JSON.stringify(value))}`;
    const err = configError(() => loadConfig({ [name]: value }));
    t.ok(err instanceof Error, label);
    t.equal(err.name, 'ConfigError', label);
    t.equal(err.setting, name, label);
    t.equal(err.allowed, ALLOWED[name], label);
    t.notMatch(err.message, /[\r\n\u2028\u2029]/, `${label}: one line`);
    const secret = SECRET_SETTINGS.includes(name as never);
    const isUrl = name.endsWith('_URL');
    const display = isUrl ? maskUrlCredentials(value) : value;
    const shownValue = secret ? '"<redacted>"' : JSON.stringify(display).replace(/\u2028/g, '\\u2028');
    t.ok(err.message.startsWith(`${name}=${shownValue} ${problem}`), `${label}: ${err.message}`);
    t.ok(err.message.endsWith(`: expected ${ALLOWED[name]}`), `${label}: ${err.message}`);
    if (secret) {
      t.equal(err.value, '<redacted>', `${label}: value field redacted`);
      if (value !== '') {
        t.notOk(err.message.includes(value), `${label}: secret not in message`);
        t.notMatch(err.message, /sekrit|key-one|key-two/, `${label}: no part of the secret in message`);
        t.notMatch(JSON.stringify({ ...err }), /sekrit|key-one|key-two/, `${label}: no secret in error fields`);
      }
    } else {
      t.equal(err.value, display, `${label}: value field`);
      if (isUrl && value.includes('pw@')) t.notMatch(err.message, /pw@/, `${label}: URL password masked`);
    }
  }
});

t.test('message examples', async (t) => {
  t.equal(configError(() => loadConfig({ RECORDING_FORMAT: 'wav' })).message,
    'RECORDING_FORMAT="wav" is not allowed: expected one of mulaw, pcm16');
  t.equal(configError(() => loadConfig({ MIN_SESSION_LENGTH_S: '4000' })).message,
    'MIN_SESSION_LENGTH_S="4000" is out of range: expected an integer 0..3600');
  t.equal(configError(() => loadConfig({ PORT: '1.5' })).message,
    'PORT="1.5" is not valid: expected an integer 0..65535');
  t.equal(configError(() => loadConfig({ TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: 'sekrit' })).message,
    'TWILIO_AUTH_TOKEN="<redacted>" is not valid: expected 16..128 printable ASCII characters without spaces');
  t.equal(configError(() => loadConfig({ API_KEYS: `${KEY_1},,${KEY_2}` })).message,
    'API_KEYS="<redacted>" is not valid (entry 2 is empty): expected comma-separated keys, each 16..256 printable ' +
    'ASCII characters without spaces, no empty entries');
  t.equal(configError(() => loadConfig({ WEBSOCKET_TARGET_URL: 'wss://lb.example.com/twilio/v1?x=1' })).message,
    'WEBSOCKET_TARGET_URL="wss://lb.example.com/twilio/v1?x=1" is not valid (has a query string): expected a wss:// ' +
    'or ws:// URL with a host and no credentials, query string or fragment');
  t.equal(configError(() => loadConfig({ WEBSOCKET_TARGET_URL: 'https://lb.example.com/' })).message,
    'WEBSOCKET_TARGET_URL="https://lb.example.com/" is not valid (scheme https:): expected a wss:// ' +
    'or ws:// URL with a host and no credentials, query string or fragment');
  const long = configError(() => loadConfig({ NODE_ID: 'n'.repeat(500) }));
  t.ok(long.message.length < 400, 'long values are cut in the message');
  t.equal(long.value, 'n'.repeat(500), 'but kept whole in the value field');
  const bidi = configError(() => loadConfig({ NODE_ID: 'a\u202eb\u0085c' }));
  t.ok(bidi.message.startsWith('NODE_ID="a\\u202eb\\u0085c" '), bidi.message);
});

t.test('credentials inside URLs are masked in errors', async (t) => {
  const err = configError(() => loadConfig({ REDIS_URL: 'http://user:sekritpw@redis:6379' }));
  t.equal(err.message.split(' ')[0], 'REDIS_URL="http://user:<redacted>@redis:6379"');
  t.equal(err.value, 'http://user:<redacted>@redis:6379');
  const hook = configError(() => loadConfig({ RECORDING_WEBHOOK_URL: 'ftp://sekrittoken@hooks/x' }));
  t.notMatch(hook.message, /sekrit/);
  t.equal(maskUrlCredentials('https://a:b@c@host/p?q'), 'https://a:<redacted>@host/p?q');
  t.equal(maskUrlCredentials('redis://host:6379'), 'redis://host:6379');
  t.equal(maskUrlCredentials('no url at all'), 'no url at all');
});

t.test('cross-setting rules', async (t) => {
  const noSid = configError(() => loadConfig({ TWILIO_AUTH_TOKEN: 'sekrit0123456789abcdef' }));
  t.equal(noSid.setting, 'TWILIO_ACCOUNT_SID');
  t.equal(noSid.value, null);
  t.equal(noSid.message, 'TWILIO_ACCOUNT_SID is not set but TWILIO_AUTH_TOKEN is: expected AC followed by 32 ' +
    'lower-case hex digits whenever TWILIO_AUTH_TOKEN is set');
  t.notMatch(noSid.message, /sekrit/);

  const noSecret = configError(() => loadConfig({ RECORDING_WEBHOOK_URL: 'https://hooks.example.com/r' }));
  t.equal(noSecret.setting, 'RECORDING_WEBHOOK_SECRET');
  t.equal(noSecret.value, null);
  t.match(noSecret.message, /^RECORDING_WEBHOOK_SECRET is not set but RECORDING_WEBHOOK_URL is: expected .*unsigned webhooks are not allowed/);
  t.notMatch(noSecret.message, /\n/);

  const secretOnly = loadConfig({ RECORDING_WEBHOOK_SECRET: WEBHOOK_SECRET });
  t.equal(secretOnly.recordingWebhookUrl, null, 'a secret without URL is fine');
  t.equal(secretOnly.recordingWebhookSecret, WEBHOOK_SECRET);
});

t.test('redactConfig hides every secret and keeps the rest', async (t) => {
  const c = withFile({
    dataSources: [
      { TWILIO_ACCOUNT_SID: SID_B, TWILIO_AUTH_TOKEN: TOKEN_B },
      { TWILIO_ACCOUNT_SID: SID_C },
    ],
  }, {
    TWILIO_ACCOUNT_SID: SID_A,
    TWILIO_AUTH_TOKEN: TOKEN_A,
    API_KEYS: `${KEY_1},${KEY_2}`,
    RECORDING_WEBHOOK_URL: 'https://hook:hookpw@hooks.example.com/r',
    RECORDING_WEBHOOK_SECRET: WEBHOOK_SECRET,
    REDIS_URL: 'rediss://default:redispw@cache.example.com:6380/1',
    DATABASE_URL: 'postgres://gw:pgpw@db.example.com:5432/rec',
    WEBSOCKET_TARGET_URL: 'wss://lb.example.com/twilio/v1',
  });
  const before = JSON.stringify(c);
  const r = redactConfig(c);
  const text = JSON.stringify(r);
  for (const secret of [TOKEN_A, TOKEN_B, KEY_1, KEY_2, WEBHOOK_SECRET, 'hookpw', 'redispw', 'pgpw']) {
    t.notOk(text.includes(secret), `${secret} not in the redacted copy`);
    t.ok(before.includes(secret), `${secret} was in the config`);
  }
  t.same(r.apiKeys, ['<redacted>', '<redacted>']);
  t.equal(r.recordingWebhookSecret, '<redacted>');
  t.equal(r.redisUrl, 'rediss://default:<redacted>@cache.example.com:6380/1');
  t.equal(r.databaseUrl, 'postgres://gw:<redacted>@db.example.com:5432/rec');
  t.equal(r.recordingWebhookUrl, 'https://hook:<redacted>@hooks.example.com/r');
  t.equal(r.websocketTargetUrl, 'wss://lb.example.com/twilio/v1');
  t.same(r.sources.map((s) => [s.accountSid, s.authToken]),
    [[SID_A, '<redacted>'], [SID_B, '<redacted>'], [SID_C, null]], 'an unsigned source stays visibly null');
  t.same(r.defaults, c.defaults);
  t.equal(r.port, c.port);
  t.equal(JSON.stringify(c), before, 'the config itself is untouched');

  const plain = redactConfig(loadConfig({}));
  t.equal(plain.redisUrl, null);
  t.equal(plain.recordingWebhookUrl, null);
  t.equal(plain.recordingWebhookSecret, null);
  t.equal(plain.websocketTargetUrl, null);
  t.same(plain.apiKeys, []);
});

t.test('GATEWAY_CONFIG: file values, environment precedence', async (t) => {
  const file = {
    PORT: 9000,
    HOST: '127.0.0.1',
    RECORDING_FORMAT: 'pcm16',
    TWILIO_ENABLE_PAUSE_RESUME: true,
    PAUSE_BEHAVIOR: 'skip',
    DRAIN_TIMEOUT_S: '45',
    LOG_LEVEL: 'warn',
    API_KEYS: [KEY_1, ` ${KEY_2} `],
    DEFAULT_EMPLOYEE_ID: 4711,
    REDIS_URL: null,
  };
  const c = withFile(file);
  t.equal(c.port, 9000);
  t.equal(c.host, '127.0.0.1');
  t.equal(c.defaults.recordingFormat, 'pcm16');
  t.equal(c.defaults.enablePauseResume, true);
  t.equal(c.defaults.pauseBehavior, 'skip');
  t.equal(c.drainTimeoutS, 45, 'strings in the file are fine too');
  t.equal(c.logLevel, 'warn');
  t.same(c.apiKeys, [KEY_1, KEY_2], 'API_KEYS may be an array');
  t.equal(c.defaults.defaultEmployeeId, '4711', 'a number where a string is expected');
  t.equal(c.redisUrl, null, 'null = not set');
  t.equal(c.streamIdleTimeoutS, 30, 'unset in both: default');

  const e = withFile(file, { PORT: '9100', RECORDING_FORMAT: 'mulaw', TWILIO_ENABLE_PAUSE_RESUME: '0', API_KEYS: KEY_2 });
  t.equal(e.port, 9100, 'environment overrides the file');
  t.equal(e.defaults.recordingFormat, 'mulaw');
  t.equal(e.defaults.enablePauseResume, false);
  t.same(e.apiKeys, [KEY_2]);
  t.equal(e.host, '127.0.0.1', 'file value kept where the environment is silent');

  t.equal(withFile({ TWILIO_ENABLE_PAUSE_RESUME: 1, SEGMENT_MAX_S: 600 }).defaults.enablePauseResume, true);
  t.equal(withFile({ TWILIO_ENABLE_PAUSE_RESUME: 0 }).defaults.enablePauseResume, false);
  t.equal(withFile({ TWILIO_ENABLE_PAUSE_RESUME: 'TRUE' }).defaults.enablePauseResume, true);
  t.equal(withFile('\uFEFF{"PORT": 1234}').port, 1234, 'a byte-order mark is tolerated');
  t.equal(withFile({}).port, 8080, 'an empty object is a valid file');
});

t.test('GATEWAY_CONFIG: file values are validated, even when the environment overrides them', async (t) => {
  const port = fileError({ PORT: 99999 });
  t.equal(port.setting, 'PORT');
  t.equal(port.value, '99999');
  t.equal(port.message, 'GATEWAY_CONFIG PORT=99999 is out of range: expected an integer 0..65535');
  t.equal(fileError({ PORT: 99999 }, { PORT: '8000' }).setting, 'PORT');
  t.equal(fileError({ PORT: 1.5 }).message, 'GATEWAY_CONFIG PORT=1.5 is not valid: expected an integer 0..65535');
  t.equal(fileError({ PORT: true }).message, 'GATEWAY_CONFIG PORT=true is not valid: expected an integer 0..65535');
  t.equal(fileError({ TWILIO_ENABLE_PAUSE_RESUME: 2 }).message,
    'GATEWAY_CONFIG TWILIO_ENABLE_PAUSE_RESUME=2 is not valid: expected true, false, 1 or 0');
  t.equal(fileError({ RECORDING_FORMAT: ['pcm16'] }).message,
    'GATEWAY_CONFIG RECORDING_FORMAT=["pcm16"] is not allowed: expected one of mulaw, pcm16');
  t.equal(fileError({ HOST: { a: 1 } }).message,
    'GATEWAY_CONFIG HOST={"a":1} is not valid: expected an IP address or a host name');
  t.equal(fileError({ NODE_ID: 'x'.repeat(300) }).message.length < 400, true, 'long values cut');
  const longArray = fileError({ HOST: Array.from({ length: 100 }, (_, i) => `host-${i}`) });
  t.ok(longArray.message.length < 400, 'long JSON values cut');
  t.match(longArray.message, /^GATEWAY_CONFIG HOST=\["host-0","host-1",.*… is not valid: /);
  t.equal(fileError({ RECORDING_WEBHOOK_URL: 'https://h.example.com/' }).setting, 'RECORDING_WEBHOOK_SECRET');

  // eslint-disable-next-line no-loss-of-precision -- any JSON number will do: a token must be a string
  const token = fileError({ TWILIO_AUTH_TOKEN: 12345678901234567890 });
  t.equal(token.message, 'GATEWAY_CONFIG TWILIO_AUTH_TOKEN="<redacted>" is not valid: expected 16..128 printable ' +
    'ASCII characters without spaces', 'a token must be a string, and is never shown');
  t.equal(token.value, '<redacted>');
  const keys = fileError({ API_KEYS: [KEY_1, 42] });
  t.equal(keys.message, 'GATEWAY_CONFIG API_KEYS="<redacted>" is not valid (entry 2 is not a string): expected ' +
    'comma-separated keys, each 16..256 printable ASCII characters without spaces, no empty entries');
  t.match(fileError({ API_KEYS: [] }).message, /^GATEWAY_CONFIG API_KEYS="<redacted>" is not valid \(no keys\)/);
  t.match(fileError({ API_KEYS: { k: KEY_1 } }).message, /^GATEWAY_CONFIG API_KEYS="<redacted>" is not valid: /);
  t.notMatch(fileError({ API_KEYS: [KEY_1, 'sekrit-tiny'] }).message, /sekrit|key-one/);

  const tokenOnly = fileError({ TWILIO_AUTH_TOKEN: TOKEN_A });
  t.equal(tokenOnly.setting, 'TWILIO_ACCOUNT_SID');
  t.match(tokenOnly.message, /^GATEWAY_CONFIG TWILIO_ACCOUNT_SID is not set but TWILIO_AUTH_TOKEN is: /);
  t.notOk(tokenOnly.message.includes(TOKEN_A));
});

t.test('GATEWAY_CONFIG: several data sources with per-source overrides', async (t) => {
  const c = withFile({
    RECORDING_FORMAT: 'pcm16',
    MIN_SESSION_LENGTH_S: 5,
    DEFAULT_EMPLOYEE_ID: 'global-emp',
    ARCHIVE_FORMAT: 'opus',
    RETENTION_DAYS: 365,
    dataSources: [
      {
        TWILIO_ACCOUNT_SID: SID_A,
        TWILIO_AUTH_TOKEN: TOKEN_A,
        RECORDING_FORMAT: 'mulaw',
        ARCHIVE_FORMAT: 'flac',
        RETENTION_DAYS: '30',
        TWILIO_ENABLE_PAUSE_RESUME: true,
        PAUSE_BEHAVIOR: 'skip',
        MIN_SESSION_LENGTH_S: '0',
        LONG_CALL_DURATION_MIN: 240,
        LONG_HOLD_DURATION_MIN: 10,
        DEFAULT_EMPLOYEE_ID: 'emp-a',
        SEGMENT_MAX_S: 900,
      },
      { TWILIO_ACCOUNT_SID: SID_B, TWILIO_AUTH_TOKEN: TOKEN_B, SEGMENT_MAX_S: '1200', DEFAULT_EMPLOYEE_ID: null },
      { TWILIO_ACCOUNT_SID: SID_C, TWILIO_AUTH_TOKEN: null },
    ],
  }, { MIN_SESSION_LENGTH_S: '7', LONG_HOLD_DURATION_MIN: '45' });

  const globals: SourceSettings = {
    ...DEFAULT_SOURCE,
    recordingFormat: 'pcm16',
    minSessionLengthS: 7,
    longHoldDurationMin: 45,
    defaultEmployeeId: 'global-emp',
    archiveFormat: 'opus',
    retentionDays: 365,
  };
  t.same(c.defaults, globals, 'globals: file top level, overridden by the environment');
  t.same(c.sources, [
    {
      accountSid: SID_A,
      authToken: TOKEN_A,
      apiKeys: [],
      recordingFormat: 'mulaw',
      enablePauseResume: true,
      pauseBehavior: 'skip',
      minSessionLengthS: 0,
      longCallDurationMin: 240,
      longHoldDurationMin: 10,
      defaultEmployeeId: 'emp-a',
      segmentMaxS: 900,
      archiveFormat: 'flac',
      retentionDays: 30,
    },
    { accountSid: SID_B, authToken: TOKEN_B, apiKeys: [], ...globals, segmentMaxS: 1200 },
    { accountSid: SID_C, authToken: null, apiKeys: [], ...globals },
  ], 'a source value beats the global one, even one from the environment');
  t.equal(Object.keys(c.sources[0]!).sort().join(), [...Object.keys(DEFAULT_SOURCE), 'accountSid', 'authToken', 'apiKeys'].sort().join(),
    'sources carry exactly the DataSource fields');
  t.equal(SOURCE_SETTING_NAMES.length, Object.keys(DEFAULT_SOURCE).length, 'one file name per SourceSettings field');
});

t.test('GATEWAY_CONFIG: environment account adds a source or overrides its token', async (t) => {
  const file = { dataSources: [{ TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: TOKEN_A, RECORDING_FORMAT: 'pcm16' }] };

  const added = withFile(file, { TWILIO_ACCOUNT_SID: SID_B, TWILIO_AUTH_TOKEN: TOKEN_ENV, SEGMENT_MAX_S: '60' });
  t.same(added.sources.map((s) => [s.accountSid, s.authToken, s.recordingFormat, s.segmentMaxS]),
    [[SID_B, TOKEN_ENV, 'mulaw', 60], [SID_A, TOKEN_A, 'pcm16', 60]]);

  const overridden = withFile(file, { TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: TOKEN_ENV });
  t.same(overridden.sources.map((s) => [s.accountSid, s.authToken, s.recordingFormat]), [[SID_A, TOKEN_ENV, 'pcm16']],
    'same account: the token is replaced, the source keeps its settings, no duplicate');

  const sidOnly = withFile(file, { TWILIO_ACCOUNT_SID: SID_A });
  t.same(sidOnly.sources.map((s) => [s.accountSid, s.authToken]), [[SID_A, TOKEN_A]],
    'the account alone does not erase the file token');

  const unsigned = withFile(file, { TWILIO_ACCOUNT_SID: SID_C });
  t.same(unsigned.sources.map((s) => [s.accountSid, s.authToken]), [[SID_C, null], [SID_A, TOKEN_A]]);

  const topLevel = withFile({ ...file, TWILIO_ACCOUNT_SID: SID_B, TWILIO_AUTH_TOKEN: TOKEN_B });
  t.same(topLevel.sources.map((s) => [s.accountSid, s.authToken]), [[SID_B, TOKEN_B], [SID_A, TOKEN_A]],
    'the file top-level account is a source too');

  const topTokenEnv = withFile({ TWILIO_ACCOUNT_SID: SID_B, TWILIO_AUTH_TOKEN: TOKEN_B }, { TWILIO_AUTH_TOKEN: TOKEN_ENV });
  t.same(topTokenEnv.sources.map((s) => [s.accountSid, s.authToken]), [[SID_B, TOKEN_ENV]],
    'the environment token overrides the file top-level token');

  const envTokenNoSid = fileError(file, { TWILIO_AUTH_TOKEN: TOKEN_ENV });
  t.equal(envTokenNoSid.setting, 'TWILIO_ACCOUNT_SID');
  t.match(envTokenNoSid.message, /^TWILIO_ACCOUNT_SID is not set but TWILIO_AUTH_TOKEN is/);
  t.notOk(envTokenNoSid.message.includes(TOKEN_ENV));
});

t.test('GATEWAY_CONFIG: unknown keys are errors naming the key', async (t) => {
  const top = fileError({ RECORDING_FORMT: 'pcm16' });
  t.equal(top.setting, 'RECORDING_FORMT');
  t.match(top.message, /^GATEWAY_CONFIG RECORDING_FORMT is not a known setting \(did you mean RECORDING_FORMAT\?\): expected one of PORT, /);
  t.notMatch(top.message, /\n/);

  const src = fileError({
    dataSources: [{ TWILIO_ACCOUNT_SID: SID_A }, { TWILIO_ACCOUNT_SID: SID_B, RECORDING_FORMT: 'pcm16' }],
  });
  t.equal(src.setting, 'dataSources[1].RECORDING_FORMT');
  t.ok(src.message.startsWith('GATEWAY_CONFIG dataSources[1].RECORDING_FORMT is not a known setting'), src.message);
  t.match(src.message, /did you mean RECORDING_FORMAT\?/);
  t.match(src.message, /expected one of TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, RECORDING_FORMAT, /);

  const typoToken = fileError({ dataSources: [{ TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKN: 'sekrit-token-value-1234' }] });
  t.equal(typoToken.setting, 'dataSources[0].TWILIO_AUTH_TOKN');
  t.match(typoToken.message, /did you mean TWILIO_AUTH_TOKEN\?/);
  t.notMatch(typoToken.message, /sekrit/, 'the value of an unknown key is never shown');
  t.equal(typoToken.value, '<redacted>');

  const global = fileError({ dataSources: [{ TWILIO_ACCOUNT_SID: SID_A, PORT: 9000 }] });
  t.equal(global.setting, 'dataSources[0].PORT', 'a global-only setting is not allowed in a source');

  const far = fileError({ somethingElse: 1 });
  t.notMatch(far.message, /did you mean/, 'no suggestion when nothing is close');
  const odd = fileError({ 'bad\nkey': 1 });
  t.equal(odd.message.split('\n').length, 1, 'odd key names stay on one line');
  t.ok(odd.message.startsWith('GATEWAY_CONFIG "bad\\nkey" is not a known setting'), odd.message);
  t.equal(fileError({ GATEWAY_CONFIG: 'x.json' }).setting, 'GATEWAY_CONFIG', 'no nesting of config files');
});

t.test('GATEWAY_CONFIG: data source shape and values', async (t) => {
  const bad = fileError({ dataSources: [{ TWILIO_ACCOUNT_SID: SID_A }, { TWILIO_ACCOUNT_SID: SID_B, RECORDING_FORMAT: 'wav' }] });
  t.equal(bad.setting, 'dataSources[1].RECORDING_FORMAT');
  t.equal(bad.value, 'wav');
  t.equal(bad.message, 'GATEWAY_CONFIG dataSources[1].RECORDING_FORMAT="wav" is not allowed: expected one of mulaw, pcm16');

  const range = fileError({ dataSources: [{ TWILIO_ACCOUNT_SID: SID_A, LONG_HOLD_DURATION_MIN: 3001 }] });
  t.equal(range.message, 'GATEWAY_CONFIG dataSources[0].LONG_HOLD_DURATION_MIN=3001 is out of range: expected an integer 1..3000');

  const token = fileError({ dataSources: [{ TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: 'sekrit short' }] });
  t.equal(token.setting, 'dataSources[0].TWILIO_AUTH_TOKEN');
  t.equal(token.message, 'GATEWAY_CONFIG dataSources[0].TWILIO_AUTH_TOKEN="<redacted>" is not valid: expected 16..128 ' +
    'printable ASCII characters without spaces');

  const sid = fileError({ dataSources: [{ TWILIO_ACCOUNT_SID: SID_A.toUpperCase().replace(/^AC/, 'AC') }] });
  t.equal(sid.setting, 'dataSources[0].TWILIO_ACCOUNT_SID');
  t.match(sid.message, /^GATEWAY_CONFIG dataSources\[0\]\.TWILIO_ACCOUNT_SID="AC[A]{32}" is not valid: expected AC followed by 32 lower-case hex digits$/);

  const noSid = fileError({ dataSources: [{ TWILIO_AUTH_TOKEN: TOKEN_A }] });
  t.equal(noSid.setting, 'dataSources[0].TWILIO_ACCOUNT_SID');
  t.equal(noSid.value, null);
  t.match(noSid.message, /^GATEWAY_CONFIG dataSources\[0\]\.TWILIO_ACCOUNT_SID is not set: expected AC followed by/);
  t.notOk(noSid.message.includes(TOKEN_A));

  const notArray = fileError({ dataSources: { TWILIO_ACCOUNT_SID: SID_A } });
  t.equal(notArray.setting, 'dataSources');
  t.equal(notArray.message, 'GATEWAY_CONFIG dataSources is not valid: expected an array of objects');

  const notObject = fileError({ dataSources: [{ TWILIO_ACCOUNT_SID: SID_A }, 'sekrit-string'] });
  t.equal(notObject.setting, 'dataSources[1]');
  t.equal(notObject.message, 'GATEWAY_CONFIG dataSources[1] is not valid: expected an object');
  t.equal(notObject.value, '<redacted>');

  t.same(withFile({ dataSources: [] }).sources, [], 'an empty list is fine');
  t.same(withFile({ dataSources: null }).sources, [], 'null = not set');
});

t.test('GATEWAY_CONFIG: duplicate accounts', async (t) => {
  const dup = fileError({
    dataSources: [
      { TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: TOKEN_A },
      { TWILIO_ACCOUNT_SID: SID_B },
      { TWILIO_ACCOUNT_SID: SID_A, TWILIO_AUTH_TOKEN: TOKEN_B },
    ],
  });
  t.equal(dup.setting, 'dataSources[2].TWILIO_ACCOUNT_SID');
  t.equal(dup.value, SID_A);
  t.equal(dup.message, `GATEWAY_CONFIG dataSources[2].TWILIO_ACCOUNT_SID="${SID_A}" is a duplicate of dataSources[0]: ` +
    'expected each account in one data source only');
  t.notOk(dup.message.includes(TOKEN_A) || dup.message.includes(TOKEN_B));

  const topDup = fileError({ TWILIO_ACCOUNT_SID: SID_B, dataSources: [{ TWILIO_ACCOUNT_SID: SID_A }, { TWILIO_ACCOUNT_SID: SID_B }] });
  t.equal(topDup.setting, 'TWILIO_ACCOUNT_SID');
  t.match(topDup.message, /^GATEWAY_CONFIG TWILIO_ACCOUNT_SID="AC0123.*" is a duplicate of dataSources\[1\]: expected each account in one data source only$/);
});

t.test('GATEWAY_CONFIG: unreadable file, bad JSON, wrong shape', async (t) => {
  const missingFile = configError(() => loadConfig({ GATEWAY_CONFIG: '/nope.json' }, files({})));
  t.equal(missingFile.setting, 'GATEWAY_CONFIG');
  t.equal(missingFile.value, '/nope.json');
  t.equal(missingFile.message, 'GATEWAY_CONFIG="/nope.json" cannot be read (ENOENT): expected a readable JSON file');

  const noCode = configError(() => loadConfig({ GATEWAY_CONFIG: '/x.json' }, () => { throw new Error('boom'); }));
  t.equal(noCode.message, 'GATEWAY_CONFIG="/x.json" cannot be read: expected a readable JSON file');

  const realFs = configError(() => loadConfig({ GATEWAY_CONFIG: path.join(os.tmpdir(), 'does-not-exist-gw.json') }));
  t.match(realFs.message, /^GATEWAY_CONFIG=".*does-not-exist-gw\.json" cannot be read \(ENOENT\): /);

  const empty = configError(() => loadConfig({ GATEWAY_CONFIG: '' }, files({})));
  t.equal(empty.message, 'GATEWAY_CONFIG="" is not valid: expected a path to a JSON file');

  const leaky = '{\n  "TWILIO_ACCOUNT_SID": "' + SID_A + '",\n  "TWILIO_AUTH_TOKEN": sekrit0123456789abcdef\n}';
  const badJson = fileError(leaky);
  t.equal(badJson.setting, 'GATEWAY_CONFIG');
  t.match(badJson.message, /^GATEWAY_CONFIG="\/etc\/gw\.json" is not valid JSON.*: expected a JSON object$/);
  t.notMatch(badJson.message, /sekrit/, 'the parser message quoting the file is not passed on');
  t.notMatch(badJson.message, /\n/);

  const positioned = fileError('{\n  "PORT": 1,\n  }');
  t.equal(positioned.message, 'GATEWAY_CONFIG="/etc/gw.json" is not valid JSON at line 3 column 3: expected a JSON object');
  t.equal(fileError('').message, 'GATEWAY_CONFIG="/etc/gw.json" is not valid JSON: expected a JSON object');

  for (const notObject of ['[]', '"PORT"', 'null', '42']) {
    const e = fileError(notObject);
    t.equal(e.message, 'GATEWAY_CONFIG="/etc/gw.json" is not valid: expected a JSON object at the top level', notObject);
  }
});

t.test('GATEWAY_CONFIG: the default readFile reads the real file', async (t) => {
  const dir = t.testdir({
    'gw.json': JSON.stringify({ PORT: 7000, dataSources: [{ TWILIO_ACCOUNT_SID: SID_A, RECORDING_FORMAT: 'pcm16' }] }),
  });
  const c = loadConfig({ GATEWAY_CONFIG: path.join(dir, 'gw.json') });
  t.equal(c.port, 7000);
  t.same(c.sources.map((s) => [s.accountSid, s.authToken, s.recordingFormat]), [[SID_A, null, 'pcm16']]);
  t.ok(fs.existsSync(path.join(dir, 'gw.json')));
});

t.test('GATEWAY_CONFIG: per-source apiKeys (contract section 7)', async (t) => {
  const c = withFile({
    API_KEYS: KEY_1,
    dataSources: [
      { TWILIO_ACCOUNT_SID: SID_A, apiKeys: ['source-a-key-0123456789'] },
      { TWILIO_ACCOUNT_SID: SID_B, apiKeys: 'source-b-key-0123456789,source-b-key2-0123456789' },
      { TWILIO_ACCOUNT_SID: SID_C },
    ],
  });
  t.same(c.apiKeys, [KEY_1]);
  t.same(c.sources.map((s) => s.apiKeys), [['source-a-key-0123456789'], ['source-b-key-0123456789', 'source-b-key2-0123456789'], []]);
  t.notMatch(JSON.stringify(redactConfig(c)), /source-a-key/, 'per-source keys are redacted like API_KEYS');

  const twice = fileError({ dataSources: [
    { TWILIO_ACCOUNT_SID: SID_A, apiKeys: ['shared-key-0123456789'] },
    { TWILIO_ACCOUNT_SID: SID_B, apiKeys: ['shared-key-0123456789'] },
  ] });
  t.equal(twice.setting, 'dataSources[1].apiKeys', 'a key in two sources names the second');
  t.match(twice.message, /repeats a key of dataSources\[0\]\.apiKeys/);
  t.notMatch(twice.message, /shared-key/, 'the key itself is never shown');

  const both = fileError({ API_KEYS: KEY_2, dataSources: [{ TWILIO_ACCOUNT_SID: SID_A, apiKeys: [KEY_2] }] });
  t.equal(both.setting, 'dataSources[0].apiKeys');
  t.match(both.message, /repeats a key of API_KEYS/);
  const bothEnv = fileError({ dataSources: [{ TWILIO_ACCOUNT_SID: SID_A, apiKeys: [KEY_2] }] }, { API_KEYS: KEY_2 });
  t.equal(bothEnv.setting, 'dataSources[0].apiKeys', 'also when API_KEYS comes from the environment');

  const short = fileError({ dataSources: [{ TWILIO_ACCOUNT_SID: SID_A, apiKeys: ['short'] }] });
  t.equal(short.setting, 'dataSources[0].apiKeys', 'the same rules as API_KEYS, named by the source');
  t.match(short.message, /shorter than 16/);
});
