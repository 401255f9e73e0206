// The single-node Kinesis checkpoint file (FileStore): the recent CloudEvent ids it remembers for
// de-duplication are the last `maxIds` applied, kept across a restart in the same order.
import t from 'tap';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { FileStore } from '../gateway/kinesis/checkpoint-store.js';
import { tempDir } from './fixtures/gateway-process.js';

const ids = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `id-${from + i}`);

t.test('the last maxIds ids are remembered, the older ones forgotten, across a reload', async (t) => {
  const file = path.join(await tempDir(t, 'kinesis-store-'), 'src.json');
  const errors: Error[] = [];
  const a = new FileStore(file, (err) => errors.push(err), 100, 0);
  await a.load();
  for (let i = 0; i < 350; i += 50) await a.save('shardId-0', { seq: String(i), finished: false, at: i }, ids(i, i + 50));
  t.same(await a.seen(['id-249', 'id-250', 'id-349', 'id-350']), [false, true, true, false]);
  // applied again (the same event on another shard): remembered as new, and only once
  await a.save('shardId-0', { seq: '350', finished: false, at: 350 }, ['id-260']);
  await a.flush();
  const doc = JSON.parse(await readFile(file, 'utf8')) as { recentIds: string[]; shards: Record<string, { seq: string }> };
  t.same(doc.recentIds, [...ids(251, 350).filter((id) => id !== 'id-260'), 'id-260'], 'oldest first, the repeat at its new place');
  t.equal(doc.shards['shardId-0']!.seq, '350');

  const b = new FileStore(file, (err) => errors.push(err), 100, 0);
  t.equal((await b.load()).get('shardId-0')?.seq, '350');
  t.same(await b.seen(['id-250', 'id-251', 'id-260', 'id-349']), [false, true, true, true]);
  // the repeated id is the newest: 99 more push out the rest, not it
  await b.save('shardId-0', { seq: '351', finished: false, at: 351 }, ids(1000, 1099));
  t.same(await b.seen(['id-349', 'id-260', 'id-1098']), [false, true, true]);
  await b.save('shardId-0', { seq: '352', finished: false, at: 352 }, ['id-2000']);
  t.same(await b.seen(['id-260', 'id-2000']), [false, true]);
  t.same(errors, []);
});
