// The error budget alone (gateway/twilio/error-budget.ts), with an injected clock: more than `limit`
// bad messages within any window of `windowMs` exhaust it, whatever came in between.
import t from 'tap';
import { ErrorBudget } from '../gateway/twilio/error-budget.js';

t.test('more than limit errors within the window exhaust the budget', async (t) => {
  const b = new ErrorBudget(3, 10_000);
  t.equal(b.spend(0), false);
  t.equal(b.spend(1), false);
  t.equal(b.spend(2), false, 'exactly limit errors are allowed');
  t.equal(b.spend(3), true, 'the (limit+1)-th within the window is not');
});

t.test('errors spread wider than the window never exhaust it', async (t) => {
  const b = new ErrorBudget(3, 10_000);
  // 3 errors every 10 s, for an hour: always at most `limit` in any window
  for (let now = 0; now < 3_600_000; now += 3334) {
    if (b.spend(now)) t.fail(`exhausted at ${now}`);
  }
  t.pass('never exhausted');
});

t.test('a burst after a quiet spell is judged on its own window (sliding, not fixed)', async (t) => {
  const b = new ErrorBudget(50, 10_000);
  for (let i = 0; i < 50; i++) t.equal(b.spend(i), false);
  // 9.95 s later the oldest 50 are still inside the window: one more is too many
  t.equal(b.spend(9_950), true);
  const c = new ErrorBudget(50, 10_000);
  for (let i = 0; i < 50; i++) c.spend(i);
  t.equal(c.spend(10_000), false, 'the first error left the window');
  t.equal(c.spend(10_001), false);
  t.equal(c.spend(10_002), false);
});

t.test('three bad per good frame at 50 frames a second is exhausted within a second', async (t) => {
  const b = new ErrorBudget(50, 10_000);
  let at = -1;
  for (let frame = 0; frame < 5000 && at < 0; frame++) {
    for (let k = 0; k < 3; k++) if (b.spend(frame * 20 + k)) at = frame * 20;
  }
  t.ok(at >= 0 && at < 1000, `exhausted after ${at} ms`);
});

t.test('bad settings are refused', async (t) => {
  t.throws(() => new ErrorBudget(0, 10));
  t.throws(() => new ErrorBudget(1, 0));
});
