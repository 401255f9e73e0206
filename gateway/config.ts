// Builds the typed GatewayConfig from the environment and the optional GATEWAY_CONFIG JSON file.
// Nothing else in the gateway reads process.env. Any invalid value throws a ConfigError whose
// message is one line naming the setting, the value and what is allowed (main exits with 78).
//
// Settings, defaults and ranges (contract section 1; ranges marked * are ours, the contract is
// silent about them):
//
// | setting                    | default        | allowed                                                      |
// |----------------------------|----------------|--------------------------------------------------------------|
// | PORT                       | 8080           | integer 0..65535 * (0 = ephemeral port)                      |
// | HOST                       | 0.0.0.0        | IP address or host name *                                    |
// | RECORDINGS_DIR             | ./recordings   | non-empty path *, resolved to an absolute path               |
// | REDIS_URL                  | unset          | redis:// or rediss:// URL with a host *                      |
// | NODE_ID                    | host name      | /^[A-Za-z0-9._-]{1,64}$/ * (default: host name, sanitised)   |
// | TWILIO_ACCOUNT_SID         | unset          | /^AC[0-9a-f]{32}$/                                           |
// | TWILIO_AUTH_TOKEN          | unset          | 16..128 printable ASCII chars, no spaces * (secret)          |
// | WEBSOCKET_TARGET_URL       | unset          | ws:// or wss:// URL, host, no credentials/query/fragment *   |
// | TWILIO_ENABLE_PAUSE_RESUME | false          | true/false (any case), 1/0 *                                 |
// | PAUSE_BEHAVIOR             | silence        | silence, skip                                                |
// | DRAIN_TIMEOUT_S            | 30             | integer 0..3600 *                                            |
// | STREAM_IDLE_TIMEOUT_S      | 30             | integer 1..3600 *                                            |
// | MIN_SESSION_LENGTH_S       | 0              | integer 0..3600                                              |
// | LONG_CALL_DURATION_MIN     | 120            | integer 1..1440                                              |
// | LONG_HOLD_DURATION_MIN     | 30             | integer 1..3000                                              |
// | MAINTENANCE_INTERVAL_S     | 300            | integer 1..86400 *                                           |
// | DEFAULT_EMPLOYEE_ID        | unset          | 1..128 chars, no control chars, no surrounding spaces *      |
// | RECORDING_FORMAT           | mulaw          | mulaw, pcm16                                                 |
// | SEGMENT_MAX_S              | 3600           | integer 10..86400 *                                          |
// | API_KEYS                   | unset          | comma-separated, trimmed, no empty entries, each 16..256     |
// |                            |                | printable ASCII chars without spaces * (secret)              |
// | RECORDING_WEBHOOK_URL      | unset          | http:// or https:// URL with a host *; needs the secret      |
// | RECORDING_WEBHOOK_SECRET   | unset          | 16..1024 chars, no control chars * (secret)                  |
// | LOG_LEVEL                  | info           | fatal, error, warn, info, debug, trace, silent               |
// | WRITE_QUEUE_MAX_KB         | 4096           | integer 16..1048576 * (audio per stream waiting for the disk) |
// | ARCHIVE_FORMAT             | none           | none, opus, flac, mp3 (also per data source)                 |
// | ARCHIVE_CONCURRENCY        | 1              | integer 1..64 * (ffmpeg processes archiving at once)         |
// | ARCHIVE_KEEP_WAV           | true           | true/false, 1/0                                              |
// | KINESIS_*                  | unset          | see kinesis/kinesis-config.ts; env = the top-level account, |
// |                            |                | file: `kinesis` object at the top or in a data source       |
// | MAX_STREAMS                | 2000           | integer 1..100000 (WebSockets, started or not)               |
// | START_TIMEOUT_S            | 10             | integer 1..300                                               |
// | MAX_TIMESTAMP_LEAD_S       | 60             | integer 1..86400                                             |
// | DATABASE_URL               | unset          | postgres:// or postgresql:// URL with a host (catalog in PG) |
// | RETENTION_DAYS             | unset          | integer 1..36500 * (also per data source; unset keeps all)   |
//
// Rules common to every setting:
// - An environment variable that is set is a value, even when empty: "" is validated like any
//   other value (an empty PORT or TWILIO_AUTH_TOKEN is an error, not "unset").
// - Integers are decimal digits only (optional leading "-", which is then out of range): "1.5",
//   "", "12abc", " 12" and "  " are rejected. Enum values are case-insensitive.
// - In the GATEWAY_CONFIG file, JSON numbers and booleans are accepted as well as strings; null
//   means "not set here". API_KEYS may also be a JSON array of strings.
// - Secrets (TWILIO_AUTH_TOKEN, API_KEYS, RECORDING_WEBHOOK_SECRET) are shown as "<redacted>";
//   credentials inside URLs (REDIS_URL, RECORDING_WEBHOOK_URL) are masked as well.
//
// GATEWAY_CONFIG file: top-level keys are the names above, plus "dataSources": an array of
// objects with TWILIO_ACCOUNT_SID (required), TWILIO_AUTH_TOKEN (optional; absent = unsigned) and
// any of the per-source settings (SOURCE_SETTING_NAMES). Precedence: environment > file top
// level > default; a source's own value > the global value. The top-level account (environment
// or file TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN, resolved key by key with that precedence) adds
// a source, or, when dataSources already has that account, overrides its token.
// Every value present is validated, including file values that the environment overrides.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Encoding } from '../recorder/sidecar.js';
import type { DataSource, GatewayConfig } from './config-types.js';
import type { PauseBehavior, SourceSettings } from '../recorder/source-settings.js';
import { ARCHIVE_FORMATS, type ArchiveFormatSetting } from '../recorder/archive/formats.js';
import {
  parseKinesisLayer, parseKinesisObject, redactKinesis, resolveKinesis, type Fail, type KinesisLayer,
} from './kinesis/kinesis-config.js';
import { isObject } from './untyped.js';

export const REDACTED = '<redacted>';

export class ConfigError extends Error {
  /** e.g. `PORT`, `dataSources[1].RECORDING_FORMAT`, `GATEWAY_CONFIG` */
  readonly setting: string;
  /** the offending value as text ("<redacted>" for secrets), null when the setting is missing */
  readonly value: string | null;
  /** what would have been accepted, e.g. `an integer 0..3600` */
  readonly allowed: string;

  constructor(setting: string, value: string | null, allowed: string, message: string) {
    super(message);
    this.name = 'ConfigError';
    this.setting = setting;
    this.value = value;
    this.allowed = allowed;
  }
}

type LogLevel = GatewayConfig['logLevel'];
const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const ENCODINGS: readonly Encoding[] = ['mulaw', 'pcm16'];
const PAUSE_BEHAVIORS: readonly PauseBehavior[] = ['silence', 'skip'];
const ARCHIVE_FORMAT_SETTINGS: readonly ArchiveFormatSetting[] = ['none', ...ARCHIVE_FORMATS];

const ACCOUNT_SID_PATTERN = /^AC[0-9a-f]{32}$/;
const NODE_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const HOSTNAME_PATTERN =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
const PRINTABLE_NO_SPACE = /^[\x21-\x7e]+$/;
// C0/C1 controls, DEL, line/paragraph separators
// eslint-disable-next-line no-control-regex -- finding control characters is this pattern's job
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

// ---------------------------------------------------------------------------------------------
// Parsers: raw value (env string, or any JSON value from the file) -> typed value or a problem.

type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string; detail?: string };

interface Spec<T> {
  allowed: string;
  secret?: boolean;
  /** mask credentials inside a URL when showing the value */
  url?: boolean;
  parse(raw: unknown): Parsed<T>;
}

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const invalid = <T>(detail?: string): Parsed<T> =>
  detail === undefined ? { ok: false, problem: 'is not valid' } : { ok: false, problem: 'is not valid', detail };

function intSpec(min: number, max: number): Spec<number> {
  return {
    allowed: `an integer ${min}..${max}`,
    parse(raw) {
      let n: number;
      if (typeof raw === 'number') {
        if (!Number.isInteger(raw)) return invalid();
        n = raw;
      } else if (typeof raw === 'string' && /^-?[0-9]+$/.test(raw)) {
        n = Number(raw);
      } else {
        return invalid();
      }
      if (n < min || n > max) return { ok: false, problem: 'is out of range' };
      return ok(n);
    },
  };
}

const boolSpec: Spec<boolean> = {
  allowed: 'true, false, 1 or 0',
  parse(raw) {
    if (typeof raw === 'boolean') return ok(raw);
    if (raw === 1 || raw === 0) return ok(raw === 1);
    if (typeof raw === 'string') {
      const s = raw.toLowerCase();
      if (s === 'true' || s === '1') return ok(true);
      if (s === 'false' || s === '0') return ok(false);
    }
    return invalid();
  },
};

function enumSpec<T extends string>(values: readonly T[]): Spec<T> {
  return {
    allowed: `one of ${values.join(', ')}`,
    parse(raw) {
      if (typeof raw === 'string') {
        const s = raw.toLowerCase();
        const hit = values.find((v) => v === s);
        if (hit !== undefined) return ok(hit);
      }
      return { ok: false, problem: 'is not allowed' };
    },
  };
}

/** A string setting; JSON numbers from the file are taken as their decimal text. */
function stringSpec(
  allowed: string, check: (s: string) => Parsed<string>, opts: { secret?: boolean; url?: boolean } = {},
): Spec<string> {
  return {
    allowed,
    ...opts,
    parse(raw) {
      if (typeof raw === 'number' && Number.isFinite(raw) && !opts.secret) return check(String(raw));
      if (typeof raw !== 'string') return invalid();
      return check(raw);
    },
  };
}

function urlCheck(protocols: readonly string[], opts: { bare?: boolean } = {}) {
  return (s: string): Parsed<string> => {
    if (s === '' || /\s/.test(s) || CONTROL_CHARS.test(s)) return invalid();
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      return invalid();
    }
    if (!protocols.includes(u.protocol)) return invalid(`scheme ${u.protocol}`);
    if (u.hostname === '') return invalid('no host');
    if (opts.bare) {
      if (u.username !== '' || u.password !== '') return invalid('has credentials');
      if (s.includes('?')) return invalid('has a query string');
      if (s.includes('#')) return invalid('has a fragment');
    }
    return ok(s);
  };
}

function apiKeysParse(raw: unknown): Parsed<string[]> {
  let entries: unknown[];
  if (typeof raw === 'string') entries = raw.split(',');
  else if (Array.isArray(raw)) entries = raw;
  else return invalid();
  if (entries.length === 0) return invalid('no keys');
  const keys: string[] = [];
  for (const [i, entry] of entries.entries()) {
    if (typeof entry !== 'string') return invalid(`entry ${i + 1} is not a string`);
    const key = entry.trim();
    if (key === '') return invalid(`entry ${i + 1} is empty`);
    if (!PRINTABLE_NO_SPACE.test(key)) return invalid(`entry ${i + 1} has spaces or non-printable characters`);
    if (key.length < 16) return invalid(`entry ${i + 1} is shorter than 16 characters`);
    if (key.length > 256) return invalid(`entry ${i + 1} is longer than 256 characters`);
    if (!keys.includes(key)) keys.push(key);
  }
  return ok(keys);
}

/** Parsed values of every top-level setting, by its environment name. */
interface Values {
  PORT: number;
  HOST: string;
  RECORDINGS_DIR: string;
  REDIS_URL: string;
  NODE_ID: string;
  TWILIO_ACCOUNT_SID: string;
  TWILIO_AUTH_TOKEN: string;
  WEBSOCKET_TARGET_URL: string;
  TWILIO_ENABLE_PAUSE_RESUME: boolean;
  PAUSE_BEHAVIOR: PauseBehavior;
  DRAIN_TIMEOUT_S: number;
  STREAM_IDLE_TIMEOUT_S: number;
  MIN_SESSION_LENGTH_S: number;
  LONG_CALL_DURATION_MIN: number;
  LONG_HOLD_DURATION_MIN: number;
  MAINTENANCE_INTERVAL_S: number;
  DEFAULT_EMPLOYEE_ID: string;
  RECORDING_FORMAT: Encoding;
  SEGMENT_MAX_S: number;
  API_KEYS: string[];
  RECORDING_WEBHOOK_URL: string;
  RECORDING_WEBHOOK_SECRET: string;
  LOG_LEVEL: LogLevel;
  WRITE_QUEUE_MAX_KB: number;
  ARCHIVE_FORMAT: ArchiveFormatSetting;
  ARCHIVE_CONCURRENCY: number;
  ARCHIVE_KEEP_WAV: boolean;
  MAX_STREAMS: number;
  START_TIMEOUT_S: number;
  MAX_TIMESTAMP_LEAD_S: number;
  DATABASE_URL: string;
  RETENTION_DAYS: number;
}
export type SettingName = keyof Values;

const SPECS: { [K in SettingName]: Spec<Values[K]> } = {
  PORT: intSpec(0, 65535),
  HOST: stringSpec('an IP address or a host name', (s) =>
    net.isIP(s) !== 0 || HOSTNAME_PATTERN.test(s) ? ok(s) : invalid()),
  RECORDINGS_DIR: stringSpec('a non-empty directory path', (s) =>
    s.trim() !== '' && !s.includes('\0') && !CONTROL_CHARS.test(s) ? ok(s) : invalid()),
  REDIS_URL: stringSpec('a redis:// or rediss:// URL with a host', urlCheck(['redis:', 'rediss:']), { url: true }),
  NODE_ID: stringSpec('1..64 characters from A-Z a-z 0-9 . _ -', (s) =>
    NODE_ID_PATTERN.test(s) ? ok(s) : invalid()),
  TWILIO_ACCOUNT_SID: stringSpec('AC followed by 32 lower-case hex digits', (s) =>
    ACCOUNT_SID_PATTERN.test(s) ? ok(s) : invalid()),
  TWILIO_AUTH_TOKEN: stringSpec('16..128 printable ASCII characters without spaces', (s) =>
    s.length >= 16 && s.length <= 128 && PRINTABLE_NO_SPACE.test(s) ? ok(s) : invalid(), { secret: true }),
  WEBSOCKET_TARGET_URL: stringSpec(
    'a wss:// or ws:// URL with a host and no credentials, query string or fragment',
    urlCheck(['wss:', 'ws:'], { bare: true }), { url: true }),
  TWILIO_ENABLE_PAUSE_RESUME: boolSpec,
  PAUSE_BEHAVIOR: enumSpec(PAUSE_BEHAVIORS),
  DRAIN_TIMEOUT_S: intSpec(0, 3600),
  STREAM_IDLE_TIMEOUT_S: intSpec(1, 3600),
  MIN_SESSION_LENGTH_S: intSpec(0, 3600),
  LONG_CALL_DURATION_MIN: intSpec(1, 1440),
  LONG_HOLD_DURATION_MIN: intSpec(1, 3000),
  MAINTENANCE_INTERVAL_S: intSpec(1, 86400),
  DEFAULT_EMPLOYEE_ID: stringSpec('1..128 characters without control characters or surrounding spaces', (s) =>
    s.length >= 1 && s.length <= 128 && s.trim() === s && !CONTROL_CHARS.test(s) ? ok(s) : invalid()),
  RECORDING_FORMAT: enumSpec(ENCODINGS),
  SEGMENT_MAX_S: intSpec(10, 86400),
  WRITE_QUEUE_MAX_KB: intSpec(16, 1048576),
  ARCHIVE_FORMAT: enumSpec(ARCHIVE_FORMAT_SETTINGS),
  ARCHIVE_CONCURRENCY: intSpec(1, 64),
  ARCHIVE_KEEP_WAV: boolSpec,
  MAX_STREAMS: intSpec(1, 100000),
  START_TIMEOUT_S: intSpec(1, 300),
  MAX_TIMESTAMP_LEAD_S: intSpec(1, 86400),
  DATABASE_URL: stringSpec('a postgres:// or postgresql:// URL with a host', urlCheck(['postgres:', 'postgresql:']), { url: true }),
  RETENTION_DAYS: intSpec(1, 36500),
  API_KEYS: {
    allowed: 'comma-separated keys, each 16..256 printable ASCII characters without spaces, no empty entries',
    secret: true,
    parse: apiKeysParse,
  },
  RECORDING_WEBHOOK_URL: stringSpec('an http:// or https:// URL with a host', urlCheck(['http:', 'https:']), { url: true }),
  RECORDING_WEBHOOK_SECRET: stringSpec('16..1024 characters without control characters', (s) =>
    s.length >= 16 && s.length <= 1024 && !CONTROL_CHARS.test(s) ? ok(s) : invalid(), { secret: true }),
  LOG_LEVEL: enumSpec(LOG_LEVELS),
};

export const SETTING_NAMES = Object.keys(SPECS) as SettingName[];
export const SECRET_SETTINGS: readonly SettingName[] = SETTING_NAMES.filter((n) => SPECS[n].secret === true);

/** Per-source settings: environment / file name -> SourceSettings field. */
const SOURCE_FIELDS = {
  RECORDING_FORMAT: 'recordingFormat',
  TWILIO_ENABLE_PAUSE_RESUME: 'enablePauseResume',
  PAUSE_BEHAVIOR: 'pauseBehavior',
  MIN_SESSION_LENGTH_S: 'minSessionLengthS',
  LONG_CALL_DURATION_MIN: 'longCallDurationMin',
  LONG_HOLD_DURATION_MIN: 'longHoldDurationMin',
  DEFAULT_EMPLOYEE_ID: 'defaultEmployeeId',
  SEGMENT_MAX_S: 'segmentMaxS',
  ARCHIVE_FORMAT: 'archiveFormat',
  RETENTION_DAYS: 'retentionDays',
} as const satisfies Partial<Record<SettingName, keyof SourceSettings>>;
type SourceSettingName = keyof typeof SOURCE_FIELDS;
export const SOURCE_SETTING_NAMES = Object.keys(SOURCE_FIELDS) as SourceSettingName[];
const SOURCE_KEYS: readonly string[] = ['TWILIO_ACCOUNT_SID', 'TWILIO_AUTH_TOKEN', ...SOURCE_SETTING_NAMES, 'kinesis', 'apiKeys'];
const FILE_TOP_KEYS: readonly string[] = [...SETTING_NAMES, 'dataSources', 'kinesis'];

// ---------------------------------------------------------------------------------------------
// Showing values in one line, without secrets.

const MAX_SHOWN = 200;

/** Quote a value for a one-line message: JSON escaping plus the separators JSON leaves alone. */
function oneLine(text: string): string {
  return text.replace(/[\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function quote(s: string): string {
  const cut = s.length > MAX_SHOWN ? `${s.slice(0, MAX_SHOWN)}…` : s;
  return oneLine(JSON.stringify(cut));
}

/** user:password@ in a URL -> user:<redacted>@ (a user part alone is masked entirely). */
export function maskUrlCredentials(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)/i.exec(url);
  if (!m) return url;
  const [prefix, scheme, authority] = m as unknown as [string, string, string];
  const at = authority.lastIndexOf('@');
  if (at < 0) return url;
  const userinfo = authority.slice(0, at);
  const colon = userinfo.indexOf(':');
  const masked = colon < 0 ? REDACTED : `${userinfo.slice(0, colon + 1)}${REDACTED}`;
  return `${scheme}${masked}${authority.slice(at)}${url.slice(prefix.length)}`;
}

interface ShowAs {
  secret?: boolean;
  url?: boolean;
}

/** The value as ConfigError.value carries it. */
function valueText(raw: unknown, spec: ShowAs): string {
  if (spec.secret) return REDACTED;
  if (typeof raw === 'string') return spec.url ? maskUrlCredentials(raw) : raw;
  // everything else came out of JSON.parse, so it serialises again
  return JSON.stringify(raw);
}

/** The value as the message shows it: strings quoted, JSON numbers/booleans bare. */
function shown(raw: unknown, spec: ShowAs): string {
  if (spec.secret) return `"${REDACTED}"`;
  if (typeof raw === 'string') return quote(spec.url ? maskUrlCredentials(raw) : raw);
  const text = JSON.stringify(raw);
  return oneLine(text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}…` : text);
}

/** Setting names and file keys come from the file too: show odd ones quoted. */
function keyText(key: string): string {
  return /^[A-Za-z0-9_]{1,100}$/.test(key) ? key : quote(key);
}

// ---------------------------------------------------------------------------------------------
// Where a value came from, for messages.

interface Where {
  /** "" for the environment, "GATEWAY_CONFIG " for the file */
  prefix: string;
  /** setting name as ConfigError.setting: `PORT`, `dataSources[1].PORT` */
  path: (name: string) => string;
}

const ENV: Where = { prefix: '', path: (n) => n };
const FILE_TOP: Where = { prefix: 'GATEWAY_CONFIG ', path: (n) => n };
const fileSource = (i: number): Where => ({ prefix: 'GATEWAY_CONFIG ', path: (n) => `dataSources[${i}].${n}` });

function parseSetting<K extends SettingName>(name: K, raw: unknown, where: Where): Values[K] {
  const spec = SPECS[name] as Spec<Values[K]>;
  const r = spec.parse(raw);
  if (r.ok) return r.value;
  const setting = where.path(name);
  const detail = r.detail !== undefined ? ` (${r.detail})` : '';
  throw new ConfigError(setting, valueText(raw, spec), spec.allowed,
    `${where.prefix}${setting}=${shown(raw, spec)} ${r.problem}${detail}: expected ${spec.allowed}`);
}

function missing(setting: string, where: Where, why: string, allowed: string): ConfigError {
  return new ConfigError(setting, null, allowed, `${where.prefix}${setting} ${why}: expected ${allowed}`);
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!; // row has b.length + 1 entries: every index below is in range
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length]!;
}

function unknownKey(setting: string, key: string, known: readonly string[]): ConfigError {
  const upper = key.toUpperCase();
  const best = known
    .map((k) => ({ k, d: editDistance(upper, k.toUpperCase()) }))
    .sort((x, y) => x.d - y.d)[0];
  const hint = best !== undefined && best.d <= 3 ? ` (did you mean ${best.k}?)` : '';
  const allowed = `one of ${known.join(', ')}`;
  // The value of an unknown key is never shown: it may be a mistyped secret.
  return new ConfigError(setting, REDACTED, allowed,
    `GATEWAY_CONFIG ${setting} is not a known setting${hint}: expected ${allowed}`);
}

// ---------------------------------------------------------------------------------------------
// The file.

interface FileSource {
  index: number;
  accountSid: string;
  authToken: string | null;
  apiKeys: string[];
  settings: Partial<SourceSettings>;
  kinesis: KinesisLayer | null;
}

interface FileConfig {
  top: Partial<Values>;
  sources: FileSource[];
  /** the top-level `kinesis` object (for the top-level account) */
  kinesis?: KinesisLayer | null;
}


/** Parse a layer of values (environment or file top level). null/undefined = not set here. */
function parseLayer(raw: Record<string, unknown>, where: Where): Partial<Values> {
  const out: Partial<Values> = {};
  for (const name of SETTING_NAMES) {
    const v = raw[name];
    if (v === undefined || (where !== ENV && v === null)) continue;
    assign(out, name, parseSetting(name, v, where));
  }
  return out;
}

function assign<K extends SettingName>(out: Partial<Values>, name: K, value: Values[K]): void {
  out[name] = value;
}

function sourceSettings(values: Partial<Values>): Partial<SourceSettings> {
  const out: Partial<SourceSettings> = {};
  for (const name of SOURCE_SETTING_NAMES) {
    const v = values[name];
    if (v !== undefined) (out as Record<string, unknown>)[SOURCE_FIELDS[name]] = v;
  }
  return out;
}

function jsonErrorPosition(message: string, text: string): string {
  const pos = /position (\d+)/.exec(message);
  if (!pos) return '';
  const before = text.slice(0, Number(pos[1]));
  const line = before.split('\n').length;
  const column = before.length - before.lastIndexOf('\n');
  return ` at line ${line} column ${column}`;
}

function readConfigFile(file: string, readFile: (path: string) => string): FileConfig {
  const fileValue = quote(file);
  if (file === '' || file.includes('\0')) {
    throw new ConfigError('GATEWAY_CONFIG', file, 'a path to a JSON file',
      `GATEWAY_CONFIG=${fileValue} is not valid: expected a path to a JSON file`);
  }
  let text: string;
  try {
    text = readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException | null)?.code;
    const why = typeof code === 'string' ? ` (${oneLine(code)})` : '';
    throw new ConfigError('GATEWAY_CONFIG', file, 'a readable JSON file',
      `GATEWAY_CONFIG=${fileValue} cannot be read${why}: expected a readable JSON file`);
  }
  let json: unknown;
  const body = text.replace(/^\uFEFF/, '');
  try {
    json = JSON.parse(body);
  } catch (err) {
    // V8's message quotes the file's text, which may hold a token: only the position is kept.
    const at = jsonErrorPosition((err as Error).message, body);
    throw new ConfigError('GATEWAY_CONFIG', file, 'a JSON object',
      `GATEWAY_CONFIG=${fileValue} is not valid JSON${at}: expected a JSON object`);
  }
  if (!isObject(json)) {
    throw new ConfigError('GATEWAY_CONFIG', file, 'a JSON object',
      `GATEWAY_CONFIG=${fileValue} is not valid: expected a JSON object at the top level`);
  }
  for (const key of Object.keys(json)) {
    if (!FILE_TOP_KEYS.includes(key)) throw unknownKey(keyText(key), key, FILE_TOP_KEYS);
  }
  const top = parseLayer(json, FILE_TOP);

  const sources: FileSource[] = [];
  const list = json.dataSources;
  if (list !== undefined && list !== null) {
    if (!Array.isArray(list)) {
      throw new ConfigError('dataSources', valueText(list, {}), 'an array of objects',
        'GATEWAY_CONFIG dataSources is not valid: expected an array of objects');
    }
    list.forEach((entry: unknown, i) => {
      const where = fileSource(i);
      if (!isObject(entry)) {
        throw new ConfigError(`dataSources[${i}]`, valueText(entry, { secret: true }), 'an object',
          `GATEWAY_CONFIG dataSources[${i}] is not valid: expected an object`);
      }
      for (const key of Object.keys(entry)) {
        if (!SOURCE_KEYS.includes(key)) throw unknownKey(`dataSources[${i}].${keyText(key)}`, key, SOURCE_KEYS);
      }
      const sidRaw = entry.TWILIO_ACCOUNT_SID;
      if (sidRaw === undefined || sidRaw === null) {
        throw missing(where.path('TWILIO_ACCOUNT_SID'), where, 'is not set',
          `${SPECS.TWILIO_ACCOUNT_SID.allowed} for each data source`);
      }
      const accountSid = parseSetting('TWILIO_ACCOUNT_SID', sidRaw, where);
      const tokenRaw = entry.TWILIO_AUTH_TOKEN;
      const authToken = tokenRaw === undefined || tokenRaw === null
        ? null : parseSetting('TWILIO_AUTH_TOKEN', tokenRaw, where);
      // keys that see and control only this source's calls and recordings (contract section 7)
      const apiKeys = entry.apiKeys === undefined || entry.apiKeys === null
        ? [] : parseSetting('API_KEYS', entry.apiKeys, { ...where, path: () => where.path('apiKeys') });
      const own: Partial<Values> = {};
      for (const name of SOURCE_SETTING_NAMES) {
        const v = entry[name];
        if (v !== undefined && v !== null) assign(own, name, parseSetting(name, v, where));
      }
      const dup = sources.find((s) => s.accountSid === accountSid);
      if (dup) {
        const setting = where.path('TWILIO_ACCOUNT_SID');
        throw new ConfigError(setting, accountSid, 'each account in one data source only',
          `GATEWAY_CONFIG ${setting}=${quote(accountSid)} is a duplicate of dataSources[${dup.index}]: ` +
          'expected each account in one data source only');
      }
      const kinesis = parseKinesisObject(entry.kinesis, kinesisWhere(`dataSources[${i}].kinesis`), `dataSources[${i}].kinesis`, kinesisFail);
      for (const key of apiKeys) {
        const other = sources.find((s) => s.apiKeys.includes(key));
        if (other) {
          const setting = where.path('apiKeys');
          throw new ConfigError(setting, REDACTED, 'each key in one data source only',
            `GATEWAY_CONFIG ${setting} repeats a key of dataSources[${other.index}].apiKeys: ` +
            'expected each key in one data source only (a key sees the calls of exactly one account)');
        }
      }
      sources.push({ index: i, accountSid, authToken, apiKeys, settings: sourceSettings(own), kinesis });
    });
  }
  if (top.TWILIO_ACCOUNT_SID !== undefined) {
    const dup = sources.find((s) => s.accountSid === top.TWILIO_ACCOUNT_SID);
    if (dup) {
      throw new ConfigError('TWILIO_ACCOUNT_SID', top.TWILIO_ACCOUNT_SID, 'each account in one data source only',
        `GATEWAY_CONFIG TWILIO_ACCOUNT_SID=${quote(top.TWILIO_ACCOUNT_SID)} is a duplicate of ` +
        `dataSources[${dup.index}]: expected each account in one data source only`);
    }
  }
  return { top, sources, kinesis: parseKinesisObject(json.kinesis, kinesisWhere('kinesis'), 'kinesis', kinesisFail) };
}

// Kinesis (contract section 9): settings per source, validated in kinesis/kinesis-config.ts.
const kinesisFail: Fail = (setting, value, allowed, message) => {
  throw new ConfigError(setting, value, allowed, message);
};
const kinesisWhere = (obj: string | null) => (obj === null
  ? { prefix: '', path: (n: string) => n }
  : { prefix: 'GATEWAY_CONFIG ', path: (n: string) => `${obj}.${n}` });

/** KINESIS_* of the environment (over the file's top-level `kinesis`) go with the top-level account. */
function attachKinesis(env: NodeJS.ProcessEnv, file: FileConfig, sources: DataSource[], topSid: string | undefined): void {
  const top: KinesisLayer = { ...file.kinesis, ...parseKinesisLayer(env, kinesisWhere(null), kinesisFail, false) };
  const topSet = Object.keys(top)[0];
  if (topSet !== undefined && topSid === undefined) {
    throw missing('TWILIO_ACCOUNT_SID', ENV, `is not set but ${topSet} is`,
      `${SPECS.TWILIO_ACCOUNT_SID.allowed} whenever a Kinesis stream is configured (its events apply to that account only)`);
  }
  for (const f of file.sources) {
    if (f.accountSid === topSid || f.kinesis === null) continue;
    const k = resolveKinesis(f.kinesis, kinesisWhere(`dataSources[${f.index}].kinesis`), env.AWS_REGION, kinesisFail);
    const src = sources.find((s) => s.accountSid === f.accountSid);
    if (k && src) src.kinesis = k;
  }
  if (topSid === undefined) return;
  const own = file.sources.find((s) => s.accountSid === topSid)?.kinesis ?? {};
  const k = resolveKinesis({ ...own, ...top }, kinesisWhere(null), env.AWS_REGION, kinesisFail);
  const src = sources.find((s) => s.accountSid === topSid);
  if (k && src) src.kinesis = k;
}

// ---------------------------------------------------------------------------------------------

/** os.hostname() made into a valid NODE_ID (the default must never fail validation). */
function defaultNodeId(): string {
  const id = os.hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
  return id === '' ? 'gateway' : id;
}

const DEFAULT_SOURCE_SETTINGS: SourceSettings = {
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

export function loadConfig(
  env: NodeJS.ProcessEnv,
  readFile: (path: string) => string = (p) => fs.readFileSync(p, 'utf8'),
): GatewayConfig {
  const fromEnv = parseLayer(env, ENV);
  const configFile = env.GATEWAY_CONFIG;
  const file: FileConfig = configFile === undefined ? { top: {}, sources: [] } : readConfigFile(configFile, readFile);
  // environment > file top level (> default, applied below)
  const v: Partial<Values> = { ...file.top, ...fromEnv };
  const orNull = <T>(x: T | undefined): T | null => (x === undefined ? null : x);

  const defaults: SourceSettings = {
    ...DEFAULT_SOURCE_SETTINGS,
    ...sourceSettings(v),
  };

  // The top-level account, resolved key by key (environment > file).
  const sid = v.TWILIO_ACCOUNT_SID;
  const token = v.TWILIO_AUTH_TOKEN;
  if (token !== undefined && sid === undefined) {
    const tokenFromFile = fromEnv.TWILIO_AUTH_TOKEN === undefined;
    throw missing('TWILIO_ACCOUNT_SID', tokenFromFile ? FILE_TOP : ENV,
      'is not set but TWILIO_AUTH_TOKEN is', `${SPECS.TWILIO_ACCOUNT_SID.allowed} whenever TWILIO_AUTH_TOKEN is set`);
  }
  const sources: DataSource[] = file.sources.map((s) => ({
    accountSid: s.accountSid,
    authToken: s.authToken,
    apiKeys: s.apiKeys,
    ...defaults,
    ...s.settings,
  }));
  if (sid !== undefined) {
    const existing = sources.find((s) => s.accountSid === sid);
    if (existing) {
      if (token !== undefined) existing.authToken = token;
    } else {
      sources.unshift({ accountSid: sid, authToken: orNull(token), apiKeys: [], ...defaults });
    }
  }
  const globalKeys = v.API_KEYS ?? [];
  for (const s of file.sources) {
    if (s.apiKeys.some((k) => globalKeys.includes(k))) {
      const setting = `dataSources[${s.index}].apiKeys`;
      throw new ConfigError(setting, REDACTED, 'keys not also in API_KEYS',
        `GATEWAY_CONFIG ${setting} repeats a key of API_KEYS: expected each key either global (API_KEYS, sees everything) ` +
        'or in one data source (sees only that account), not both');
    }
  }

  attachKinesis(env, file, sources, sid);

  const webhookUrl = orNull(v.RECORDING_WEBHOOK_URL);
  const webhookSecret = orNull(v.RECORDING_WEBHOOK_SECRET);
  if (webhookUrl !== null && webhookSecret === null) {
    throw missing('RECORDING_WEBHOOK_SECRET', ENV, 'is not set but RECORDING_WEBHOOK_URL is',
      `${SPECS.RECORDING_WEBHOOK_SECRET.allowed} (unsigned webhooks are not allowed)`);
  }

  return {
    port: v.PORT ?? 8080,
    host: v.HOST ?? '0.0.0.0',
    recordingsDir: path.resolve(v.RECORDINGS_DIR ?? './recordings'),
    redisUrl: orNull(v.REDIS_URL),
    nodeId: v.NODE_ID ?? defaultNodeId(),
    websocketTargetUrl: orNull(v.WEBSOCKET_TARGET_URL),
    drainTimeoutS: v.DRAIN_TIMEOUT_S ?? 30,
    streamIdleTimeoutS: v.STREAM_IDLE_TIMEOUT_S ?? 30,
    maintenanceIntervalS: v.MAINTENANCE_INTERVAL_S ?? 300,
    apiKeys: globalKeys,
    recordingWebhookUrl: webhookUrl,
    recordingWebhookSecret: webhookSecret,
    logLevel: v.LOG_LEVEL ?? 'info',
    writeQueueMaxBytes: (v.WRITE_QUEUE_MAX_KB ?? 4096) * 1024,
    archiveConcurrency: v.ARCHIVE_CONCURRENCY ?? 1,
    archiveKeepWav: v.ARCHIVE_KEEP_WAV ?? true,
    maxStreams: v.MAX_STREAMS ?? 2000,
    startTimeoutS: v.START_TIMEOUT_S ?? 10,
    maxTimestampLeadS: v.MAX_TIMESTAMP_LEAD_S ?? 60,
    databaseUrl: orNull(v.DATABASE_URL),
    defaults,
    sources,
  };
}

/** GatewayConfig with every secret replaced by "<redacted>": safe to log, never to use. */
export type RedactedConfig = GatewayConfig;

export function redactConfig(c: GatewayConfig): RedactedConfig {
  return {
    ...c,
    redisUrl: c.redisUrl === null ? null : maskUrlCredentials(c.redisUrl),
    databaseUrl: c.databaseUrl === null ? null : maskUrlCredentials(c.databaseUrl),
    websocketTargetUrl: c.websocketTargetUrl === null ? null : maskUrlCredentials(c.websocketTargetUrl),
    apiKeys: c.apiKeys.map(() => REDACTED),
    recordingWebhookUrl: c.recordingWebhookUrl === null ? null : maskUrlCredentials(c.recordingWebhookUrl),
    recordingWebhookSecret: c.recordingWebhookSecret === null ? null : REDACTED,
    defaults: { ...c.defaults },
    // null stays null: "this source takes unsigned streams" is worth seeing in the log
    sources: c.sources.map((s) => ({
      ...s, authToken: s.authToken === null ? null : REDACTED, apiKeys: s.apiKeys.map(() => REDACTED),
      ...(s.kinesis ? { kinesis: redactKinesis(s.kinesis) } : {}),
    })),
  };
}

/** Exit code of a bad setting (EX_CONFIG of sysexits.h). */
export const EX_CONFIG = 78;

/** For a process's entry point: the settings, or one line on stderr naming the bad one and exit 78. */
export function loadConfigOrExit(env: NodeJS.ProcessEnv): GatewayConfig {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`config error: ${err.message}\n`);
      process.exit(EX_CONFIG);
    }
    throw err;
  }
}
