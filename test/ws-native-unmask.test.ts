// The gateway unmasks every client frame it receives (100 000 media messages a second at 1 000
// streams): ws does it natively when the optional `bufferutil` is installed, in a JavaScript
// loop otherwise (~1 us per 330-byte media message, a tenth of the per-message budget; see
// BENCHMARKS.md). This fails if the install lost it, so the loss does not go unnoticed.
import t from 'tap';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

t.test('bufferutil loads and unmasks like the WebSocket spec says', async (t) => {
  const bu = require('bufferutil') as { unmask: (b: Buffer, m: Buffer) => void; mask: (s: Buffer, m: Buffer, o: Buffer, off: number, len: number) => void };
  const mask = Buffer.from([0x12, 0x9a, 0xfe, 0x01]);
  const plain = Buffer.from(`{"event":"media","media":{"payload":"${'A'.repeat(216)}"}}`);
  const masked = Buffer.alloc(plain.length);
  for (let i = 0; i < plain.length; i++) masked[i] = plain[i]! ^ mask[i & 3]!;
  const b = Buffer.from(masked);
  bu.unmask(b, mask);
  t.ok(b.equals(plain), 'unmasked in place: byte i XOR mask[i mod 4]');
});
