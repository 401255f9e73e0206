// The bounded CTI call state (CallStates): a full table forgets the least recently touched calls
// that are neither live nor paused, a share of the cap at a time, and never grows past the cap.
import t from 'tap';
import { CallStates, TooManyCallsError } from '../recorder/call-states.js';

const now = () => new Date(0);

t.test('full: the oldest forgettable calls go, a hundredth of the cap at once; paused and live ones stay', async (t) => {
  const states = new CallStates(60_000, now, 1000);
  const live = new Set(['CA-live']);
  const isLive = (s: { callSid: string }) => live.has(s.callSid);
  states.getOrCreate('', 'CA-paused').paused = true;
  states.getOrCreate('', 'CA-live', isLive);
  for (let i = 0; i < 998; i++) states.getOrCreate('', `CA-${i}`, isLive);
  t.equal(states.size, 1000, 'at the cap');
  states.getOrCreate('', 'CA-new', isLive);
  t.equal(states.size, 991, 'ten forgotten for the new one');
  t.notOk(states.get('', 'CA-0'), 'the oldest forgotten');
  t.notOk(states.get('', 'CA-9'));
  t.ok(states.get('', 'CA-10'), 'the eleventh oldest kept');
  t.ok(states.get('', 'CA-paused')?.paused, 'the paused call stays');
  t.ok(states.get('', 'CA-live'), 'the live call stays');
  // touched: no longer the oldest
  states.touch(states.get('', 'CA-10')!);
  for (let i = 0; i < 5000; i++) {
    states.getOrCreate('', `CA-flood-${i}`, isLive);
    if (states.size > 1000) t.fail(`past the cap: ${states.size}`);
  }
  t.ok(states.get('', 'CA-paused') && states.get('', 'CA-live'), 'a flood never forgets the paused and live calls');
  t.ok(states.get('', 'CA-flood-4999'), 'the newest is there');
});

t.test('a small cap still forgets one at a time', async (t) => {
  const states = new CallStates(60_000, now, 3);
  for (const c of ['CA-a', 'CA-b', 'CA-c', 'CA-d']) states.getOrCreate('', c);
  t.equal(states.size, 3);
  t.notOk(states.get('', 'CA-a'));
  t.ok(states.get('', 'CA-b'));
});

t.test('all live or paused: a new call is refused', async (t) => {
  const states = new CallStates(60_000, now, 2);
  states.getOrCreate('', 'CA-1').paused = true;
  states.getOrCreate('', 'CA-2').paused = true;
  t.throws(() => states.getOrCreate('', 'CA-3'), TooManyCallsError);
  t.equal(states.size, 2);
});
