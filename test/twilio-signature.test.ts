import crypto from 'node:crypto';
import t from 'tap';
import twilio from 'twilio';
import {
  candidateUrls, computeTwilioSignature, derivePublicUrl, matchTwilioSignature, type SignatureParams,
} from '../gateway/twilio/twilio-signature.js';

/** Deterministic PRNG (mulberry32) so a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const rand = rng(0x7e1e);
const int = (n: number): number => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
const hex = (n: number): string => Array.from({ length: n }, () => '0123456789abcdef'[int(16)]).join('');

const PIECES = ['a', 'Z', '0', '-', '_', '.', '~', ' ', '%20', '+', '&', '=', 'é', 'ü', '中文', '😀', "'", '"', 'ß', 'İ'];
const text = (max: number): string => Array.from({ length: int(max + 1) }, () => pick(PIECES)).join('');

function randomToken(): string {
  return rand() < 0.7 ? hex(32) : Array.from({ length: 16 + int(40) }, () => String.fromCharCode(33 + int(94))).join('');
}

function randomUrl(): string {
  const scheme = pick(['wss', 'https', 'ws', 'http']);
  const host = pick(['lb.example.com', 'gw-1.example.org', '127.0.0.1', 'abc123.ngrok-free.app', '[::1]']);
  const port = pick(['', '', ':443', ':80', ':8443']);
  const segments = Array.from({ length: int(4) }, () => encodeURIComponent(text(6)));
  const trailing = rand() < 0.3 ? '/' : '';
  const query = rand() < 0.3 ? `?${encodeURIComponent(text(4))}=${encodeURIComponent(text(4))}&x=1` : '';
  return `${scheme}://${host}${port}/${segments.join('/')}${trailing}${query}`;
}

function randomParams(): SignatureParams {
  const params: SignatureParams = {};
  const keys = ['CallSid', 'AccountSid', 'From', 'To', 'Caller', 'Digits', 'Ä', 'a', 'A', 'aa', 'B', 'événement', '名前', 'x-y'];
  for (let i = int(8); i > 0; i--) {
    const key = rand() < 0.8 ? pick(keys) : text(5);
    if (rand() < 0.25) {
      const values = Array.from({ length: 1 + int(4) }, () => text(5));
      if (rand() < 0.5) values.push(values[0]!); // duplicates are dropped by Twilio
      params[key] = values;
    } else {
      params[key] = text(10);
    }
  }
  return params;
}

t.test('computeTwilioSignature equals twilio.getExpectedTwilioSignature', async (t) => {
  let withArrays = 0;
  for (let i = 0; i < 500; i++) {
    const token = randomToken();
    const url = randomUrl();
    const params = i % 5 === 0 ? {} : randomParams();
    if (Object.values(params).some(Array.isArray)) withArrays++;
    const ours = computeTwilioSignature(token, url, params);
    const theirs = twilio.getExpectedTwilioSignature(token, url, params);
    if (ours !== theirs) t.fail(`mismatch for token=${JSON.stringify(token)} url=${JSON.stringify(url)} params=${JSON.stringify(params)}`);
    if (!twilio.validateRequest(token, ours, url, params)) t.fail(`twilio rejects ours for ${JSON.stringify(url)}`);
  }
  t.ok(withArrays > 20, `array-valued params exercised (${withArrays})`);

  for (let i = 0; i < 100; i++) {
    const token = randomToken();
    const url = randomUrl();
    t.equal(computeTwilioSignature(token, url), twilio.getExpectedTwilioSignature(token, url, {}), 'no params');
  }
  t.pass('500 random cases compared');
});

t.test('known vectors', async (t) => {
  // Twilio's documented example (https://www.twilio.com/docs/usage/security#validating-requests)
  const token = '12345';
  const url = 'https://mycompany.com/myapp.php?foo=1&bar=2';
  const params = { CallSid: 'CA1234567890ABCDE', Caller: '+14158675310', Digits: '1234', From: '+14158675310', To: '+18005551212' };
  t.equal(computeTwilioSignature(token, url, params), 'GvWf1cFY/Q7PnoempGyD5oXAezc=');
  const params2 = { ...params, Caller: '+12349013030', From: '+12349013030' };
  t.equal(computeTwilioSignature(token, url, params2), '0/KCTR6DLpKmkAf8muzZqo1nDgQ=');
  // A WebSocket upgrade has no params: HMAC over the URL alone.
  const ws = 'wss://lb.example.com/twilio/v1';
  const tok = '0123456789abcdef0123456789abcdef';
  t.equal(computeTwilioSignature(tok, ws), crypto.createHmac('sha1', tok).update(ws).digest('base64'));
  t.equal(computeTwilioSignature(tok, ws, {}), computeTwilioSignature(tok, ws));
  // arrays: de-duplicated and sorted, each value as name+value
  t.equal(computeTwilioSignature(tok, ws, { b: ['2', '1', '2'], a: 'x' }),
    crypto.createHmac('sha1', tok).update(`${ws}axb1b2`).digest('base64'));
  t.equal(computeTwilioSignature(tok, ws, { k: [] }), computeTwilioSignature(tok, ws), 'an empty array adds nothing');
});

const TOKENS = ['a'.repeat(32), '0123456789abcdef0123456789abcdef', 'f'.repeat(32)] as const;
const PUBLIC = 'wss://lb.example.com/twilio/v1';

t.test('matchTwilioSignature accepts twilio-made signatures for the URL and its tolerated variants', async (t) => {
  const urls = candidateUrls(PUBLIC);
  const variants = [
    PUBLIC,
    `${PUBLIC}/`,
    'wss://lb.example.com:443/twilio/v1',
    'wss://lb.example.com:443/twilio/v1/',
  ];
  t.same([...urls].sort(), [...variants].sort());
  TOKENS.forEach((token, index) => {
    for (const variant of variants) {
      const sig = twilio.getExpectedTwilioSignature(token, variant, {});
      t.equal(matchTwilioSignature(TOKENS, sig, urls), index, `token ${index}, signed for ${variant}`);
      t.equal(matchTwilioSignature(TOKENS, sig, urls, {}), index);
    }
  });
  // the configured URL written with the port and a slash tolerates the bare form as well
  const sig = twilio.getExpectedTwilioSignature(TOKENS[1], PUBLIC, {});
  t.equal(matchTwilioSignature(TOKENS, sig, candidateUrls('wss://lb.example.com:443/twilio/v1/')), 1);
  t.equal(matchTwilioSignature([TOKENS[1]], sig, [PUBLIC]), 0);

  // signed POST callbacks (TaskRouter) carry params
  const cb = 'https://lb.example.com/twilio/v1/events';
  const params = { EventType: 'task.created', TaskSid: 'WT123', Multi: ['b', 'a'] };
  const post = twilio.getExpectedTwilioSignature(TOKENS[2], cb, params);
  t.equal(matchTwilioSignature(TOKENS, post, candidateUrls(cb), params), 2);
  t.equal(matchTwilioSignature(TOKENS, post, candidateUrls(cb), { ...params, EventType: 'task.deleted' }), -1,
    'tampered params');
  t.equal(matchTwilioSignature(TOKENS, post, candidateUrls(cb)), -1, 'params missing');

  // random URLs: whatever twilio signs for one of our candidates is matched, and twilio agrees
  for (let i = 0; i < 200; i++) {
    const url = randomUrl();
    const candidates = candidateUrls(url);
    const token = pick(TOKENS);
    const signedFor = pick(candidates);
    const s = twilio.getExpectedTwilioSignature(token, signedFor, {});
    const found = matchTwilioSignature(TOKENS, s, candidates);
    if (found !== TOKENS.indexOf(token)) t.fail(`not matched: ${url} signed for ${signedFor}`);
  }
  t.pass('200 random candidate URLs matched');
});

t.test('candidate URLs cover what twilio.validateRequest tolerates for https', async (t) => {
  for (let i = 0; i < 200; i++) {
    const token = randomToken();
    const host = pick(['h.example.com', '10.0.0.1', '[2001:db8::1]']);
    const path = `/${encodeURIComponent(text(5))}`;
    const withPort = `https://${host}:443${path}`;
    const without = `https://${host}${path}`;
    for (const [configured, signed] of [[withPort, without], [without, withPort], [without, without]]) {
      const sig = twilio.getExpectedTwilioSignature(token, signed!, {});
      if (!twilio.validateRequest(token, sig, configured!, {})) t.fail(`twilio rejects ${signed} for ${configured}`);
      if (matchTwilioSignature([token], sig, candidateUrls(configured!)) !== 0) {
        t.fail(`we reject ${signed} for ${configured}`);
      }
    }
  }
  t.pass('200 https URLs with and without :443');
});

t.test('matchTwilioSignature rejects what it must', async (t) => {
  const urls = candidateUrls(PUBLIC);
  const good = twilio.getExpectedTwilioSignature(TOKENS[0], PUBLIC, {});
  t.equal(matchTwilioSignature(TOKENS, good, urls), 0, 'sanity: the good one matches');

  const wrongToken = twilio.getExpectedTwilioSignature('b'.repeat(32), PUBLIC, {});
  t.equal(matchTwilioSignature(TOKENS, wrongToken, urls), -1, 'wrong token');
  t.equal(matchTwilioSignature([], good, urls), -1, 'no tokens');

  for (const other of [
    'wss://lb.example.com/twilio/v2',
    'wss://evil.example.com/twilio/v1',
    'ws://lb.example.com/twilio/v1',
    'https://lb.example.com/twilio/v1',
    'wss://lb.example.com:8443/twilio/v1',
    'wss://lb.example.com:80/twilio/v1',
    'wss://lb.example.com/twilio/v1?x=1',
    'wss://lb.example.com/twilio/v1//',
    'wss://LB.example.com/twilio/v1',
  ]) {
    const sig = twilio.getExpectedTwilioSignature(TOKENS[0], other, {});
    t.equal(matchTwilioSignature(TOKENS, sig, urls), -1, `wrong URL ${other}`);
  }
  t.equal(matchTwilioSignature(TOKENS, good, ['wss://other.example.com/twilio/v1']), -1, 'configured elsewhere');
  t.equal(matchTwilioSignature(TOKENS, good, []), -1, 'no URLs');

  for (let i = 0; i < good.length; i++) {
    const c = good[i] === 'A' ? 'B' : 'A';
    const tampered = good.slice(0, i) + c + good.slice(i + 1);
    if (matchTwilioSignature(TOKENS, tampered, urls) !== -1) t.fail(`tampered at ${i} accepted`);
  }
  t.pass(`every single-character change of the header rejected (${good.length})`);

  t.equal(matchTwilioSignature(TOKENS, undefined, urls), -1, 'missing header');
  t.equal(matchTwilioSignature(TOKENS, '', urls), -1, 'empty header');
  for (const wrongLength of [good.slice(0, -1), `${good}=`, `${good} `, ` ${good}`, 'x', 'A'.repeat(1000),
    good.replace(/=$/, '')]) {
    t.equal(matchTwilioSignature(TOKENS, wrongLength, urls), -1, `wrong length ${JSON.stringify(wrongLength.slice(0, 40))}`);
  }
  // same number of UTF-16 units, more bytes: must be a plain mismatch, not a timingSafeEqual throw
  const unicode = `é${good.slice(1)}`;
  t.equal(unicode.length, good.length);
  t.equal(matchTwilioSignature(TOKENS, unicode, urls), -1, 'multi-byte header of the same length');
  t.equal(matchTwilioSignature(TOKENS, Buffer.from(good, 'base64').toString('hex'), urls), -1, 'hex instead of base64');
  t.equal(matchTwilioSignature(TOKENS, good.toLowerCase(), urls), -1, 'case matters');
});

t.test('candidateUrls', async (t) => {
  const cases: Array<[string, string[]]> = [
    ['wss://lb.example.com/twilio/v1', [
      'wss://lb.example.com/twilio/v1', 'wss://lb.example.com/twilio/v1/',
      'wss://lb.example.com:443/twilio/v1', 'wss://lb.example.com:443/twilio/v1/']],
    ['wss://lb.example.com:443/twilio/v1/', [
      'wss://lb.example.com:443/twilio/v1/', 'wss://lb.example.com:443/twilio/v1',
      'wss://lb.example.com/twilio/v1/', 'wss://lb.example.com/twilio/v1']],
    ['ws://10.0.0.5/twilio/v1', [
      'ws://10.0.0.5/twilio/v1', 'ws://10.0.0.5/twilio/v1/', 'ws://10.0.0.5:80/twilio/v1', 'ws://10.0.0.5:80/twilio/v1/']],
    ['ws://10.0.0.5:80/twilio/v1', [
      'ws://10.0.0.5:80/twilio/v1', 'ws://10.0.0.5:80/twilio/v1/', 'ws://10.0.0.5/twilio/v1', 'ws://10.0.0.5/twilio/v1/']],
    ['ws://10.0.0.5:8080/twilio/v1', ['ws://10.0.0.5:8080/twilio/v1', 'ws://10.0.0.5:8080/twilio/v1/']],
    ['wss://lb.example.com:80/x', ['wss://lb.example.com:80/x', 'wss://lb.example.com:80/x/']],
    ['https://h.example.com', ['https://h.example.com', 'https://h.example.com/', 'https://h.example.com:443',
      'https://h.example.com:443/']],
    ['http://h.example.com/', ['http://h.example.com/', 'http://h.example.com', 'http://h.example.com:80/',
      'http://h.example.com:80']],
    ['https://h.example.com/cb?x=1&y=%27', ['https://h.example.com/cb?x=1&y=%27', 'https://h.example.com/cb/?x=1&y=%27',
      'https://h.example.com:443/cb?x=1&y=%27', 'https://h.example.com:443/cb/?x=1&y=%27']],
    ['WSS://lb.example.com/a', ['WSS://lb.example.com/a', 'WSS://lb.example.com/a/', 'WSS://lb.example.com:443/a',
      'WSS://lb.example.com:443/a/']],
    ['wss://[::1]/a', ['wss://[::1]/a', 'wss://[::1]/a/', 'wss://[::1]:443/a', 'wss://[::1]:443/a/']],
    ['wss://[::1]:443/a', ['wss://[::1]:443/a', 'wss://[::1]:443/a/', 'wss://[::1]/a', 'wss://[::1]/a/']],
    ['https://u:p@h.example.com/a', ['https://u:p@h.example.com/a', 'https://u:p@h.example.com/a/',
      'https://u:p@h.example.com:443/a', 'https://u:p@h.example.com:443/a/']],
    ['ftp://h.example.com/a', ['ftp://h.example.com/a', 'ftp://h.example.com/a/']],
    ['not a url', ['not a url']],
    ["wss://lb.example.com/it's", ["wss://lb.example.com/it's", "wss://lb.example.com/it's/",
      "wss://lb.example.com:443/it's", "wss://lb.example.com:443/it's/"]],
  ];
  for (const [input, expected] of cases) {
    const got = candidateUrls(input);
    t.same(got, expected, input);
    t.equal(got[0], input, `${input}: the URL as given comes first`);
    t.equal(new Set(got).size, got.length, `${input}: no duplicates`);
  }
});

t.test('derivePublicUrl', async (t) => {
  const cases: Array<[Record<string, string | string[] | undefined>, string, boolean, string]> = [
    [{ host: 'gw.internal:8080' }, '/twilio/v1', false, 'ws://gw.internal:8080/twilio/v1'],
    [{ host: 'gw.example.com' }, '/twilio/v1', true, 'wss://gw.example.com/twilio/v1'],
    [{ host: 'gw.example.com:443' }, '/twilio/v1', true, 'wss://gw.example.com/twilio/v1'],
    [{ host: 'gw.example.com:80' }, '/twilio/v1', false, 'ws://gw.example.com/twilio/v1'],
    [{ host: 'gw.example.com:443' }, '/twilio/v1', false, 'ws://gw.example.com:443/twilio/v1'],
    [{ host: 'gw.example.com:80' }, '/twilio/v1', true, 'wss://gw.example.com:80/twilio/v1'],
    // TLS terminated at the load balancer
    [{ host: 'gw-7:8080', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'lb.example.com' }, '/twilio/v1', false,
      'wss://lb.example.com/twilio/v1'],
    [{ host: 'lb.example.com', 'x-forwarded-proto': 'https' }, '/twilio/v1', false, 'wss://lb.example.com/twilio/v1'],
    [{ host: 'lb.example.com:443', 'x-forwarded-proto': 'https' }, '/twilio/v1', false, 'wss://lb.example.com/twilio/v1'],
    [{ host: 'lb.example.com', 'x-forwarded-proto': 'wss' }, '/twilio/v1', false, 'wss://lb.example.com/twilio/v1'],
    [{ host: 'lb.example.com', 'x-forwarded-proto': 'HTTPS' }, '/twilio/v1', false, 'wss://lb.example.com/twilio/v1'],
    [{ host: 'lb.example.com', 'x-forwarded-proto': 'http' }, '/twilio/v1', true, 'ws://lb.example.com/twilio/v1'],
    [{ host: 'lb.example.com', 'x-forwarded-proto': 'ws' }, '/twilio/v1', true, 'ws://lb.example.com/twilio/v1'],
    [{ host: 'lb.example.com', 'x-forwarded-proto': 'gopher' }, '/twilio/v1', true, 'wss://lb.example.com/twilio/v1'],
    [{ host: 'lb.example.com', 'x-forwarded-proto': '' }, '/twilio/v1', false, 'ws://lb.example.com/twilio/v1'],
    // comma lists and repeated headers: the first value (the client-facing hop) wins
    [{ host: 'gw', 'x-forwarded-proto': 'https, http' }, '/twilio/v1', false, 'wss://gw/twilio/v1'],
    [{ host: 'gw', 'x-forwarded-proto': 'http,https' }, '/twilio/v1', true, 'ws://gw/twilio/v1'],
    [{ host: 'gw', 'x-forwarded-proto': ['https', 'http'] }, '/twilio/v1', false, 'wss://gw/twilio/v1'],
    [{ host: 'gw', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'a.example.com, b.example.com' }, '/x', false,
      'wss://a.example.com/x'],
    [{ host: 'gw', 'x-forwarded-proto': 'https', 'x-forwarded-host': ['a.example.com:443', 'b.example.com'] }, '/x', false,
      'wss://a.example.com/x'],
    [{ host: 'gw', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'a.example.com:8443' }, '/x', false,
      'wss://a.example.com:8443/x'],
    [{ host: 'gw', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'a.example.com:80' }, '/x', false, 'ws://a.example.com/x'],
    [{ host: 'gw', 'x-forwarded-host': '' }, '/x', false, 'ws://gw/x'],
    [{ host: 'gw', 'x-forwarded-host': ' , b.example.com' }, '/x', false, 'ws://gw/x'],
    [{ host: 'gw', 'x-forwarded-host': [] }, '/x', false, 'ws://gw/x'],
    [{ host: 'gw', 'x-forwarded-host': undefined }, '/x', false, 'ws://gw/x'],
    // IPv6
    [{ host: '[::1]:443' }, '/x', true, 'wss://[::1]/x'],
    [{ host: '[::1]' }, '/x', true, 'wss://[::1]/x'],
    [{ host: '[::1]:8080' }, '/x', true, 'wss://[::1]:8080/x'],
    // path: query and fragment dropped
    [{ host: 'gw' }, '/twilio/v1?x=1&y=2', false, 'ws://gw/twilio/v1'],
    [{ host: 'gw' }, '/twilio/v1#f', false, 'ws://gw/twilio/v1'],
    [{ host: 'gw' }, '/twilio/v1/', false, 'ws://gw/twilio/v1/'],
    [{ host: 'gw' }, 'twilio/v1', false, 'ws://gw/twilio/v1'],
    [{ host: 'gw' }, '', false, 'ws://gw/'],
    // header names in any case (plain objects, not Node's lower-cased ones)
    [{ Host: 'gw', 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'lb.example.com' }, '/x', false, 'wss://lb.example.com/x'],
    // no Host at all
    [{}, '/x', false, 'ws://localhost/x'],
  ];
  for (const [headers, path, encrypted, expected] of cases) {
    t.equal(derivePublicUrl(headers, path, encrypted), expected, `${JSON.stringify(headers)} ${path} ${encrypted}`);
  }
});

t.test('end to end: behind a TLS proxy, a derived URL verifies what Twilio signed', async (t) => {
  const token = TOKENS[1];
  const sig = twilio.getExpectedTwilioSignature(token, PUBLIC, {});
  const headers = { host: '10.0.3.7:8080', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'lb.example.com:443' };
  const derived = derivePublicUrl(headers, '/twilio/v1?ignored=1', false);
  t.equal(derived, PUBLIC);
  t.equal(matchTwilioSignature([TOKENS[0], token], sig, candidateUrls(derived)), 1);
  t.ok(twilio.validateRequest(token, sig, derived, {}));
  const naive = derivePublicUrl({ host: '10.0.3.7:8080' }, '/twilio/v1', false);
  t.equal(matchTwilioSignature([token], sig, candidateUrls(naive)), -1, 'the internal URL does not verify');
});
