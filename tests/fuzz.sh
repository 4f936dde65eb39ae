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
# GT_FUZZ_JOBS (parallel targets, default 1).
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
status=0
summary=()
for t in $targets; do
  # New inputs go to a scratch copy; the committed corpus stays the seeds.
  mkdir -p "$work/$t"
  log="$work/$t.log"
  if cargo fuzz run "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=512 -max_len=65536 -timeout=5 \
      -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
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
