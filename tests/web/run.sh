#!/usr/bin/env bash
# Real-browser test of the collector's web UI (issue #11).
#
# Starts the collector (SQLite in a temp dir, HTTP + gRPC on free loopback ports, an api_token),
# runs the agent once against the shared DMTF Redfish mockups served by the test peers
# (rackmount1: serial 437XR1138R2, Placement rack WEB43 U12, 344 W; the PDU mockup, which the
# site map pins to WEB43), then drives headless Debian chromium with playwright-core
# (tests/web/ui.test.mjs): log in with the token, rack WEB43 shows the server at U12 with
# "344 W", device page, exceptions page (resolve), live refresh over /events.
# Screenshots go to target/web-artifacts/.
#
# Needs target/debug/groundtruth-{agent,collector} (it builds nothing). Installs Debian chromium
# (apt) and the npm dependencies when missing. Without the shared mockups
# (GT_REDFISH_SHARED_BASE_PORT unset in the peers' env) it skips loudly with exit 0. With
# GT_REQUIRE_PEERS=1 (CI) a missing chromium or npm dependency fails the run instead of skipping.
# GT_KEEP=1 keeps the temp dir (configs, store, logs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
require="${GT_REQUIRE_PEERS:-0}"
skip_or_fail() {
  if [ "$require" = 1 ]; then
    echo "web UI test: FAILED: $* (GT_REQUIRE_PEERS=1)" >&2
    exit 1
  fi
  echo "web UI test: SKIPPED: $*" >&2
  echo "web UI test: SKIPPED (see above)"
  exit 0
}

peers_env="${GT_PEERS_RUN:-/tmp/gt-peers}/peers.env"
if [ -f "$peers_env" ]; then
  # shellcheck disable=SC1090
  . "$peers_env"
fi
if [ -z "${GT_REDFISH_SHARED_BASE_PORT:-}" ]; then
  echo "web UI test: SKIPPED: the shared Redfish mockups are not served (GT_REDFISH_SHARED_BASE_PORT unset in $peers_env; ../shared absent?)" >&2
  echo "web UI test: SKIPPED (see above)"
  exit 0
fi

for b in agent collector; do
  if [ ! -x "target/debug/groundtruth-$b" ]; then
    echo "web UI test: target/debug/groundtruth-$b missing; run 'cargo build --workspace --bins' first" >&2
    exit 1
  fi
done

chromium_bin="${GT_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium_bin" ]; then
  echo "==> installing Debian chromium (apt)"
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }) > /tmp/gt-web-apt.log 2>&1 || true
  fi
  [ -x "$chromium_bin" ] || skip_or_fail "no chromium at $chromium_bin (apt-get install chromium; log /tmp/gt-web-apt.log)"
fi
if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
  command -v npm > /dev/null || skip_or_fail "npm not installed"
  echo "==> installing npm dependencies (tests/web, playwright-core only)"
  (cd "$here" && npm ci --no-audit --no-fund) || skip_or_fail "npm ci failed in tests/web"
fi

tmp="$(mktemp -d /tmp/gt-web.XXXXXX)"
collector_pid=""
cleanup() {
  if [ -n "$collector_pid" ]; then kill "$collector_pid" 2> /dev/null || true; wait "$collector_pid" 2> /dev/null || true; fi
  if [ "${GT_KEEP:-0}" = 1 ]; then echo "web UI test: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc_port="$(free_port)"
http_port="$(free_port)"
while [ "$http_port" = "$grpc_port" ]; do http_port="$(free_port)"; done
token="web-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
umask 077
printf '%s\n' "$token" > "$tmp/api.token"

# The site map: WEB43 as the operator knows it, the PDU mockup pinned there (0U), and a rack
# whose names are hostile markup (must show as text).
cat > "$tmp/site-map.toml" <<TOML
[[rack]]
site = "WEBDC"
room = "35"
name = "WEB43"
height = 42

[[rack]]
site = "WEBDC"
room = "<img src=x onerror=window.__gtXss=1>"
name = "X<b>1</b>"
height = 12

[[device]]
serial = "29347ZT536"
site = "WEBDC"
rack = "WEB43"
TOML
cat > "$tmp/collector.toml" <<TOML
[collector]
listen_grpc = "127.0.0.1:$grpc_port"
listen_http = "127.0.0.1:$http_port"
api_token = { file = "$tmp/api.token" }
database = "$tmp/collector.db"
default_site = "WEBDC"

[location]
site_map = "$tmp/site-map.toml"
TOML
cat > "$tmp/agent.toml" <<TOML
[agent]
id = "web-test-agent"
site = "WEBDC"
state_dir = "$tmp/agent-state"

[collector]
grpc = "http://127.0.0.1:$grpc_port"

[defaults]
interval = "60s"
timeout = "5s"

[[targets]]
name = "dmtf-rackmount1"
url = "redfish://127.0.0.1:$GT_REDFISH_SHARED_BASE_PORT?insecure"

[[targets]]
name = "dmtf-pdu"
url = "redfish://127.0.0.1:$((GT_REDFISH_SHARED_BASE_PORT + 1))?insecure"
TOML

echo "==> starting the collector (gRPC :$grpc_port, HTTP :$http_port, store $tmp/collector.db)"
target/debug/groundtruth-collector serve --config "$tmp/collector.toml" > "$tmp/collector.log" 2>&1 &
collector_pid=$!
for _ in $(seq 100); do
  (exec 3<> "/dev/tcp/127.0.0.1/$http_port") 2> /dev/null && break
  sleep 0.1
done
(exec 3<> "/dev/tcp/127.0.0.1/$http_port") 2> /dev/null || { cat "$tmp/collector.log" >&2; echo "web UI test: collector did not start" >&2; exit 1; }

echo "==> agent run --once against the DMTF rackmount1 and PDU mockups (:$GT_REDFISH_SHARED_BASE_PORT, :$((GT_REDFISH_SHARED_BASE_PORT + 1)))"
target/debug/groundtruth-agent run --once --config "$tmp/agent.toml" > "$tmp/agent.log" 2>&1 || { cat "$tmp/agent.log" >&2; echo "web UI test: agent run failed" >&2; exit 1; }
target/debug/groundtruth-collector devices --config "$tmp/collector.toml"

# An exception a NetBox sync pass would raise for the PDU (no NetBox here, and the collector's own
# checks leave other kinds alone), with hostile text.
python3 - "$tmp/collector.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("INSERT INTO exceptions (device_key, kind, detail, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)",
           ("serial:29347ZT536", "duplicate_serial",
            "NetBox devices #12 and #31 both carry serial 29347ZT536 <script>window.__gtXss=2</script>",
            "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z"))
db.commit()
PY

mkdir -p target/web-artifacts
echo "==> headless chromium ($chromium_bin) with playwright-core"
GT_WEB_URL="http://127.0.0.1:$http_port" GT_WEB_TOKEN="$token" GT_CHROMIUM="$chromium_bin" \
  GT_WEB_ARTIFACTS="$root/target/web-artifacts" GT_WEB_TMP="$tmp" \
  GT_AGENT_CMD="$root/target/debug/groundtruth-agent run --once --config $tmp/agent.toml" \
  node "$here/ui.test.mjs"
echo "web UI test: OK (screenshots in target/web-artifacts/)"
