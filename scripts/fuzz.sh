#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each, one after another
# (one libFuzzer job each), and prints the executions per target.
# New interesting inputs go to fuzz/target/fuzz-work/<target>/ (not
# committed); the committed seeds in fuzz/corpus/<target>/ are only read.
# Crashes land in fuzz/artifacts/<target>/ and make the script fail.
# The toolchain is stable, so cargo-fuzz's nightly flags need
# RUSTC_BOOTSTRAP=1. Extra libFuzzer flags: FUZZ_ARGS="-max_len=16384".
# Usage: scripts/fuzz.sh SECONDS [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# Niced: fuzzing takes a whole core for as long as it is asked to, and
# shares the machine with builds.
nice -n 19 cargo fuzz build

work=fuzz/target/fuzz-work
summary=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  log="$work/$t.log"
  echo "== $t: ${secs} s (log: $log)"
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  if nice -n 19 cargo fuzz run "$t" "$work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1; then
    result=ok
  else
    result="FAILED: $(grep -o 'Test unit written to .*' "$log" | tail -1 || true)"
    failed=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  corpus=$(find "$work/$t" -type f | wc -l)
  summary+=("$(printf '%-10s %8s s %14s executions %7s in corpus  %s' \
    "$t" "$secs" "${execs:-?}" "$corpus" "$result")")
done

echo
printf '%s\n' "${summary[@]}"
exit "$failed"
