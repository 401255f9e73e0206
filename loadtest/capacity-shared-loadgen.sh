#!/bin/bash
# Capacity at 1 000 both_tracks streams with the shared, light load generator
# (../shared/bench/loadgen.mjs), gateway (dist/, run `npm run build` first) on CPU 0, generator on
# CPU 1. Event-loop delay p99 over t = 8..28 s (prom-client resets its histogram at each scrape),
# RSS per stream = (highest RSS in that window - RSS before) / 1000, lost = sent - received.
# usage: loadtest/capacity-shared-loadgen.sh <project dir> <output dir> [node flags...]
# (run it under flock /work/bench.lock; see BENCHMARKS.md)
P=$1; TAG=$2; shift 2
OUT=$(realpath -m "$TAG"); rm -rf "$OUT"; mkdir -p "$OUT/rec"
# LOADGEN overrides where the shared generator is (a copy of the project elsewhere)
GEN=${LOADGEN:-$(realpath "$P/../shared/bench/loadgen.mjs")}
PORT=18491; M=http://127.0.0.1:$PORT/metrics
cd $P
PORT=$PORT HOST=127.0.0.1 RECORDINGS_DIR=$OUT/rec LOG_LEVEL=warn taskset -c 0 node "$@" dist/gateway/main.js > $OUT/gw.log 2>&1 &
GW=$!
for i in $(seq 200); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
sleep 1
RSS0=$(awk '/VmRSS/{print $2}' /proc/$GW/status)
LOAD0=$(uptime | sed 's/.*load average: //')
cpu() { awk '{print $14+$15}' /proc/$GW/stat; }
taskset -c 1 node "$GEN" --url ws://127.0.0.1:$PORT/twilio/v1 --streams 1000 --duration 30 --ramp 5 --tick 2 > $OUT/loadgen.json 2>$OUT/loadgen.err &
LG=$!
sleep 8; curl -s $M > $OUT/m0; C0=$(cpu); T0=$(date +%s.%N); F0=$(grep '^gateway_frames_received_total ' $OUT/m0 | awk '{print $2}')
RSSMAX=0
for i in $(seq 10); do sleep 2; r=$(awk '/VmRSS/{print $2}' /proc/$GW/status); [ $r -gt $RSSMAX ] && RSSMAX=$r; echo "$r" >> $OUT/rss; done
curl -s $M > $OUT/m1; C1=$(cpu); T1=$(date +%s.%N); F1=$(grep '^gateway_frames_received_total ' $OUT/m1 | awk '{print $2}')
ACT=$(grep '^gateway_streams_active ' $OUT/m1 | awk '{print $2}')
wait $LG
sleep 1.5
curl -s $M > $OUT/m2
FR=$(grep '^gateway_frames_received_total ' $OUT/m2 | awk '{print $2}')
kill -TERM $GW; wait $GW
SENT=$(python3 -c "import json;print(json.load(open('$OUT/loadgen.json'))['mediaSent'])")
python3 - <<PY
import json
lg=json.load(open('$OUT/loadgen.json'))
def g(f,k):
    for l in open(f):
        if l.startswith(k+' '): return float(l.split()[1])
dt=$T1-$T0
print(f"CAP $TAG: streams opened {lg['opened']}, active in window $ACT; window {dt:.1f}s: loop p99 {g('$OUT/m1','nodejs_eventloop_lag_p99_seconds')*1000:.1f} ms, max {g('$OUT/m1','nodejs_eventloop_lag_max_seconds')*1000:.1f} ms, mean {g('$OUT/m1','nodejs_eventloop_lag_mean_seconds')*1000:.1f} ms; server cpu {($C1-$C0)/dt:.1f}% ; msgs/s counted {($F1-$F0)/dt:.0f}; RSS before {$RSS0/1024:.1f} MiB, max in window {$RSSMAX/1024:.1f} MiB -> {($RSSMAX-$RSS0)/1000:.1f} KiB/stream; sent {lg['mediaSent']} counted {int($FR)} lost {lg['mediaSent']-int($FR)}; loadgen cpu {lg['loadgenCpuPct']}% late p99 {lg['lateMs']['p99']} ms; load before $LOAD0")
PY
echo "load after: $(uptime | sed 's/.*load average: //')"
