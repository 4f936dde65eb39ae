#!/usr/bin/env bash
# Package install test (issue #11): build the agent and collector .debs with cargo-deb, install
# them, verify the systemd units offline, run both binaries as the packaged user with the packaged
# configs, then remove and purge. Needs root (CI and the dev machines run as root).
#
# GT_DEB_PROFILE=release builds release packages (what ships); the test default reuses the dev
# build that tests/run.sh already made, which exercises the same packaging metadata.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${GT_DEB_PROFILE:-dev}"
out=target/debian
fail() { echo "packaging test FAILED: $*" >&2; exit 1; }

command -v cargo-deb >/dev/null || cargo install cargo-deb --version 3.8.0 --locked
[ "$(id -u)" = 0 ] || fail "needs root to install packages"
rm -rf "$out"
for p in agent collector; do
    cargo deb -p "groundtruth-$p" --profile "$profile" --no-strip --output "$out/" >/dev/null \
        || fail "cargo deb -p groundtruth-$p"
done
ls -1 "$out"/*.deb

# Remove leftovers of an earlier run, then install both.
dpkg --purge groundtruth-agent groundtruth-collector >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$out"/groundtruth-agent_*.deb "./$out"/groundtruth-collector_*.deb >/dev/null \
    || fail "apt-get install of the packages"

for p in agent collector; do
    unit=/lib/systemd/system/groundtruth-$p.service
    [ -f "$unit" ] || unit=/usr/lib/systemd/system/groundtruth-$p.service
    [ -f "$unit" ] || fail "unit file of groundtruth-$p not installed"
    systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
    grep -q '^ProtectSystem=strict' "$unit" || fail "$unit is not hardened"
    [ "$(stat -c '%a %G' /etc/groundtruth/$p.toml)" = "640 groundtruth" ] || fail "/etc/groundtruth/$p.toml must be 640 root:groundtruth"
    runuser -u groundtruth -- "groundtruth-$p" check-config "/etc/groundtruth/$p.toml" || fail "packaged $p config does not validate"
done
id groundtruth >/dev/null || fail "user groundtruth missing"
[ "$(stat -c '%a %G' /etc/groundtruth/secrets)" = "750 groundtruth" ] || fail "/etc/groundtruth/secrets must be 750 root:groundtruth"

# Start the collector with the packaged config, as systemd would (StateDirectory created here).
install -d -o groundtruth -g groundtruth -m 0750 /var/lib/groundtruth-collector
runuser -u groundtruth -- groundtruth-collector serve --config /etc/groundtruth/collector.toml >/tmp/gt-packaging-collector.log 2>&1 &
pid=$!
ok=0
for _ in $(seq 50); do
    if curl -fsS http://127.0.0.1:9470/healthz >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.1
done
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[ "$ok" = 1 ] || { cat /tmp/gt-packaging-collector.log >&2; fail "packaged collector did not answer /healthz"; }
[ -f /var/lib/groundtruth-collector/state.db ] || fail "collector did not create its store under /var/lib"

dpkg --remove groundtruth-agent groundtruth-collector >/dev/null || fail "dpkg --remove"
[ ! -e /usr/bin/groundtruth-agent ] || fail "binary left after remove"
[ -f /etc/groundtruth/agent.toml ] || fail "conffile must survive remove (purge deletes it)"
dpkg --purge groundtruth-agent groundtruth-collector >/dev/null || fail "dpkg --purge"
[ ! -e /etc/groundtruth ] || fail "/etc/groundtruth left after purging both packages"
rm -rf /var/lib/groundtruth-collector
echo "packaging test passed: 2 packages built, installed, verified, started, removed"
