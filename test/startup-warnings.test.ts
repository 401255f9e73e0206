// Issue 9.10b/d: settings that are valid but leave a door open are said once at start, by the
// process, started with node directly as containers start it.
import t, { type Test } from 'tap';
import { startProcess, tempDir } from './fixtures/gateway-process.js';

// three gateway processes, started one after the other: more than tap's default 30 s on a busy machine
t.setTimeout(120_000);

const ACCOUNT = `AC${'ab'.repeat(16)}`;
const TOKEN = 'a-twilio-auth-token-for-tests';
const KEY = 'an-api-key-long-enough-1234';

async function warningsOf(t: Test, env: Record<string, string>): Promise<string[]> {
  const dir = await tempDir(t);
  const p = await startProcess(t, dir, { RECORDINGS_DIR: dir, ...env });
  // the warnings are written before "gateway listening", which startProcess waited for
  const lines = p.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string });
  p.child.kill('SIGTERM');
  await p.exited;
  return lines.filter((l) => l.level === 40).map((l) => l.msg);
}

const hostWarning = /API_KEYS is not set: \/v1\/\* answers loopback clients only.*relay on this machine.*would expose/;
const targetWarning = /TWILIO_AUTH_TOKEN is set but WEBSOCKET_TARGET_URL is not.*any Host is accepted/;

t.test('signed without WEBSOCKET_TARGET_URL: one warning that any Host is accepted', async (t) => {
  const w = await warningsOf(t, { TWILIO_ACCOUNT_SID: ACCOUNT, TWILIO_AUTH_TOKEN: TOKEN, HOST: '127.0.0.1' });
  t.equal(w.filter((m) => targetWarning.test(m)).length, 1, 'said once');
  t.notOk(w.some((m) => hostWarning.test(m)), 'loopback HOST: no API exposure warning');
  t.notOk(w.some((m) => /unsigned streams/.test(m)));
  t.notOk(w.some((m) => m.includes(TOKEN)), 'the token is never logged');
});

t.test('no API_KEYS on a non-loopback HOST: one warning that the API is loopback-only and a local relay would expose it', async (t) => {
  const w = await warningsOf(t, { HOST: '0.0.0.0' });
  t.equal(w.filter((m) => hostWarning.test(m)).length, 1, 'said once');
  t.ok(w.some((m) => m.includes('HOST 0.0.0.0')), 'names the HOST');
  t.equal(w.filter((m) => /unsigned streams are accepted/.test(m)).length, 1, 'the unsigned-streams warning stays');
});

t.test('signed with WEBSOCKET_TARGET_URL and API_KEYS on 0.0.0.0: neither warning', async (t) => {
  const w = await warningsOf(t, {
    TWILIO_ACCOUNT_SID: ACCOUNT, TWILIO_AUTH_TOKEN: TOKEN, WEBSOCKET_TARGET_URL: 'wss://recorder.example.com/twilio/v1',
    API_KEYS: KEY, HOST: '0.0.0.0',
  });
  t.same(w, [], 'no warning at all');
});
