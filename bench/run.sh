#!/usr/bin/env bash
# Benchmarks, each side by side with the reference tool in one run, reported as ratios.
# Prints a table and writes bench/results.json. Not part of CI (figures, no assertions).
#
#   bench/run.sh                  # everything
#   GT_BENCH=snmp bench/run.sh    # one of: snmp mqtt fleet
#
# Needs the test peers (tests/peers/start-all.sh; reads $GT_PEERS_RUN/peers.env): net-snmp snmpd
# (GT_SNMPD_ADDR/GT_SNMPD_COMMUNITY) and mosquitto (GT_MQTT_ADDR/GT_MQTT_USER/GT_MQTT_PASS), plus
# snmpbulkwalk and mosquitto_pub on PATH. Builds the agent and examples/gt-bench.rs in release
# once. Knobs: GT_BENCH_WALK_REPS (20), GT_BENCH_MQTT_N (20000), GT_BENCH_FLEET ("100 1000"),
# GT_BENCH_FLEET_SECONDS (60), GT_BENCH_FLEET_INTERVAL_S (10).
set -euo pipefail
cd "$(dirname "$0")/.."
run="${GT_PEERS_RUN:-/tmp/gt-peers}"
# shellcheck disable=SC1091
set -a; . "$run/peers.env"; set +a
which="${GT_BENCH:-snmp mqtt fleet}"
reps="${GT_BENCH_WALK_REPS:-20}"
n_mqtt="${GT_BENCH_MQTT_N:-20000}"
fleets="${GT_BENCH_FLEET:-100 1000}"
fleet_s="${GT_BENCH_FLEET_SECONDS:-60}"
fleet_iv="${GT_BENCH_FLEET_INTERVAL_S:-10}"

cargo build --release --locked -p groundtruth-agent --bin groundtruth-agent -p groundtruth-tests --example gt-bench >&2
bench=target/release/examples/gt-bench
agent=target/release/groundtruth-agent
now() { date +%s.%N; }
out=bench/results.json
machine=$(printf '{"nproc":%s,"cpu":"%s","mem":"%s","kernel":"%s"}' "$(nproc)" \
  "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" \
  "$(free -h | awk '/^Mem:/ {print $2}')" "$(uname -r)")
results=()
rows=()

if [[ " $which " == *" snmp "* ]]; then
  # Whole-tree walk of net-snmp snmpd, GETBULK max-repetitions 25 on both sides.
  t0=$(now)
  for _ in $(seq "$reps"); do
    ref_n=$(snmpbulkwalk -v2c -c "$GT_SNMPD_COMMUNITY" -Cr25 -On -t 3 -r 1 "$GT_SNMPD_ADDR" .1.3.6.1 | wc -l)
  done
  t1=$(now)
  ref_s=$(echo "$t1 - $t0" | bc -l)
  gt=$("$bench" snmp-walk "$GT_SNMPD_ADDR" "$GT_SNMPD_COMMUNITY" "$reps")
  gt_s=$(echo "$gt" | sed 's/.*"seconds":\([0-9.]*\).*/\1/')
  gt_n=$(echo "$gt" | sed 's/.*"varbinds":\([0-9]*\).*/\1/')
  ratio=$(echo "$ref_s / $gt_s" | bc -l)
  rows+=("$(printf 'snmp walk (snmpd, %s reps)|snmpbulkwalk %.2f s (%s lines)|groundtruth %.2f s (%s varbinds)|%.2fx' "$reps" "$ref_s" "$ref_n" "$gt_s" "$gt_n" "$ratio")")
  results+=("$(printf '"snmp_walk":{"reps":%s,"snmpbulkwalk_seconds":%.4f,"snmpbulkwalk_lines":%s,"groundtruth":%s,"speedup":%.3f}' "$reps" "$ref_s" "$ref_n" "$gt" "$ratio")")
fi

if [[ " $which " == *" mqtt "* ]]; then
  passf=$(mktemp); printf '%s' "$GT_MQTT_PASS" >"$passf"
  host=${GT_MQTT_ADDR%:*}; port=${GT_MQTT_ADDR##*:}
  # mosquitto_pub -l: one QoS 1 message per stdin line, one connection (its fastest mode).
  t0=$(now)
  head -c $((n_mqtt * 201)) /dev/zero | tr '\0' 'x' | fold -w 200 | head -n "$n_mqtt" |
    mosquitto_pub -h "$host" -p "$port" -u "$GT_MQTT_USER" -P "$GT_MQTT_PASS" -q 1 -t groundtruth/bench/ref -l
  t1=$(now)
  ref_s=$(echo "$t1 - $t0" | bc -l)
  gt=$("$bench" mqtt "$GT_MQTT_ADDR" "$GT_MQTT_USER" "$passf" "$n_mqtt")
  rm -f "$passf"
  gt_s=$(echo "$gt" | sed 's/.*"seconds":\([0-9.]*\).*/\1/')
  ratio=$(echo "$ref_s / $gt_s" | bc -l)
  rows+=("$(printf 'mqtt publish QoS1 (%s x 200 B)|mosquitto_pub -l %.2f s (%.0f/s)|groundtruth %.2f s (%.0f/s)|%.2fx' "$n_mqtt" "$ref_s" "$(echo "$n_mqtt / $ref_s" | bc -l)" "$gt_s" "$(echo "$n_mqtt / $gt_s" | bc -l)" "$ratio")")
  results+=("$(printf '"mqtt_publish":{"messages":%s,"mosquitto_pub_seconds":%.4f,"groundtruth":%s,"speedup":%.3f}' "$n_mqtt" "$ref_s" "$gt" "$ratio")")
fi

if [[ " $which " == *" fleet "* ]]; then
  fl=()
  for n in $fleets; do
    r=$("$bench" fleet "$n" "$fleet_s" "$fleet_iv" "$agent")
    fl+=("$r")
    cpu=$(echo "$r" | sed 's/.*"agent_cpu_percent":\([0-9.]*\).*/\1/')
    rss=$(echo "$r" | sed 's/.*"agent_rss_kib_max":\([0-9]*\).*/\1/')
    p99=$(echo "$r" | sed 's/.*"jitter_ms_p99":\([0-9]*\).*/\1/')
    mx=$(echo "$r" | sed 's/.*"jitter_ms_max":\([0-9]*\).*/\1/')
    rows+=("$(printf 'agent, %s SNMP targets @%ss|CPU %s %% of one core|RSS max %s MiB|poll jitter p99 %s ms (max %s)' "$n" "$fleet_iv" "$cpu" "$((rss / 1024))" "$p99" "$mx")")
  done
  results+=("\"fleet\":[$(IFS=,; echo "${fl[*]}")]")
fi

{
  printf '{"machine":%s,' "$machine"
  (IFS=,; printf '%s' "${results[*]}")
  printf '}\n'
} >"$out"
echo
echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(free -h | awk '/^Mem:/ {print $2}') RAM"
printf '%s\n' "${rows[@]}" | column -t -s '|'
echo "(JSON: $out)"
