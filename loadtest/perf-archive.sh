#!/bin/bash
# The media path's perf ratio with the archive pool working vs idle (BENCHMARKS.md, issue 13),
# interleaved, 3 each, with the shared tool: run it under the bench lock.
#   flock /work/bench.lock loadtest/perf-archive.sh [BENCH_DIR=/work/shared/bench]
# perf-ratio.mjs starts `npm start` in --project: a stand-in project whose start seeds
# perf-ratio's RECORDINGS_DIR with 300 five-minute recordings waiting for their Opus archive
# (loadtest/archive-backlog.ts) and then runs this gateway, so the pool (ARCHIVE_CONCURRENCY=1)
# works during the whole measured window; ARCHIVE_FORMAT=none: the same folder, no archiving.
set -eu
WT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_DIR:-/work/shared/bench}
SHIM=$(mktemp -d /tmp/archive-shim-XXXXXX)
trap 'rm -rf "$SHIM"' EXIT
mkdir -p "$SHIM/node_modules"
printf '{ "name": "archive-backlog-shim", "private": true, "scripts": { "start": "cd %s && exec node --import tsx loadtest/archive-backlog.ts start" } }\n' "$WT" > "$SHIM/package.json"
cd "$BENCH"
for i in 1 2 3; do
  for fmt in none opus; do
    echo "== run $i ARCHIVE_FORMAT=$fmt $(uptime)"
    NODE_ID=bench ARCHIVE_FORMAT=$fmt ARCHIVE_CONCURRENCY=1 node perf-ratio.mjs --project "$SHIM" --streams 300 --duration 20 2>&1 | tail -1 || true
  done
done
echo "== end $(uptime)"
