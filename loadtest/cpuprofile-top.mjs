// Self and inclusive time per function of a V8 .cpuprofile (node --cpu-prof), optionally
// skipping its first SKIP_US microseconds (start-up):
//   SKIP_US=6000000 node loadtest/cpuprofile-top.mjs OUT/prof/CPU....cpuprofile [top]
import fs from 'node:fs';
const file = process.argv[2]; const top = Number(process.argv[3] ?? 40);
const p = JSON.parse(fs.readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map();
const dt = p.timeDeltas; let total = 0;
const counts = new Map();
let tacc = 0; const SKIP = Number(process.env.SKIP_US ?? 0); for (let i = 0; i < p.samples.length; i++) { tacc += dt[i] ?? 0; if (tacc < SKIP) continue; counts.set(p.samples[i], (counts.get(p.samples[i]) ?? 0) + (dt[i + 1] ?? 0)); }
const key = (n) => `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.replace(/.*\/(node_modules|dist)\//, '$1/')}:${n.callFrame.lineNumber + 1}`;
const incl = new Map();
for (const [id, us] of counts) {
  const n = byId.get(id); total += us;
  self.set(key(n), (self.get(key(n)) ?? 0) + us);
  const seen = new Set(); let cur = id;
  while (cur !== undefined) { const k = key(byId.get(cur)); if (!seen.has(k)) { seen.add(k); incl.set(k, (incl.get(k) ?? 0) + us); } cur = parent.get(cur); }
}
console.log(`total ${(total / 1e6).toFixed(2)} s`);
const idle = self.get('(idle) :0') ?? 0; console.log(`non-idle ${((total - idle) / 1e6).toFixed(3)} s`);
console.log('--- self'); for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log((v / 1e3).toFixed(0).padStart(7), 'ms', k);
console.log('--- inclusive'); for (const [k, v] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log((v / 1e3).toFixed(0).padStart(7), 'ms', k);
