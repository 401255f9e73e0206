// node --import tsx loadtest/catalog-import-turns.ts --data DIR [--limit N] [--project CHECKOUT] [--readers N]
//
// How long a catalog import holds the event loop, in a way the machine's load does not change
// much: an in-process import of the sidecars under DIR into a scratch SQLite file (the importer of
// CHECKOUT, default this one), with a setImmediate chain counting the loop's turns; per turn the
// main thread's own on-CPU time (/proc/self/task/<pid>/schedstat, Linux) and its wall time. Under
// load the wall time of a turn is mostly waiting for a core; the CPU time is what the code holds
// the loop for. Also the import's rate and main-thread CPU per row. Stops after N sidecars.
import { readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const data = path.resolve(arg('data') ?? '/tmp/catalog-data/100000');
const limit = Number(arg('limit') ?? '1e9');
const project = path.resolve(arg('project') ?? path.join(import.meta.dirname, '..'));
const readers = arg('readers');

const mod = async <T>(rel: string): Promise<T> => import(pathToFileURL(path.join(project, rel)).href) as Promise<T>;
const { SqliteCatalog } = await mod<typeof import('../recorder/catalog/sqlite-catalog.js')>('recorder/catalog/sqlite-catalog.ts');
const { importSidecars } = await mod<typeof import('../recorder/catalog/importer.js')>('recorder/catalog/importer.ts');

const file = path.join(os.tmpdir(), `catalog-turns-${process.pid}.sqlite`);
const onCpuMs = () => Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
const catalog = new SqliteCatalog(data, file);
await catalog.open();
try {
  const cpu: number[] = [];
  const wall: number[] = [];
  let on = true;
  let lastWall = performance.now();
  let lastCpu = onCpuMs();
  const tick = () => {
    const w = performance.now();
    const c = onCpuMs();
    wall.push(w - lastWall);
    cpu.push(c - lastCpu);
    lastWall = w;
    lastCpu = c;
    if (on) setImmediate(tick);
  };
  setImmediate(tick);
  const ac = new AbortController();
  const t0 = performance.now();
  const c0 = onCpuMs();
  const r = await importSidecars({
    catalog, recordingsDir: data, signal: ac.signal, ...(readers === undefined ? {} : { readers: Number(readers) }),
    onProgress: (p) => { if (p.done >= limit) ac.abort(); },
  });
  on = false;
  const s = (performance.now() - t0) / 1000;
  const mainCpu = onCpuMs() - c0;
  const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
  const f = (x: number) => x.toFixed(1);
  process.stdout.write(`${JSON.stringify({
    project, done: r.done, imported: r.imported, seconds: +s.toFixed(1), perSecond: Math.round(r.done / s),
    mainThreadCpuUsPerRow: Math.round((mainCpu * 1000) / r.done), turns: cpu.length,
    turnCpuMs: { p99: f(q(cpu, 0.99)), p999: f(q(cpu, 0.999)), max: f(q(cpu, 1)), over10: cpu.filter((x) => x > 10).length, over50: cpu.filter((x) => x > 50).length },
    turnWallMs: { p99: f(q(wall, 0.99)), p999: f(q(wall, 0.999)), max: f(q(wall, 1)) },
    load: os.loadavg().map((x) => x.toFixed(2)).join(' '),
  })}\n`);
} finally {
  await catalog.close();
  for (const s of ['', '-wal', '-shm']) rmSync(file + s, { force: true });
}
