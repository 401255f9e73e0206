#!/bin/bash
# Capacity at 1 000 both_tracks streams with the shared, light load generator
# (../shared/bench/loadgen.mjs), gateway (dist/, run `npm run build` first) on CPU 0, generator on
# CPU 1. Event-loop delay p99 over t = 8..28 s (prom-client resets its histogram at each scrape),
# RSS per stream = (highest RSS in that window - RSS before) / 1000, lost = sent - received.
# usage: loadtest/capacity-shared-loadgen.sh <project dir> <output dir> [node flags...]
# Also, from loadtest/loop-delay-probe.mjs (loaded with --import, same window): loop delay p99.9
# and max, and the GC pauses in the window. A run counts only if the generator kept pace: at
# least 95 000 media msgs/s counted in the window and the generator's own lateness p99 <= 250 ms
# (a starved generator sends catch-up bursts, and the gateway's delay then measures those).
# (run it under flock /work/bench.lock; see BENCHMARKS.md)
PROBE=$(realpath "$(dirname "$0")/loop-delay-probe.mjs")
P=$1; TAG=$2; shift 2
OUT=$(realpath -m "$TAG"); rm -rf "$OUT"; mkdir -p "$OUT/rec"
# LOADGEN overrides where the shared generator is (a copy of the project elsewhere)
GEN=${LOADGEN:-$(realpath "$P/../shared/bench/loadgen.mjs")}
PORT=18491; M=http://127.0.0.1:$PORT/metrics
cd $P
PORT=$PORT HOST=127.0.0.1 RECORDINGS_DIR=$OUT/rec LOG_LEVEL=warn LOOP_PROBE_OUT=$OUT/probe.json taskset -c 0 node --import "$PROBE" "$@" dist/gateway/main.js > $OUT/gw.log 2>&1 &
GW=$!
for i in $(seq 200); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
sleep 1
RSS0=$(awk '/VmRSS/{print $2}' /proc/$GW/status)
LOAD0=$(uptime | sed 's/.*load average: //')
cpu() { awk '{print $14+$15}' /proc/$GW/stat; }
taskset -c 1 node "$GEN" --url ws://127.0.0.1:$PORT/twilio/v1 --streams 1000 --duration 30 --ramp 5 --tick 2 > $OUT/loadgen.json 2>$OUT/loadgen.err &
LG=$!
sleep 8; kill -USR2 $GW; curl -s $M > $OUT/m0; C0=$(cpu); T0=$(date +%s.%N); F0=$(grep '^gateway_frames_received_total ' $OUT/m0 | awk '{print $2}')
RSSMAX=0
for i in $(seq 10); do sleep 2; r=$(awk '/VmRSS/{print $2}' /proc/$GW/status); [ $r -gt $RSSMAX ] && RSSMAX=$r; echo "$r" >> $OUT/rss; done
kill -USR2 $GW; curl -s $M > $OUT/m1; C1=$(cpu); T1=$(date +%s.%N); F1=$(grep '^gateway_frames_received_total ' $OUT/m1 | awk '{print $2}')
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
pr=json.load(open('$OUT/probe.json'))
rate=($F1-$F0)/dt
ok=rate>=95000 and lg['lateMs']['p99']<=250
print(f"PROBE $TAG: loop p50 {pr['p50']} p99 {pr['p99']} p99.9 {pr['p999']} max {pr['max']} ms; GC in window: {pr['scavenges']['n']} scavenges ({pr['scavenges']['sumMs']} ms, max {pr['scavenges']['maxMs']}), {pr['markCompacts']['n']} mark-compacts ({pr['markCompacts']['sumMs']} ms, max {pr['markCompacts']['maxMs']}); generator {'kept pace' if ok else 'DID NOT keep pace (run not valid)'}")
print(f"CAP $TAG: streams opened {lg['opened']}, active in window $ACT; window {dt:.1f}s: loop p99 {g('$OUT/m1','nodejs_eventloop_lag_p99_seconds')*1000:.1f} ms, max {g('$OUT/m1','nodejs_eventloop_lag_max_seconds')*1000:.1f} ms, mean {g('$OUT/m1','nodejs_eventloop_lag_mean_seconds')*1000:.1f} ms; server cpu {($C1-$C0)/dt:.1f}% ; msgs/s counted {($F1-$F0)/dt:.0f}; RSS before {$RSS0/1024:.1f} MiB, max in window {$RSSMAX/1024:.1f} MiB -> {($RSSMAX-$RSS0)/1000:.1f} KiB/stream; sent {lg['mediaSent']} counted {int($FR)} lost {lg['mediaSent']-int($FR)}; loadgen cpu {lg['loadgenCpuPct']}% late p99 {lg['lateMs']['p99']} ms; load before $LOAD0")
PY
echo "load after: $(uptime | sed 's/.*load average: //')"
