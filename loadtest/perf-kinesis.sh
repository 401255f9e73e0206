#!/bin/bash
# The media path's perf ratio with 1000 Kinesis events/s read by the gateway vs without
# (BENCHMARKS.md, issue 12), interleaved, 3 each: run it under the bench lock.
#   flock /work/bench.lock loadtest/perf-kinesis.sh [BENCH_DIR=/work/shared/bench]
# Kinesis needs a configured data source, and a configured data source refuses streams of any
# other account, while the shared loadgen picks a random account: this runs a copy of the shared
# tool whose loadgen takes its account from LOADGEN_ACCOUNT (that one line differs). kinesalite
# and the putter run in their own processes (loadtest/kinesis-bench.ts --load-only).
set -eu
WT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_DIR:-/work/shared/bench}
COPY=$(mktemp -d /tmp/perf-kinesis-XXXXXX)
trap 'rm -rf "$COPY"' EXIT
cp "$BENCH"/{perf-ratio.mjs,loadgen.mjs,ceiling-server.mjs,server-core.mjs,package.json} "$COPY/"
ln -s "$BENCH/node_modules" "$COPY/node_modules"
sed -i "s|^const ACCOUNT = 'AC' + hex(16);|const ACCOUNT = process.env.LOADGEN_ACCOUNT ?? 'AC' + hex(16);|" "$COPY/loadgen.mjs"
grep -q LOADGEN_ACCOUNT "$COPY/loadgen.mjs" || { echo "loadgen.mjs changed: cannot set its account" >&2; exit 1; }
ACC=AC$(openssl rand -hex 16)
export LOADGEN_ACCOUNT=$ACC TWILIO_ACCOUNT_SID=$ACC
for i in 1 2 3; do
  echo "== run $i without Kinesis $(uptime)"
  (cd "$COPY" && node perf-ratio.mjs --project "$WT" --streams 300 --duration 20 2>&1 | tail -1) || true
  echo "== run $i with 1000 ev/s $(uptime)"
  rm -f "$COPY/kenv"
  (cd "$WT" && exec node --import tsx loadtest/kinesis-bench.ts --load-only --rate 1000 --account "$ACC" --write-env "$COPY/kenv") > "$COPY/putter.log" 2>&1 &
  putter=$!
  for _ in $(seq 100); do [ -s "$COPY/kenv" ] && break; sleep 0.2; done
  # the consumer's view during the gateway's half of the run (perf-ratio's gateway port)
  ( sleep 50; curl -s http://127.0.0.1:18191/metrics | grep -E '^gateway_kinesis_(records_total.*applied|millis_behind|apply_lag_seconds_(count|bucket\{le="1"))' ) &
  scr=$!
  (set +u; source "$COPY/kenv" && cd "$COPY" && node perf-ratio.mjs --project "$WT" --streams 300 --duration 20 2>&1 | tail -1) || true
  wait $scr || true
  kill -TERM $putter; wait $putter || true
  grep -v Warning "$COPY/putter.log" | tail -1
done
echo "== end $(uptime)"
