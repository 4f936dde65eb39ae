#!/usr/bin/env bash
# Collector ingest benchmark (issue #9), SQLite and PostgreSQL side by side in one run:
#
#  * readings per second ingested AND committed: the real collector binary (`serve`) takes
#    batches over its gRPC ingest (Ingest.Stream, one stream per simulated agent, each batch
#    acknowledged only after its transaction committed) from tests/examples/gt-ingest.rs;
#  * reference: the database's own client (sqlite3 / psql) inserting the same number of reading
#    rows in the same number of transactions from the same number of parallel clients — the
#    ceiling of "rows committed per second" on this disk, without gRPC, protobuf, identity
#    upserts or the latest-value table the collector also maintains;
#  * the collector's RSS (/proc/PID/status VmRSS) idle, then holding GT_INGEST_STATE_DEVICES
#    distinct devices' state, then after one GET /api/devices listing them all (VmHWM = peak).
#
# Prints a table, writes bench/results-ingest.json. Figures, not assertions; not part of CI.
#
#   bench/ingest.sh
#
# Needs: the test PostgreSQL (GT_PG_URL in $GT_PEERS_RUN/peers.env, written by
# tests/peers/netbox/start.sh; without it only SQLite is measured), sqlite3, psql, curl, python3.
# Builds groundtruth-collector and the gt-ingest example in release once.
# Knobs (defaults): GT_INGEST_AGENTS (4) parallel agent streams, GT_INGEST_BATCHES (100) batches
# per agent, GT_INGEST_DEVICES (10) devices per batch, GT_INGEST_READINGS (10) readings per device,
# GT_INGEST_STATE_DEVICES (10000) distinct devices for the memory run (5 readings each, 100 per
# batch), GT_INGEST_BACKENDS ("sqlite postgres").
set -euo pipefail
cd "$(dirname "$0")/.."
run="${GT_PEERS_RUN:-/tmp/gt-peers}"
# shellcheck disable=SC1091
if [ -f "$run/peers.env" ]; then set -a; . "$run/peers.env"; set +a; fi
agents="${GT_INGEST_AGENTS:-4}"
batches="${GT_INGEST_BATCHES:-100}"
devices="${GT_INGEST_DEVICES:-10}"
readings="${GT_INGEST_READINGS:-10}"
state_devices="${GT_INGEST_STATE_DEVICES:-10000}"
backends="${GT_INGEST_BACKENDS:-sqlite postgres}"
state_per_batch=100
state_batches=$(((state_devices + state_per_batch - 1) / state_per_batch))

cargo build --release --locked -p groundtruth-collector --bin groundtruth-collector \
    -p groundtruth-tests --example gt-ingest >&2
collector=target/release/groundtruth-collector
push=target/release/examples/gt-ingest
work=$(mktemp -d)
schema="gt_bench_$$"
cpid=""
cleanup() {
    if [ -n "$cpid" ]; then kill "$cpid" 2>/dev/null || true; wait "$cpid" 2>/dev/null || true; fi
    if [ -n "${GT_PG_URL:-}" ]; then psql "$GT_PG_URL" -qtAX -c "drop schema if exists $schema cascade" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
log() { echo "[ingest] $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# start_collector NAME DATABASE [PASSWORD_FILE]: the release binary, fresh database; sets
# $cpid, $grpc, $http.
start_collector() {
    grpc="127.0.0.1:$(free_port)"; http="127.0.0.1:$(free_port)"
    {
        printf '[collector]\nlisten_grpc = "%s"\nlisten_http = "%s"\ndatabase = "%s"\n' "$grpc" "$http" "$2"
        if [ -n "${3:-}" ]; then printf 'database_password = { file = "%s" }\n' "$3"; fi
    } > "$work/$1.toml"
    "$collector" --log warn serve --config "$work/$1.toml" 2> "$work/$1.log" &
    cpid=$!
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/${grpc%:*}/${grpc##*:}") 2>/dev/null; then return 0; fi
        kill -0 "$cpid" 2>/dev/null || { cat "$work/$1.log" >&2; exit 1; }
        sleep 0.05
    done
    log "collector $1 did not listen on $grpc"; cat "$work/$1.log" >&2; exit 1
}
stop_collector() { kill "$cpid"; wait "$cpid" 2>/dev/null || true; cpid=""; }

# ref_sql CLIENT_INDEX: the reference workload of one client, as SQL (one INSERT per reading
# row, one transaction per batch).
ref_sql() {
    awk -v c="$1" -v b="$batches" -v d="$devices" -v r="$readings" 'BEGIN {
        for (i = 1; i <= b; i++) {
            print "BEGIN;";
            for (j = 0; j < d; j++) for (k = 0; k < r; k++)
                printf "INSERT INTO readings_ref VALUES (%d, %cpower%c, %cW%c, %d.5, %c2026-01-01T00:00:%02d.000Z%c, %c%c, %d, %c%c);\n", c * 1000 + j, 39, 39, 39, 39, i, 39, k % 60, 39, 39, 39, k, 39, 39;
            print "COMMIT;";
        }
    }'
}
ref_table='CREATE TABLE readings_ref (device_id BIGINT, metric TEXT, unit TEXT, value DOUBLE PRECISION, observed_at TEXT, component_kind TEXT, component_index BIGINT, component_label TEXT);'
for c in $(seq 0 $((agents - 1))); do ref_sql "$c" > "$work/ref-$c.sql"; done
ref_rows=$((agents * batches * devices * readings))

declare -A gt_rate gt_json ref_rate rss_idle rss_state rss_api api_s api_n
for b in $backends; do
    case "$b" in
    sqlite)
        db="$work/sqlite/state.db"; pwf=""
        # reference: sqlite3, WAL + synchronous=FULL like the collector, parallel writers
        ref_db="$work/ref.db"
        sqlite3 "$ref_db" "PRAGMA journal_mode=WAL;" "$ref_table" >/dev/null
        t0=$(now)
        for c in $(seq 0 $((agents - 1))); do
            { printf '.timeout 60000\nPRAGMA synchronous=FULL;\n'; cat "$work/ref-$c.sql"; } | sqlite3 "$ref_db" >/dev/null &
        done
        wait
        t1=$(now)
        n=$(sqlite3 "$ref_db" 'select count(*) from readings_ref')
        ;;
    postgres)
        if [ -z "${GT_PG_URL:-}" ]; then log "SKIP postgres: GT_PG_URL not set (start tests/peers/netbox/start.sh)"; continue; fi
        psql "$GT_PG_URL" -qtAX -c "create schema $schema" >/dev/null
        eval "$(python3 - "$GT_PG_URL" "$schema" <<'EOF'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
netloc = (u.quote(u.unquote(p.username or "")) + "@" if p.username else "") + p.hostname + (f":{p.port}" if p.port else "")
q = "options=" + u.quote(f"-c search_path={sys.argv[2]}")
print("pg_url=" + u.urlunsplit((p.scheme, netloc, p.path, q, "")))
print("pg_pass=" + u.unquote(p.password or ""))
EOF
)"
        db="$pg_url"; pwf="$work/pg.pass"; printf '%s\n' "$pg_pass" > "$pwf"
        # reference: psql, parallel clients, one transaction per batch
        ref_url="$GT_PG_URL?options=$(python3 -c 'import sys,urllib.parse as u; print(u.quote(sys.argv[1]))' "-c search_path=$schema")"
        psql "$ref_url" -qtAX -c "$ref_table" >/dev/null
        t0=$(now)
        for c in $(seq 0 $((agents - 1))); do psql "$ref_url" -qtAX -f "$work/ref-$c.sql" >/dev/null & done
        wait
        t1=$(now)
        n=$(psql "$ref_url" -qtAX -c 'select count(*) from readings_ref')
        ;;
    *) log "unknown backend $b"; exit 2 ;;
    esac
    [ "$n" = "$ref_rows" ] || { log "$b reference stored $n rows, expected $ref_rows"; exit 1; }
    ref_rate[$b]=$(echo "$ref_rows / ($t1 - $t0)" | bc -l)

    start_collector "$b" "$db" "$pwf"
    sleep 1
    rss_idle[$b]=$(rss_kib "$cpid" VmRSS)
    log "$b: $agents agents x $batches batches x $devices devices x $readings readings"
    gt_json[$b]=$("$push" "$grpc" "$agents" "$batches" "$devices" "$readings" 0 rate)
    gt_rate[$b]=$(echo "${gt_json[$b]}" | json '["readings_per_second"]')
    log "$b: $state_devices distinct devices ($state_batches batches of $state_per_batch)"
    "$push" "$grpc" 1 "$state_batches" "$state_per_batch" 5 1 state >/dev/null
    sleep 1
    rss_state[$b]=$(rss_kib "$cpid" VmRSS)
    t0=$(now)
    api_n[$b]=$(curl -sf "http://$http/api/devices" | json '.__len__()')
    t1=$(now)
    api_s[$b]=$(echo "$t1 - $t0" | bc -l)
    rss_api[$b]=$(rss_kib "$cpid" VmHWM)
    stop_collector
    want=$((agents * devices + state_batches * state_per_batch))
    [ "${api_n[$b]}" = "$want" ] || { log "$b: /api/devices listed ${api_n[$b]} devices, expected $want"; exit 1; }
done

mib() { [ -n "${1:-}" ] && printf '%.1f' "$(echo "$1 / 1024" | bc -l)" || printf -- '-'; }
num() { [ -n "${1:-}" ] && printf '%.0f' "$1" || printf -- '-'; }
ratio() { [ -n "${1:-}" ] && [ -n "${2:-}" ] && printf '%.2f' "$(echo "$1 / $2" | bc -l)" || printf -- '-'; }
printf '\n%-62s | %14s | %14s\n' "collector ingest ($ref_rows readings, $((agents * batches)) batches, $agents agents)" SQLite PostgreSQL
printf '%s\n' "---------------------------------------------------------------|----------------|---------------"
printf '%-62s | %14s | %14s\n' "groundtruth: readings/s ingested and committed (gRPC)" "$(num "${gt_rate[sqlite]:-}")" "$(num "${gt_rate[postgres]:-}")"
printf '%-62s | %14s | %14s\n' "reference: sqlite3 / psql rows/s, same rows and commits" "$(num "${ref_rate[sqlite]:-}")" "$(num "${ref_rate[postgres]:-}")"
printf '%-62s | %14s | %14s\n' "ratio groundtruth / reference" "$(ratio "${gt_rate[sqlite]:-}" "${ref_rate[sqlite]:-}")" "$(ratio "${gt_rate[postgres]:-}" "${ref_rate[postgres]:-}")"
printf '%-62s | %14s | %14s\n' "collector RSS idle (MiB)" "$(mib "${rss_idle[sqlite]:-}")" "$(mib "${rss_idle[postgres]:-}")"
printf '%-62s | %14s | %14s\n' "collector RSS holding $((state_batches * state_per_batch)) devices' state (MiB)" "$(mib "${rss_state[sqlite]:-}")" "$(mib "${rss_state[postgres]:-}")"
printf '%-62s | %14s | %14s\n' "collector peak RSS incl. GET /api/devices (MiB)" "$(mib "${rss_api[sqlite]:-}")" "$(mib "${rss_api[postgres]:-}")"
printf '%-62s | %14s | %14s\n' "GET /api/devices, all devices (s)" "$(printf '%.2f' "${api_s[sqlite]:-0}")" "$(printf '%.2f' "${api_s[postgres]:-0}")"

out=bench/results-ingest.json
{
    printf '{\n "machine": {"nproc": %s, "cpu": "%s", "kernel": "%s"},\n' "$(nproc)" \
        "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(uname -r)"
    printf ' "workload": {"agents": %s, "batches_per_agent": %s, "devices_per_batch": %s, "readings_per_device": %s, "state_devices": %s},\n' \
        "$agents" "$batches" "$devices" "$readings" "$((state_batches * state_per_batch))"
    first=1
    for b in $backends; do
        [ -n "${gt_rate[$b]:-}" ] || continue
        [ $first = 1 ] || printf ',\n'
        first=0
        printf ' "%s": {"groundtruth": %s, "reference_rows_per_second": %.0f, "ratio": %s, "rss_kib_idle": %s, "rss_kib_state": %s, "rss_kib_peak_after_api": %s, "api_devices_seconds": %.3f, "api_devices": %s}' \
            "$b" "${gt_json[$b]}" "${ref_rate[$b]}" "$(ratio "${gt_rate[$b]}" "${ref_rate[$b]}")" \
            "${rss_idle[$b]}" "${rss_state[$b]}" "${rss_api[$b]}" "${api_s[$b]}" "${api_n[$b]}"
    done
    printf '\n}\n'
} > "$out"
log "wrote $out"
