#!/usr/bin/env bash
# The project's test command (README: "run every test"). On a fresh machine it installs what the
# tests need (Debian packages, PyPI packages, crates), starts every test peer on 127.0.0.1
# (tests/peers/start-all.sh, NetBox included), then runs, in order:
#   cargo fmt --check; cargo clippy --all-targets -D warnings; cargo build; cargo test (all suites);
#   the .deb install test (tests/packaging.sh); the web UI in headless chromium (tests/web/run.sh);
#   the fuzz smoke (tests/fuzz.sh: every cargo-fuzz target for GT_FUZZ_SECONDS; GT_SKIP_FUZZ=1
#   skips it)
# with GT_REQUIRE_PEERS=1, so a peer that failed to come up (or a missing chromium) fails the run
# instead of skipping.
# Peers are left running for the next run (stop them with tests/peers/stop-all.sh).
#
# Environment: GT_PEERS_RUN (default /tmp/gt-peers), GT_SKIP_PEERS=1 (use already running peers),
# GT_TEST_ARGS (extra args for cargo test, e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

if [ "${GT_SKIP_PEERS:-0}" != 1 ]; then
  step "Starting test peers (tests/peers/start-all.sh, NetBox included)"
  GT_PEERS_NETBOX=1 tests/peers/start-all.sh
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (binaries used by the CLI tests)"
cargo build --workspace --bins --locked

step "cargo test (unit tests, protocol suites against the peers, end to end)"
mkdir -p "${GT_PEERS_RUN:-/tmp/gt-peers}"
set +e
# shellcheck disable=SC2086
GT_REQUIRE_PEERS=1 cargo test --workspace --locked ${GT_TEST_ARGS:-} 2>&1 | tee "${GT_PEERS_RUN:-/tmp/gt-peers}/last-test-run.log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" = 0 ]; then
  step "package install test (tests/packaging.sh)"
  tests/packaging.sh || status=$?
fi
if [ "$status" = 0 ]; then
  step "web UI in headless chromium (tests/web/run.sh; screenshots in target/web-artifacts/)"
  GT_REQUIRE_PEERS=1 tests/web/run.sh || status=$?
fi
if [ "$status" = 0 ] && [ "${GT_SKIP_FUZZ:-0}" != 1 ]; then
  step "fuzz smoke (tests/fuzz.sh)"
  tests/fuzz.sh || status=$?
fi
step "done (exit $status)"
exit "$status"
