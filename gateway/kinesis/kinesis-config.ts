// Kinesis settings of a data source (contract section 9): validated here, attached to the source
// by config.ts. Pure: raw values in, typed settings out, or a one-line error through `fail`
// (config.ts turns it into a ConfigError, exit 78).
//
// | setting                    | allowed                                                              |
// |----------------------------|----------------------------------------------------------------------|
// | KINESIS_STREAM             | stream name (1..128 of A-Z a-z 0-9 _ . -) or a Kinesis stream ARN, ≤ 1024 |
// | KINESIS_REGION             | region code (us-east-1, or a custom one such as ap-south-1); default: |
// |                            | the ARN's region, else AWS_REGION                                     |
// | KINESIS_ENDPOINT           | http(s) URL with a host, no credentials/query/fragment                |
// | KINESIS_ACCESS_KEY_ID      | 1..1024 printable ASCII, no spaces; needs the secret (and vice versa)  |
// | KINESIS_SECRET_ACCESS_KEY  | 1..1024 printable ASCII, no spaces (secret)                            |
// | KINESIS_ROLE_ARN           | arn:<partition>:iam::<12 digits>:role/<path and name>, ≤ 1024          |
// | KINESIS_EXTERNAL_ID        | 2..1024 of A-Z a-z 0-9 + = , . @ : / _ - (secret); needs the role       |
// | KINESIS_ROLE_SESSION_NAME  | 2..64 of A-Z a-z 0-9 + = , . @ _ -; needs the role; default generated  |
// | KINESIS_START              | LATEST or TRIM_HORIZON (any case); default LATEST                     |

export const KINESIS_SETTING_NAMES = [
  'KINESIS_STREAM', 'KINESIS_REGION', 'KINESIS_ENDPOINT', 'KINESIS_ACCESS_KEY_ID', 'KINESIS_SECRET_ACCESS_KEY',
  'KINESIS_ROLE_ARN', 'KINESIS_EXTERNAL_ID', 'KINESIS_ROLE_SESSION_NAME', 'KINESIS_START',
] as const;
export type KinesisSettingName = (typeof KINESIS_SETTING_NAMES)[number];
export const KINESIS_SECRET_SETTINGS: readonly KinesisSettingName[] = ['KINESIS_SECRET_ACCESS_KEY', 'KINESIS_EXTERNAL_ID'];

export type KinesisStart = 'LATEST' | 'TRIM_HORIZON';

export interface KinesisSettings {
  /** as configured: a name or an ARN */
  stream: string;
  /** the name (the ARN's last part) */
  streamName: string;
  region: string;
  endpoint: string | null;
  accessKeyId: string | null;
  secretAccessKey: string | null;
  roleArn: string | null;
  externalId: string | null;
  /** null: generated at start (gateway-<nodeId>) */
  roleSessionName: string | null;
  start: KinesisStart;
}

/** Raises the ConfigError: `value` null when missing, "<redacted>" for secrets. */
export type Fail = (setting: string, value: string | null, allowed: string, message: string) => never;

const REDACTED = '<redacted>';
const STREAM_NAME = /^[A-Za-z0-9_.-]{1,128}$/;
const STREAM_ARN = /^arn:(aws[a-z-]*):kinesis:([a-z0-9-]+):(\d{12}):stream\/([A-Za-z0-9_.-]{1,128})$/;
const REGION = /^[a-z]{2,}(-[a-z0-9]+){1,4}$/;
const PRINTABLE_NO_SPACE = /^[\x21-\x7e]{1,1024}$/;
const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;
const EXTERNAL_ID = /^[\w+=,.@:/-]{2,1024}$/;
const SESSION_NAME = /^[\w+=,.@-]{2,64}$/;

interface Spec {
  allowed: string;
  secret?: boolean;
  check(s: string): boolean;
}

const SPECS: Record<KinesisSettingName, Spec> = {
  KINESIS_STREAM: {
    allowed: 'a stream name (1..128 characters from A-Z a-z 0-9 _ . -) or a Kinesis stream ARN (arn:aws:kinesis:<region>:<account>:stream/<name>), at most 1024 characters',
    check: (s) => s.length <= 1024 && (STREAM_NAME.test(s) || STREAM_ARN.test(s)),
  },
  KINESIS_REGION: { allowed: 'a region code such as us-east-1 or ap-south-1', check: (s) => s.length <= 64 && REGION.test(s) },
  KINESIS_ENDPOINT: {
    allowed: 'an http:// or https:// URL with a host and no credentials, query string or fragment',
    check: (s) => {
      if (/\s/.test(s) || s.includes('?') || s.includes('#')) return false;
      try {
        const u = new URL(s);
        return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '' && u.username === '' && u.password === '';
      } catch {
        return false;
      }
    },
  },
  KINESIS_ACCESS_KEY_ID: { allowed: '1..1024 printable ASCII characters without spaces', check: (s) => PRINTABLE_NO_SPACE.test(s) },
  KINESIS_SECRET_ACCESS_KEY: { allowed: '1..1024 printable ASCII characters without spaces', secret: true, check: (s) => PRINTABLE_NO_SPACE.test(s) },
  KINESIS_ROLE_ARN: {
    allowed: 'an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>), at most 1024 characters',
    check: (s) => s.length <= 1024 && ROLE_ARN.test(s),
  },
  KINESIS_EXTERNAL_ID: { allowed: '2..1024 characters from A-Z a-z 0-9 + = , . @ : / _ -', secret: true, check: (s) => EXTERNAL_ID.test(s) },
  KINESIS_ROLE_SESSION_NAME: { allowed: '2..64 characters from A-Z a-z 0-9 + = , . @ _ -', check: (s) => SESSION_NAME.test(s) },
  KINESIS_START: { allowed: 'LATEST or TRIM_HORIZON', check: (s) => /^(latest|trim_horizon)$/i.test(s) },
};

/** Where a layer of values came from, for messages: "" (environment) or "GATEWAY_CONFIG ". */
export interface KinesisWhere {
  prefix: string;
  path: (name: string) => string;
}

export type KinesisLayer = Partial<Record<KinesisSettingName, string>>;

function shown(raw: unknown, secret: boolean): string {
  if (secret) return `"${REDACTED}"`;
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- JSON.stringify gives undefined for undefined/functions despite its type
  const text = typeof raw === 'string' ? raw : JSON.stringify(raw) ?? String(raw);
  const cut = text.length > 200 ? `${text.slice(0, 200)}…` : text;
  return JSON.stringify(cut).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Validate every value present in `raw` (env or a file object). null/undefined = not set here. */
export function parseKinesisLayer(raw: Record<string, unknown>, where: KinesisWhere, fail: Fail, fromFile: boolean): KinesisLayer {
  const out: KinesisLayer = {};
  for (const name of KINESIS_SETTING_NAMES) {
    const v = raw[name];
    if (v === undefined || (fromFile && v === null)) continue;
    const spec = SPECS[name];
    if (typeof v !== 'string' || !spec.check(v)) {
      const setting = where.path(name);
      fail(setting, spec.secret ? REDACTED : typeof v === 'string' ? v : JSON.stringify(v), spec.allowed,
        `${where.prefix}${setting}=${shown(v, spec.secret === true)} is not valid: expected ${spec.allowed}`);
    }
    out[name] = name === 'KINESIS_START' ? v.toUpperCase() : v;
  }
  return out;
}

/** A `kinesis` object in GATEWAY_CONFIG: only the names above. */
export function parseKinesisObject(raw: unknown, where: KinesisWhere, objectPath: string, fail: Fail): KinesisLayer | null {
  if (raw === undefined || raw === null) return null;
  const allowed = `an object with ${KINESIS_SETTING_NAMES.join(', ')}`;
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    fail(objectPath, REDACTED, allowed, `GATEWAY_CONFIG ${objectPath} is not valid: expected ${allowed}`);
  }
  for (const key of Object.keys(raw)) {
    if (!(KINESIS_SETTING_NAMES as readonly string[]).includes(key)) {
      const k = /^[A-Za-z0-9_]{1,100}$/.test(key) ? key : JSON.stringify(key.slice(0, 100));
      // the value of an unknown key is never shown: it may be a mistyped secret
      fail(`${objectPath}.${k}`, REDACTED, `one of ${KINESIS_SETTING_NAMES.join(', ')}`,
        `GATEWAY_CONFIG ${objectPath}.${k} is not a known setting: expected one of ${KINESIS_SETTING_NAMES.join(', ')}`);
    }
  }
  return parseKinesisLayer(raw as Record<string, unknown>, where, fail, true);
}

/**
 * The settings of one source from its merged layer; null when none is set. `awsRegion` is the
 * process's AWS_REGION, the last fallback for the region (validated here, where it is used).
 */
export function resolveKinesis(layer: KinesisLayer, where: KinesisWhere, awsRegion: string | undefined, fail: Fail): KinesisSettings | null {
  const set = KINESIS_SETTING_NAMES.filter((n) => layer[n] !== undefined);
  if (set.length === 0) return null;
  const stream = layer.KINESIS_STREAM;
  if (stream === undefined) {
    fail(where.path('KINESIS_STREAM'), null, SPECS.KINESIS_STREAM.allowed,
      `${where.prefix}${where.path('KINESIS_STREAM')} is not set but ${set[0]} is: expected ${SPECS.KINESIS_STREAM.allowed}`);
  }
  const arn = STREAM_ARN.exec(stream);
  const arnRegion = arn?.[2];
  let region = layer.KINESIS_REGION;
  if (region !== undefined && arnRegion !== undefined && region !== arnRegion) {
    const allowed = `the region of KINESIS_STREAM's ARN (${arnRegion}) or unset`;
    fail(where.path('KINESIS_REGION'), region, allowed,
      `${where.prefix}${where.path('KINESIS_REGION')}=${shown(region, false)} does not match the stream ARN: expected ${allowed}`);
  }
  if (region === undefined) region = arnRegion;
  if (region === undefined && awsRegion !== undefined) {
    if (!SPECS.KINESIS_REGION.check(awsRegion)) {
      fail('AWS_REGION', awsRegion, SPECS.KINESIS_REGION.allowed,
        `AWS_REGION=${shown(awsRegion, false)} is not valid: expected ${SPECS.KINESIS_REGION.allowed}`);
    }
    region = awsRegion;
  }
  if (region === undefined) {
    const allowed = `${SPECS.KINESIS_REGION.allowed} (or a stream ARN, or AWS_REGION)`;
    fail(where.path('KINESIS_REGION'), null, allowed,
      `${where.prefix}${where.path('KINESIS_REGION')} is not set and KINESIS_STREAM is not an ARN: expected ${allowed}`);
  }
  // a key without its secret (or the reverse), an external id or session name without a role:
  // each would silently fall back to other credentials
  const needs: [KinesisSettingName, KinesisSettingName][] = [
    ['KINESIS_SECRET_ACCESS_KEY', 'KINESIS_ACCESS_KEY_ID'], ['KINESIS_ACCESS_KEY_ID', 'KINESIS_SECRET_ACCESS_KEY'],
    ['KINESIS_EXTERNAL_ID', 'KINESIS_ROLE_ARN'], ['KINESIS_ROLE_SESSION_NAME', 'KINESIS_ROLE_ARN'],
  ];
  for (const [given, needed] of needs) {
    if (layer[given] !== undefined && layer[needed] === undefined) {
      fail(where.path(needed), null, SPECS[needed].allowed,
        `${where.prefix}${where.path(needed)} is not set but ${given} is: expected ${SPECS[needed].allowed}`);
    }
  }
  return {
    stream,
    streamName: arn?.[4] ?? stream,
    region,
    endpoint: layer.KINESIS_ENDPOINT ?? null,
    accessKeyId: layer.KINESIS_ACCESS_KEY_ID ?? null,
    secretAccessKey: layer.KINESIS_SECRET_ACCESS_KEY ?? null,
    roleArn: layer.KINESIS_ROLE_ARN ?? null,
    externalId: layer.KINESIS_EXTERNAL_ID ?? null,
    roleSessionName: layer.KINESIS_ROLE_SESSION_NAME ?? null,
    start: (layer.KINESIS_START as KinesisStart | undefined) ?? 'LATEST',
  };
}

/** Safe to log: secrets replaced. */
export function redactKinesis(k: KinesisSettings): KinesisSettings {
  return {
    ...k,
    secretAccessKey: k.secretAccessKey === null ? null : REDACTED,
    externalId: k.externalId === null ? null : REDACTED,
  };
}
