#!/usr/bin/env bash
# One-run benchmark of a full IPMI inventory poll and a sensors-only poll against the running
# ipmi_sim peer: groundtruth-agent vs ipmitool vs Prometheus' ipmi_exporter (FreeIPMI), if installed.
#   tests/peers/ipmi/bench.sh [N]      (N runs each, default 15; prints min / median / max in ms)
# Each tool opens a fresh RMCP+ session per run (the agent CLI also starts a new process, so its
# SDR cache is cold every time; `groundtruth-agent run` keeps it between polls).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
N="${1:-15}"
source "${GT_PEERS_RUN:-/tmp/gt-peers}/peers.env"
HOST="${GT_IPMI_ADDR%:*}" PORT="${GT_IPMI_ADDR##*:}"
AGENT="${GT_AGENT_BIN:-$ROOT/target/debug/groundtruth-agent}"
PASS_ENC="$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$GT_IPMI_PASS")"
IT=(ipmitool -I lanplus -C 3 -H "$HOST" -p "$PORT" -U "$GT_IPMI_USER" -P "$GT_IPMI_PASS")

stats() { sort -n | awk '{a[NR]=$1} END {printf "min %4d  median %4d  max %4d ms (n=%d)\n", a[1], a[int((NR+1)/2)], a[NR], NR}'; }
timed() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
run() { local label="$1"; shift; printf "%-62s" "$label"; for _ in $(seq "$N"); do timed "$@"; done | stats; }

ipmitool_full() { "${IT[@]}" fru print && "${IT[@]}" sdr list && "${IT[@]}" lan print 1 && "${IT[@]}" chassis status; }

[ -x "$AGENT" ] || { echo "build the agent first: cargo build -p groundtruth-agent" >&2; exit 1; }
run "agent poll (full: FRU+SDR+sensors+LAN+chassis+DCMI)" "$AGENT" poll "ipmi://$GT_IPMI_USER:$PASS_ENC@$GT_IPMI_ADDR" --json --log off
run "ipmitool fru print + sdr list + lan print 1 + chassis status" ipmitool_full
run "ipmitool sdr list (sensors only)" "${IT[@]}" sdr list

if command -v prometheus-ipmi-exporter >/dev/null && command -v curl >/dev/null; then
    TMP="$(mktemp -d)"; trap 'kill "$(cat "$TMP/pid")" 2>/dev/null || true; rm -rf "$TMP"' EXIT
    EPORT="$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')"
    for m in full:'[bmc, ipmi, chassis, dcmi]' sensors:'[ipmi]'; do
        printf '  %s:\n    user: "%s"\n    pass: "%s"\n    driver: LAN_2_0\n    privilege: admin\n    workaround_flags: [opensesspriv]\n    collectors: %s\n' \
            "${m%%:*}" "$GT_IPMI_USER" "$GT_IPMI_PASS" "${m#*:}"
    done | { echo "modules:"; cat; } > "$TMP/exporter.yml"
    prometheus-ipmi-exporter --config.file="$TMP/exporter.yml" --web.listen-address="127.0.0.1:$EPORT" >"$TMP/log" 2>&1 &
    echo $! > "$TMP/pid"
    for _ in $(seq 50); do curl -fs "http://127.0.0.1:$EPORT/" >/dev/null && break; sleep 0.1; done
    curl -fs "http://127.0.0.1:$EPORT/ipmi?target=$GT_IPMI_ADDR&module=sensors" >/dev/null   # FreeIPMI SDR cache warm-up
    run "ipmi_exporter module full (bmc+ipmi+chassis+dcmi)" curl -fs "http://127.0.0.1:$EPORT/ipmi?target=$GT_IPMI_ADDR&module=full"
    run "ipmi_exporter module sensors (ipmi)" curl -fs "http://127.0.0.1:$EPORT/ipmi?target=$GT_IPMI_ADDR&module=sensors"
else
    echo "prometheus-ipmi-exporter not installed (apt-get install prometheus-ipmi-exporter): skipped"
fi
