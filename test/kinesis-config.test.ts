// KINESIS_* settings (contract section 9): environment for the top-level account, `kinesis`
// objects in GATEWAY_CONFIG per data source; one-line errors naming the setting; no secrets shown.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { ConfigError, loadConfig, redactConfig } from '../gateway/config.js';
import { NO_CHILD_COVERAGE } from './fixtures/gateway-process.js';

const A = 'AC0123456789abcdef0123456789abcdef';
const B = 'ACfedcba9876543210fedcba9876543210';

function err(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    return e as ConfigError;
  }
  throw new Error('no error');
}
const file = (obj: unknown) => (_: string) => JSON.stringify(obj);

t.test('environment settings go with the top-level account', async (t) => {
  const c = loadConfig({
    TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'arn:aws:kinesis:ap-south-1:123456789012:stream/twilio-events',
    KINESIS_ACCESS_KEY_ID: 'AKID', KINESIS_SECRET_ACCESS_KEY: 'sekrit-key', KINESIS_ROLE_ARN: 'arn:aws:iam::123456789012:role/rec',
    KINESIS_EXTERNAL_ID: 'ext-sekrit', KINESIS_START: 'trim_horizon',
  });
  t.match(c.sources[0]!.kinesis, {
    stream: 'arn:aws:kinesis:ap-south-1:123456789012:stream/twilio-events', streamName: 'twilio-events', region: 'ap-south-1',
    endpoint: null, accessKeyId: 'AKID', secretAccessKey: 'sekrit-key', roleArn: 'arn:aws:iam::123456789012:role/rec',
    externalId: 'ext-sekrit', roleSessionName: null, start: 'TRIM_HORIZON',
  });
  const shown = JSON.stringify(redactConfig(c));
  t.notMatch(shown, /sekrit/, 'secret key and external id redacted');
  t.match(shown, /"secretAccessKey":"<redacted>"/);
  t.equal(loadConfig({ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'twilio-events', AWS_REGION: 'eu-west-1' }).sources[0]!.kinesis?.region, 'eu-west-1', 'AWS_REGION as the fallback');
  t.equal(loadConfig({ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'twilio-events', KINESIS_REGION: 'ap-south-1' }).sources[0]!.kinesis?.start, 'LATEST', 'LATEST by default');
  t.equal(loadConfig({ TWILIO_ACCOUNT_SID: A }).sources[0]!.kinesis, undefined, 'no stream: no kinesis');
});

t.test('per data source in GATEWAY_CONFIG, environment over the file for the top-level account', async (t) => {
  const c = loadConfig({ GATEWAY_CONFIG: 'f.json', TWILIO_ACCOUNT_SID: A, KINESIS_START: 'TRIM_HORIZON' }, file({
    dataSources: [
      { TWILIO_ACCOUNT_SID: A, kinesis: { KINESIS_STREAM: 'events-a', KINESIS_REGION: 'us-east-1' } },
      { TWILIO_ACCOUNT_SID: B, kinesis: { KINESIS_STREAM: 'events-b', KINESIS_REGION: 'eu-central-1', KINESIS_ENDPOINT: 'https://kinesis.example.com' } },
    ],
  }));
  t.match(c.sources.find((s) => s.accountSid === A)?.kinesis, { streamName: 'events-a', region: 'us-east-1', start: 'TRIM_HORIZON' });
  t.match(c.sources.find((s) => s.accountSid === B)?.kinesis, { streamName: 'events-b', region: 'eu-central-1', endpoint: 'https://kinesis.example.com', start: 'LATEST' });
});

t.test('bad settings: one line naming the setting, no secret shown', async (t) => {
  const cases: [Record<string, string>, string, RegExp][] = [
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: '' }, 'KINESIS_STREAM', /^KINESIS_STREAM="" is not valid: expected a stream name/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'x'.repeat(1025) }, 'KINESIS_STREAM', /is not valid/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'has space', KINESIS_REGION: 'us-east-1' }, 'KINESIS_STREAM', /is not valid/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'events' }, 'KINESIS_REGION', /^KINESIS_REGION is not set and KINESIS_STREAM is not an ARN/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'events', KINESIS_REGION: 'Mumbai' }, 'KINESIS_REGION', /is not valid: expected a region code/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'arn:aws:kinesis:us-east-1:123456789012:stream/e', KINESIS_REGION: 'eu-west-1' }, 'KINESIS_REGION', /does not match the stream ARN/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'events', AWS_REGION: 'nowhere' }, 'AWS_REGION', /^AWS_REGION="nowhere" is not valid/],
    [{ KINESIS_STREAM: 'events', KINESIS_REGION: 'us-east-1' }, 'TWILIO_ACCOUNT_SID', /^TWILIO_ACCOUNT_SID is not set but KINESIS_STREAM is/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_REGION: 'us-east-1' }, 'KINESIS_STREAM', /^KINESIS_STREAM is not set but KINESIS_REGION is/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'e', KINESIS_REGION: 'us-east-1', KINESIS_SECRET_ACCESS_KEY: 'sekrit' }, 'KINESIS_ACCESS_KEY_ID', /is not set but KINESIS_SECRET_ACCESS_KEY is/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'e', KINESIS_REGION: 'us-east-1', KINESIS_ACCESS_KEY_ID: 'AKID' }, 'KINESIS_SECRET_ACCESS_KEY', /is not set but KINESIS_ACCESS_KEY_ID is/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'e', KINESIS_REGION: 'us-east-1', KINESIS_EXTERNAL_ID: 'sekrit-ext' }, 'KINESIS_ROLE_ARN', /is not set but KINESIS_EXTERNAL_ID is/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'e', KINESIS_REGION: 'us-east-1', KINESIS_SECRET_ACCESS_KEY: 'sekrit key', KINESIS_ACCESS_KEY_ID: 'A' }, 'KINESIS_SECRET_ACCESS_KEY', /^KINESIS_SECRET_ACCESS_KEY="<redacted>" is not valid/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'e', KINESIS_REGION: 'us-east-1', KINESIS_ROLE_ARN: 'arn:aws:iam::1:user/x' }, 'KINESIS_ROLE_ARN', /is not valid/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'e', KINESIS_REGION: 'us-east-1', KINESIS_ENDPOINT: 'ftp://x' }, 'KINESIS_ENDPOINT', /is not valid/],
    [{ TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'e', KINESIS_REGION: 'us-east-1', KINESIS_START: 'NOW' }, 'KINESIS_START', /expected LATEST or TRIM_HORIZON/],
  ];
  for (const [env, setting, message] of cases) {
    const e = err(() => loadConfig(env));
    t.equal(e.name, 'ConfigError', setting);
    t.equal(e.setting, setting);
    t.match(e.message, message);
    t.notMatch(e.message, /[\r\n]|sekrit/, `${setting}: one line, no secret`);
  }
  const unknown = err(() => loadConfig({ GATEWAY_CONFIG: 'f' }, file({ dataSources: [{ TWILIO_ACCOUNT_SID: A, kinesis: { KINESIS_STREAM: 'e', KINESIS_SECRET: 'sekrit' } }] })));
  t.equal(unknown.setting, 'dataSources[0].kinesis.KINESIS_SECRET');
  t.notMatch(unknown.message, /sekrit/);
  const inFile = err(() => loadConfig({ GATEWAY_CONFIG: 'f' }, file({ dataSources: [{ TWILIO_ACCOUNT_SID: B, kinesis: { KINESIS_STREAM: 'e' } }] })));
  t.equal(inFile.setting, 'dataSources[0].kinesis.KINESIS_REGION');
});

t.test('the process exits 78 with one line naming the setting', async (t) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'gateway/main.ts'], {
    env: { PATH: process.env.PATH, ...NO_CHILD_COVERAGE, TWILIO_ACCOUNT_SID: A, KINESIS_STREAM: 'events', KINESIS_REGION: 'us-east-1', KINESIS_START: 'yesterday' },
    encoding: 'utf8', timeout: 30_000,
  });
  t.equal(r.status, 78);
  t.equal(r.stderr.trim().split('\n').length, 1);
  t.match(r.stderr, /^config error: KINESIS_START="yesterday" is not valid/);
});
