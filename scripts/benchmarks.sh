#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: the gRPC figures from `rung bench` (server pinned
# to core 0, load generator to core 1) at concurrency 1 and 4 x 64, each
# scenario as a ratio to Health/Check, then the criterion benches.
# Usage: scripts/benchmarks.sh [seconds per scenario, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
out=BENCHMARKS.md
cargo build --release --quiet

run() {
  ./target/release/rung bench --server-cpu 0 --client-cpu 1 \
    --connections "$1" --in-flight "$2" --warmup 2s --duration "${secs}s" 2>/dev/null
}

criterion_medians() {
  # "name  time: [low median high]" -> "| name | median |"
  cargo bench --quiet --bench "$1" 2>/dev/null |
    awk '/^[a-zA-Z].*\// && !/time:/ {name=$0} /time:/ {
           sub(/^[^[]*\[/, ""); split($0, t, " "); if (name != "") print "| " name " | " t[3] " " t[4] " |"; name=""
         }
         /^store size/ {print "\n" $0 "\n"}'
}

{
  echo "# Benchmarks"
  echo
  echo "Regenerate with \`scripts/benchmarks.sh\` (about $((secs * 14 / 60 + 3)) minutes). Machine: $(nproc) cores,"
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%d)."
  echo "Shared and noisy: compare rows of one run with each other, not across runs."
  echo
  echo "## Recipe"
  echo
  echo "\`rung bench\` starts \`rung serve\` on a fresh data directory pinned to core 0 with"
  echo "\`taskset\`, pins itself to core 1, warms up 2 s, then measures each scenario for ${secs} s in a"
  echo "closed loop. Server CPU per call comes from \`/proc/<pid>/stat\` (user + system) before"
  echo "and after. Units: calls, or events (Track, TrackStream), or visitors (ScoreBatch)."
  echo
  echo '```sh'
  echo "./target/release/rung bench --server-cpu 0 --client-cpu 1 --connections 1 --in-flight 1"
  echo "./target/release/rung bench --server-cpu 0 --client-cpu 1 --connections 4 --in-flight 64"
  echo '```'
  echo
  echo "## Concurrency 1"
  echo
  run 1 1
  echo
  echo "## 4 connections x 64 in flight"
  echo
  run 4 64
  echo
  echo "## Pure parts (criterion, medians)"
  echo
  echo "| bench | median |"
  echo "|---|---|"
  criterion_medians scoring
  criterion_medians store
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
