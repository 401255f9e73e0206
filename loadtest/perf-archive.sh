#!/bin/bash
# The media path's perf ratio with the archive pool working vs idle (BENCHMARKS.md, issue 13),
# interleaved, $ROUNDS rounds (default 3), with the shared tool: run it under the bench lock.
#   flock /work/bench.lock loadtest/perf-archive.sh [BASE_WORKTREE]   (BENCH_DIR=/work/shared/bench, ROUNDS=3)
# perf-ratio.mjs starts `npm start` in --project (passing its own environment through): a
# stand-in project whose start seeds perf-ratio's RECORDINGS_DIR with 300 five-minute recordings
# waiting for their Opus archive (loadtest/archive-backlog.ts) and then runs this gateway, so the
# pool (ARCHIVE_CONCURRENCY=1) works during the whole measured window; ARCHIVE_FORMAT=none: the
# same folder, no archiving. With BASE_WORKTREE (another checkout, e.g. main) each round also runs
# its gateway with ARCHIVE_FORMAT=opus: before and after in one session. After each run the line
# "N archives made in T s" says the pool was busy (ARCHIVE_BACKLOG_REPORT).
set -eu
WT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${1:-}
BENCH=${BENCH_DIR:-/work/shared/bench}
SHIM=$(mktemp -d /tmp/archive-shim-XXXXXX)
REPORT=$SHIM/report.log
trap 'rm -rf "$SHIM"' EXIT
shim() { # shim DIR TREE
  mkdir -p "$1/node_modules"
  printf '{ "name": "archive-backlog-shim", "private": true, "scripts": { "start": "cd %s && exec node --import tsx loadtest/archive-backlog.ts start" } }\n' "$2" > "$1/package.json"
}
shim "$SHIM/this" "$WT"
[ -n "$BASE" ] && shim "$SHIM/base" "$(cd "$BASE" && pwd)"
cd "$BENCH"
[ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null
for i in $(seq "${ROUNDS:-3}"); do
  for run in none:this opus:this ${BASE:+opus:base}; do
    fmt=${run%%:*} tree=${run##*:}
    : > "$REPORT"
    echo "== run $i ARCHIVE_FORMAT=$fmt code=$tree $(uptime)"
    ARCHIVE_BACKLOG_REPORT=$REPORT NODE_ID=bench ARCHIVE_FORMAT=$fmt ARCHIVE_CONCURRENCY=1 \
      node perf-ratio.mjs --project "$SHIM/$tree" --streams 300 --duration 20 2>&1 | tail -1 || true
    cat "$REPORT"
  done
done
echo "== end $(uptime)"
