#!/usr/bin/env bash
# Uplink throughput in readings per second, end to end (published and acknowledged), side by side
# in one run:
#   mosquitto_pub -l QoS 1    the reference: the same number of messages of the same size into
#                             the broker, no subscriber work (a ceiling for the MQTT path)
#   mqtt  -> null subscriber  agent's MqttUplink -> mosquitto -> a subscriber that acks at once
#   mqtt  -> collector        ... -> the collector's MQTT ingest (commit to SQLite, then ack)
#   grpc  -> null server      agent's gRPC uplink -> a server that acks at once
#   grpc  -> collector        ... -> the collector's gRPC ingest (commit to SQLite, then ack)
# Batches are built like the agent's (devices with identity and per-outlet power readings) and
# sent REPLAY batches per delivery, the way the agent drains its spool.
#
# Prints a table and writes bench/results-uplink.json. Not part of CI (figures, no assertions).
#
# Needs: the MQTT test peer (tests/peers/start-all.sh; reads $GT_PEERS_RUN/peers.env:
# GT_MQTT_ADDR, GT_MQTT_USER/PASS, GT_MQTT_COLLECTOR_USER/PASS), mosquitto_pub on PATH. Builds
# tests/examples/gt-uplink.rs in release.
# Knobs: GT_UPLINK_BATCHES (200), GT_UPLINK_DEVICES (100 devices per batch),
#        GT_UPLINK_READINGS (10 readings per device), GT_UPLINK_REPLAY (100 batches per delivery).
set -euo pipefail
cd "$(dirname "$0")/.."
run="${GT_PEERS_RUN:-/tmp/gt-peers}"
# shellcheck disable=SC1091
set -a; . "$run/peers.env"; set +a
batches="${GT_UPLINK_BATCHES:-200}"
devices="${GT_UPLINK_DEVICES:-100}"
readings="${GT_UPLINK_READINGS:-10}"
replay="${GT_UPLINK_REPLAY:-100}"

cargo build --release --locked -p groundtruth-tests --example gt-uplink >&2
bin=target/release/examples/gt-uplink
now() { date +%s.%N; }
field() { echo "$1" | sed "s/.*\"$2\":\([0-9.]*\).*/\1/"; }
out=bench/results-uplink.json
machine=$(printf '{"nproc":%s,"cpu":"%s","kernel":"%s"}' "$(nproc)" \
  "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(uname -r)")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '%s' "$GT_MQTT_PASS" >"$tmp/agent.pass"
printf '%s' "$GT_MQTT_COLLECTOR_PASS" >"$tmp/collector.pass"
host=${GT_MQTT_ADDR%:*}; port=${GT_MQTT_ADDR##*:}
per_batch=$((devices * readings))
total=$((batches * per_batch))

# The reference: as many QoS 1 messages as batches, each the size of one encoded batch.
bytes=$(field "$("$bin" payload "$devices" "$readings")" bytes)
head -c $((batches * (bytes + 1))) /dev/zero | tr '\0' 'x' | fold -w "$bytes" | head -n "$batches" >"$tmp/lines"
t0=$(now)
mosquitto_pub -h "$host" -p "$port" -u "$GT_MQTT_USER" -P "$GT_MQTT_PASS" -q 1 \
  -t groundtruth/bench/uplink-ref -l <"$tmp/lines"
t1=$(now)
ref_s=$(echo "$t1 - $t0" | bc -l)
ref_rps=$(echo "$total / $ref_s" | bc -l)

rows=()
results=()
rows+=("$(printf 'mosquitto_pub -l QoS 1 (reference)|%.3f s|%.0f|1.00x' "$ref_s" "$ref_rps")")
for path in mqtt grpc; do
  for sink in null store; do
    if [[ $path == mqtt ]]; then
      r=$("$bin" mqtt "$sink" "$GT_MQTT_ADDR" "$GT_MQTT_USER" "$tmp/agent.pass" \
        "$GT_MQTT_COLLECTOR_USER" "$tmp/collector.pass" "$batches" "$devices" "$readings" "$replay")
    else
      r=$("$bin" grpc "$sink" "$batches" "$devices" "$readings" "$replay")
    fi
    results+=("$r")
    s=$(field "$r" seconds); rps=$(field "$r" readings_per_second)
    label="$path -> $([[ $sink == null ]] && echo "ack-only sink" || echo "collector (SQLite)")"
    rows+=("$(printf '%s|%.3f s|%.0f|%.2fx' "$label" "$s" "$rps" "$(echo "$rps / $ref_rps" | bc -l)")")
  done
done

echo
printf 'Uplink: %s batches x %s devices x %s readings = %s readings (%s B per batch), %s batches per delivery\n' \
  "$batches" "$devices" "$readings" "$total" "$bytes" "$replay"
printf '%-40s %-10s %-14s %s\n' "path" "time" "readings/s" "vs mosquitto_pub"
for row in "${rows[@]}"; do
  IFS='|' read -r a b c d <<<"$row"
  printf '%-40s %-10s %-14s %s\n' "$a" "$b" "$c" "$d"
done
{
  printf '{"machine":%s,"batches":%s,"devices_per_batch":%s,"readings_per_device":%s,"batch_bytes":%s,' \
    "$machine" "$batches" "$devices" "$readings" "$bytes"
  printf '"mosquitto_pub":{"seconds":%.4f,"readings_per_second":%.0f},"runs":[%s]}\n' \
    "$ref_s" "$ref_rps" "$(IFS=,; echo "${results[*]}")"
} >"$out"
echo "wrote $out"
