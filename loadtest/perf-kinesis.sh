#!/bin/bash
# The media path's perf ratio with 1000 Kinesis events/s read by the gateway vs without
# (BENCHMARKS.md, issue 12), interleaved, 3 each: run it under the bench lock.
#   flock /work/bench.lock loadtest/perf-kinesis.sh      # BENCH_DIR: the shared perf-ratio tool (default /work/shared/bench)
# perf-ratio.mjs is the one outside tool (the yardstick, shared by every project); everything
# else is in this repository. Kinesis needs a configured data source, and a configured data
# source refuses streams of any other account, while the shared loadgen picks a random account:
# this runs a copy of the tool whose loadgen takes its account from LOADGEN_ACCOUNT, and whose
# perf-ratio also reads the gateway's main thread's CPU (/proc/<pid>/task/<pid>/stat) over the
# same window (the media thread; the Kinesis reading runs in a worker thread). kinesalite and
# the putter run in their own processes (loadtest/kinesis-bench.ts --load-only).
set -eu
WT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_DIR:-/work/shared/bench}
RUNS=${RUNS:-3}
COPY=$(mktemp -d /tmp/perf-kinesis-XXXXXX)
trap 'rm -rf "$COPY"' EXIT
cp "$BENCH"/{perf-ratio.mjs,loadgen.mjs,ceiling-server.mjs,server-core.mjs,package.json} "$COPY/"
# the shared tool needs ws only; where its node_modules is not installed (read-only), the project's ws
if [ -d "$BENCH/node_modules" ]; then ln -s "$BENCH/node_modules" "$COPY/node_modules"; else ln -s "$WT/node_modules" "$COPY/node_modules"; fi
sed -i "s|^const ACCOUNT = 'AC' + hex(16);|const ACCOUNT = process.env.LOADGEN_ACCOUNT ?? 'AC' + hex(16);|" "$COPY/loadgen.mjs"
grep -q LOADGEN_ACCOUNT "$COPY/loadgen.mjs" || { echo "loadgen.mjs changed: cannot set its account" >&2; exit 1; }
sed -i -e 's|^  const c0 = cpuMs(pid);|  const c0 = cpuMs(pid), m0 = cpuMs(`${pid}/task/${pid}`);|' \
  -e 's|^  const c1 = cpuMs(pid);|  const c1 = cpuMs(pid), m1 = cpuMs(`${pid}/task/${pid}`);|' \
  -e 's|usPerMsg: ((c1 - c0) \* 1000) / lg.mediaSent,|& mainUsPerMsg: ((m1 - m0) * 1000) / lg.mediaSent,|' "$COPY/perf-ratio.mjs"
[ "$(grep -c 'm1 - m0\|m0 = cpuMs\|m1 = cpuMs' "$COPY/perf-ratio.mjs")" = 3 ] || { echo "perf-ratio.mjs changed: cannot read the main thread's CPU" >&2; exit 1; }
ACC=AC$(openssl rand -hex 16)
export LOADGEN_ACCOUNT=$ACC TWILIO_ACCOUNT_SID=$ACC
# perf-ratio's ceiling listens on PORT, the gateway on PORT+1: both free
PORT=$(cd "$WT" && node --import tsx --input-type=module -e "import { freePort } from './loadtest/free-port.ts'; import net from 'node:net';
for (;;) { const p = await freePort(); const ok = await new Promise((r) => { const s = net.createServer().once('error', () => r(false)).listen(p + 1, '127.0.0.1', () => s.close(() => r(true))); }); if (ok) { console.log(p); break; } }")
summary() { # the perf-ratio output: its last line, and the main thread's figures from its JSON line
  node -e 'const l = require("fs").readFileSync(0, "utf8").trim().split("\n"); let j; try { j = JSON.parse(l.at(-2)); } catch { console.log(l.slice(-8).join("\n")); process.exit(1); } const g = j.gateway, c = j.ceiling;
    console.log(`${l.at(-1)}; main thread ${g.mainUsPerMsg.toFixed(2)} us/msg = ${(g.mainUsPerMsg / c.usPerMsg).toFixed(2)} x ceiling; other threads ${(g.usPerMsg - g.mainUsPerMsg).toFixed(2)} us/msg`)'
}
for i in $(seq "$RUNS"); do
  echo "== run $i without Kinesis $(uptime)"
  (cd "$COPY" && node perf-ratio.mjs --project "$WT" --streams 300 --duration 20 --port "$PORT" 2>&1 | summary) || true
  echo "== run $i with 1000 ev/s $(uptime)"
  rm -f "$COPY/kenv"
  (cd "$WT" && exec node --import tsx loadtest/kinesis-bench.ts --load-only --rate 1000 --account "$ACC" --write-env "$COPY/kenv") > "$COPY/putter.log" 2>&1 &
  putter=$!
  for _ in $(seq 100); do [ -s "$COPY/kenv" ] && break; sleep 0.2; done
  # the consumer's view during the gateway's half of the run (the ceiling half takes ~35 s)
  # and where the reader runs: the gateway's child processes, their nice, class and allowed CPUs
  ( sleep 50; curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | grep -E '^gateway_kinesis_(records_total.*applied|millis_behind|worker_cpu|apply_lag_seconds_(count|bucket\{le="1"))'
    gw=$(ss -ltnpH "sport = :$((PORT + 1))" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
    for c in $(ps --ppid "${gw:-0}" -o pid= 2>/dev/null); do
      echo "gateway $gw child $(ps -o pid=,ni=,cls=,rss=,args= -p "$c" | cut -c1-120) $(grep Cpus_allowed_list "/proc/$c/status" | tr -s '\t' ' ')"
    done ) &
  scr=$!
  (set +u; source "$COPY/kenv" && cd "$COPY" && node perf-ratio.mjs --project "$WT" --streams 300 --duration 20 --port "$PORT" 2>&1 | summary) || true
  wait $scr || true
  kill -TERM $putter; wait $putter || true
  grep -v Warning "$COPY/putter.log" | tail -1
done
echo "== end $(uptime)"
