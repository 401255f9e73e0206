// customParameters cleaning alone (gateway/twilio/custom-parameters.ts): nothing is refused, only
// clipped with a visible marker; the end-to-end case is in e2e-bad-input.test.ts.
import t from 'tap';
import {
  cleanCustomParameters, clip, MAX_KEY_CHARS, MAX_TOTAL_CHARS, MAX_VALUE_CHARS, OVERFLOW_KEY,
} from '../gateway/twilio/custom-parameters.js';

t.test('ordinary parameters are kept exactly, control characters included', async (t) => {
  const raw = { ctiSessionId: 'S-1042', note: 'line one\nline two\ttab', empty: '' };
  t.strictSame(cleanCustomParameters(raw), { params: raw, clipped: 0 });
  t.strictSame(cleanCustomParameters(undefined), { params: {}, clipped: 0 });
});

t.test('huge keys and values are clipped with a marker naming what was cut', async (t) => {
  const { params, clipped } = cleanCustomParameters({ ['k'.repeat(1000)]: 'v'.repeat(5000) });
  t.equal(clipped, 1);
  const [k, v] = Object.entries(params)[0]!;
  t.equal(k, `${'k'.repeat(MAX_KEY_CHARS)}…[clipped ${1000 - MAX_KEY_CHARS} chars]`);
  t.equal(v, `${'v'.repeat(MAX_VALUE_CHARS)}…[clipped ${5000 - MAX_VALUE_CHARS} chars]`);
});

t.test('two long keys that clip alike stay two entries', async (t) => {
  const a = `${'k'.repeat(300)}a`;
  const b = `${'k'.repeat(300)}b`;
  const { params } = cleanCustomParameters({ [a]: '1', [b]: '2' });
  t.same(Object.values(params).sort(), ['1', '2']);
});

t.test('clipping never splits a surrogate pair', async (t) => {
  const s = `${'a'.repeat(9)}😀😀`;
  t.equal(clip(s, 10), `${'a'.repeat(9)}…[clipped 4 chars]`);
  t.equal(clip('short', 10), 'short');
});

t.test('beyond the total, parameters are counted in one marker entry', async (t) => {
  const raw: Record<string, string> = {};
  for (let i = 0; i < 200; i++) raw[`p${i}`] = 'x'.repeat(1000);
  const { params, clipped } = cleanCustomParameters(raw);
  const keptCount = Object.keys(params).length - 1;
  t.ok(keptCount > 0 && keptCount < 200);
  let total = 0;
  for (const [k, v] of Object.entries(params)) total += k.length + v.length;
  t.ok(total <= MAX_TOTAL_CHARS + 100, `about ${MAX_TOTAL_CHARS} characters kept (${total})`);
  t.equal(params[OVERFLOW_KEY], `[clipped ${200 - keptCount} more parameters]`);
  t.equal(clipped, 200 - keptCount);
});

t.test('non-string values and a non-object are kept as text, __proto__ as a plain key', async (t) => {
  const raw = JSON.parse('{"n": 5, "b": true, "o": {"x": 1}, "z": null, "__proto__": "p"}') as Record<string, unknown>;
  const { params } = cleanCustomParameters(raw);
  t.same({ ...params }, { n: '5', b: 'true', o: '{"x":1}', z: 'null', ['__proto__']: 'p' });
  t.equal(Object.getPrototypeOf(params), Object.prototype, 'the prototype is untouched');
  t.strictSame(cleanCustomParameters('just text'), { params: { customParameters: 'just text' }, clipped: 1 });
  t.strictSame(cleanCustomParameters([1, 2]).params, { customParameters: '[1,2]' });
});
