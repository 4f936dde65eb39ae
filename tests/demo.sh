#!/usr/bin/env bash
# The main job, end to end on this machine (README: "run the main job"):
#   1. starts the device peers it needs (net-snmp snmpd, a Redfish BMC via sushy-tools) and
#      NetBox 4.7, all on 127.0.0.1 (tests/peers/start-all.sh; first run installs them);
#   2. builds the agent and the collector;
#   3. starts the collector on its embedded default (SQLite under .gt-run/), syncing to NetBox;
#   4. runs one agent round (poll both devices, stream over gRPC), then shows what was found,
#      where the collector places it, and what was written to NetBox;
#   5. runs a second round to show that nothing changes in NetBox the second time.
# Everything it writes stays in .gt-run/ (configs, SQLite store, logs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
run="$root/.gt-run"
mkdir -p "$run"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "==> Starting peers: snmpd, redfish, netbox (first run installs them; NetBox takes minutes cold)"
tests/peers/start-all.sh snmpd redfish netbox
# shellcheck disable=SC1091
. "${GT_PEERS_RUN:-/tmp/gt-peers}/peers.env"

echo "==> Building groundtruth-agent and groundtruth-collector (release; a cold build takes minutes)"
# Cargo's own progress, one line per crate compiled, so a long cold build is visibly moving.
cargo build --release --locked --bins
bin="$root/target/release"

umask 077
printf '%s\n' "$GT_SNMPD_COMMUNITY" > "$run/snmpd.community"
printf '%s\n' "$GT_NETBOX_TOKEN" > "$run/netbox.token"
grpc_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$run/collector.toml" <<TOML
[collector]
listen_grpc = "127.0.0.1:$grpc_port"
database = "$run/collector.db"
default_site = "DC1"

[netbox]
url = "$GT_NETBOX_URL"
token = { file = "$run/netbox.token" }
device_role = "server"
create_missing = true
sync_interval = "1s"
TOML
cat > "$run/agent.toml" <<TOML
[agent]
id = "demo-agent"
site = "DC1"
state_dir = "$run/agent-state"

[collector]
grpc = "http://127.0.0.1:$grpc_port"

[defaults]
interval = "60s"
timeout = "2s"

[[targets]]
name = "snmpd-loopback"
url = "snmp://$GT_SNMPD_ADDR"
secret = { file = "$run/snmpd.community" }

[[targets]]
name = "bmc-gt-web-01"
url = "${GT_REDFISH_URL/https:/redfish:}"
ca_file = "$GT_REDFISH_CA"
TOML

echo "==> Starting the collector (gRPC 127.0.0.1:$grpc_port, SQLite $run/collector.db)"
"$bin/groundtruth-collector" serve --config "$run/collector.toml" > "$run/collector.log" 2>&1 &
collector_pid=$!
trap 'kill $collector_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$grpc_port") 2>/dev/null && break
  sleep 0.1
done

echo "==> Agent round 1: polling snmpd and the Redfish BMC, streaming to the collector"
"$bin/groundtruth-agent" run --once --config "$run/agent.toml"

echo
echo "==> What the collector knows (groundtruth-collector devices)"
"$bin/groundtruth-collector" devices --config "$run/collector.toml"
# The collector's own pass (debounced after the agent's batch) writes this round to NetBox; on a
# cold NetBox the first one takes a while. Wait for it to be logged, with a deadline.
echo
echo "==> Waiting for the collector's sync pass (collector.log)"
waited=0
until grep -qE "NetBox sync pass (done|failed)" "$run/collector.log"; do
  if [ "$waited" -ge 300 ]; then
    echo "  no sync pass logged after ${waited} s; the sync below waits for it (one writer per NetBox)"
    break
  fi
  if [ $((waited % 10)) = 0 ] && [ "$waited" -gt 0 ]; then echo "  ... ${waited} s"; fi
  sleep 1
  waited=$((waited + 1))
done
echo
echo "==> What the collector's sync pass did in NetBox (from .gt-run/collector.log)"
grep -E "NetBox (change|sync pass)" "$run/collector.log" | sed -E 's/^[^ ]+ +//' || echo "  (no sync pass logged yet)"
echo
echo "==> groundtruth-collector sync: NetBox against the collector now"
# Never races the collector's own pass: both take NetBox's write lease, this one waits for it.
"$bin/groundtruth-collector" sync --wait 5m --config "$run/collector.toml"
echo
echo "==> Open exceptions (what the collector refused to guess)"
"$bin/groundtruth-collector" exceptions --config "$run/collector.toml"

echo
echo "==> Agent round 2, then the same sync: NetBox must need zero writes"
"$bin/groundtruth-agent" run --once --config "$run/agent.toml" 2>/dev/null
"$bin/groundtruth-collector" sync --wait 5m --config "$run/collector.toml"
echo
echo "NetBox web UI: $GT_NETBOX_URL (login admin / see tests/peers/README.md). Logs and state: $run"
