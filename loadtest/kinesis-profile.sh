#!/bin/bash
# Where a node spends CPU per Kinesis event: the built gateway (dist/, `npx tsc -b
# tsconfig.build.json` first) reads 1000 events/s (kinesis-bench.ts --load-only: kinesalite and
# the putter in their own processes), no media. Prints the applied count, the whole process's,
# each thread's and each child process's (the Kinesis reader) CPU ticks (1/100 s) over SECS seconds from /proc; with PROF=1 also writes a
# V8 CPU profile per thread and per process (main, the reader) into OUT/prof (read with cpuprofile-top.mjs).
# Run it under the bench lock:
#   flock /work/bench.lock loadtest/kinesis-profile.sh <project dir> <out dir>
set -eu
WT=$1; OUT=$2; SECS=${SECS:-30}
rm -rf "$OUT"; mkdir -p "$OUT/rec"
ACC=AC$(openssl rand -hex 16)
(cd "$WT" && exec node --import tsx loadtest/kinesis-bench.ts --load-only --rate 1000 --account "$ACC" --write-env "$OUT/kenv") > "$OUT/putter.log" 2>&1 &
putter=$!
for _ in $(seq 100); do [ -s "$OUT/kenv" ] && break; sleep 0.2; done
source "$OUT/kenv"
PORT=$((20000 + RANDOM % 10000))
(cd "$WT" && TWILIO_ACCOUNT_SID=$ACC PORT=$PORT HOST=127.0.0.1 RECORDINGS_DIR=$OUT/rec LOG_LEVEL=warn exec node ${PROF:+--cpu-prof --cpu-prof-dir="$OUT/prof"} dist/gateway/main.js) > "$OUT/gw.log" 2>&1 &
gw=$!
sleep 5
# the gateway's threads, and its child processes (the Kinesis reader) as a whole
threads() {
  for d in /proc/$gw/task/*; do echo "$(basename $d) $(cat $d/comm | tr ' ' _) $(awk '{print $14+$15}' $d/stat)"; done
  for c in $(cat /proc/$gw/task/*/children 2>/dev/null); do echo "$c child:$(cat /proc/$c/comm | tr ' ' _) $(awk '{print $14+$15}' /proc/$c/stat)"; done
}
t0=$(awk '{print $14+$15}' /proc/$gw/stat); threads > "$OUT/th0"
sleep "$SECS"
t1=$(awk '{print $14+$15}' /proc/$gw/stat); threads > "$OUT/th1"
join <(sort "$OUT/th0") <(sort "$OUT/th1") | awk '{d=$5-$3; if (d>0) print "  thread", $2, d, "ticks"}' 
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^gateway_kinesis_(records_total.*applied|worker_cpu|apply_lag_seconds_count)'
echo "process cpu ticks over ${SECS}s: $((t1 - t0))"
kill -TERM $gw; wait $gw || true
kill -TERM $putter; wait $putter || true
tail -1 "$OUT/putter.log"
ls "$OUT/prof"
