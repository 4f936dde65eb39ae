#!/usr/bin/env bash
# Fuzz smoke (RELIABILITY.md R11): builds the cargo-fuzz workspace fuzz/ and runs every target for a
# bounded time; any crash, timeout or OOM fails the run, leaving the input in
# fuzz/artifacts/<target>/ (turn it into a unit test beside the parser, then add it to the
# target's corpus so the replay test keeps it).
#
# Only the stable toolchain is installed: cargo-fuzz needs nightly flags (-Zsanitizer), which
# RUSTC_BOOTSTRAP=1 unlocks on stable. Needs `cargo install cargo-fuzz` (done here if missing).
#
# Environment: GT_FUZZ_SECONDS (per target, default 20), GT_FUZZ_TARGETS (space-separated subset),
# GT_FUZZ_JOBS (targets run in parallel, default nproc).
# Longer, by hand: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/corpus/<target> -- -max_total_time=3600
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
seconds="${GT_FUZZ_SECONDS:-20}"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi
started=$(date +%s)
cargo fuzz build
built=$(date +%s)
echo "fuzz build: $((built - started)) s"
targets="${GT_FUZZ_TARGETS:-$(cargo fuzz list)}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
jobs="${GT_FUZZ_JOBS:-$(nproc)}"
run_one() {
  # New inputs go to a scratch copy; the committed corpus stays the seeds.
  local t=$1
  mkdir -p "$work/$t"
  if cargo fuzz run "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=512 -max_len=65536 -timeout=5 \
      -print_final_stats=1 >"$work/$t.log" 2>&1; then
    echo ok >"$work/$t.result"
  else
    echo FAILED >"$work/$t.result"
  fi
}
export -f run_one
export work seconds
# One target per core (libFuzzer is single-threaded); CI runs this after the tests, cores free.
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run_one {}'
status=0
summary=()
for t in $targets; do
  log="$work/$t.log"
  result=$(cat "$work/$t.result" 2>/dev/null || echo FAILED)
  if [ "$result" != ok ]; then
    status=1
    echo "---- $t ----"
    tail -40 "$log"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  summary+=("$(printf '%-18s %-6s execs=%-10s exec/s=%-8s %s' "$t" "$result" "${execs:-?}" "${rate:-?}" "${cov:-}")")
done
echo
echo "fuzz summary (${seconds} s per target; build $((built - started)) s, total $(( $(date +%s) - started )) s):"
printf '  %s\n' "${summary[@]}"
exit "$status"
