#!/usr/bin/env bash
# Every benchmark, each side by side with its reference tool in one run, reported as ratios. Not
# part of CI (figures, no assertions); results and the machine go in docs/benchmarks.md.
#
#   bench/run.sh                       # everything
#   GT_BENCH="snmp fleet" bench/run.sh # a selection of: snmp modbus ipmi redfish uplink ingest
#                                      # netbox fleet
#
# Each name but `fleet` is a script beside this one (bench/NAME.sh, self-contained: its header
# lists its peers and knobs; each writes bench/results-NAME.json). `fleet` is here: the release
# agent against the fleet simulator (tests/src/sim) at GT_BENCH_FLEET targets ("100 1000"; add
# 10000 for the large run), GT_BENCH_FLEET_SECONDS (60) each at GT_BENCH_FLEET_INTERVAL_S (10):
# CPU, RSS and poll jitter; then the same against GT_BENCH_FLEET_REDFISH simulated HTTPS Redfish
# BMCs ("100 1000"; "" skips) at GT_BENCH_FLEET_REDFISH_INTERVAL_S (30); writes
# bench/results.json. Needs the test peers
# (tests/peers/start-all.sh; reads $GT_PEERS_RUN/peers.env).
set -euo pipefail
cd "$(dirname "$0")/.."
run="${GT_PEERS_RUN:-/tmp/gt-peers}"
# shellcheck disable=SC1091
set -a; . "$run/peers.env"; set +a
which="${GT_BENCH:-snmp modbus ipmi redfish uplink ingest netbox fleet}"
fleets="${GT_BENCH_FLEET:-100 1000}"
fleet_s="${GT_BENCH_FLEET_SECONDS:-60}"
fleet_iv="${GT_BENCH_FLEET_INTERVAL_S:-10}"
rf_fleets="${GT_BENCH_FLEET_REDFISH-100 1000}"
rf_iv="${GT_BENCH_FLEET_REDFISH_INTERVAL_S:-30}"

for name in $which; do
  [ "$name" = fleet ] && continue
  if [ -x "bench/$name.sh" ]; then
    echo "==> bench/$name.sh" >&2
    "bench/$name.sh" || echo "bench/$name.sh failed (exit $?)" >&2
  else
    echo "no benchmark named $name (bench/$name.sh)" >&2
  fi
done
[[ " $which " == *" fleet "* ]] || exit 0

cargo build --release --locked -p groundtruth-agent --bin groundtruth-agent -p groundtruth-tests --example gt-bench >&2
bench=target/release/examples/gt-bench
agent=target/release/groundtruth-agent
out=bench/results.json
machine=$(printf '{"nproc":%s,"cpu":"%s","mem":"%s","kernel":"%s"}' "$(nproc)" \
  "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" \
  "$(free -h | awk '/^Mem:/ {print $2}')" "$(uname -r)")
results=()
rows=()

if [[ " $which " == *" fleet "* ]]; then
  fl=()
  # fleet_row LABEL INTERVAL JITTER_KEY_PREFIX GT_BENCH_FLEET_ARGS...: one run, its JSON in fl,
  # its table row in rows.
  fleet_row() {
    local label=$1 iv=$2 jk=$3 r cpu rss p99 mx
    shift 3
    r=$("$bench" fleet "$@")
    fl+=("$r")
    cpu=$(echo "$r" | sed 's/.*"agent_cpu_percent":\([0-9.]*\).*/\1/')
    rss=$(echo "$r" | sed 's/.*"agent_rss_kib_max":\([0-9]*\).*/\1/')
    p99=$(echo "$r" | sed "s/.*\"${jk}jitter_ms_p99\":\([0-9]*\).*/\1/")
    mx=$(echo "$r" | sed "s/.*\"${jk}jitter_ms_max\":\([0-9]*\).*/\1/")
    rows+=("$(printf 'agent, %s @%ss|CPU %s %% of one core|RSS max %s MiB|poll jitter p99 %s ms (max %s)' "$label" "$iv" "$cpu" "$((rss / 1024))" "$p99" "$mx")")
  }
  for n in $fleets; do
    fleet_row "$n SNMP targets" "$fleet_iv" "" "$n" "$fleet_s" "$fleet_iv" "$agent"
  done
  for n in $rf_fleets; do
    fleet_row "$n Redfish targets (HTTPS)" "$rf_iv" "redfish_" 0 "$fleet_s" "$rf_iv" "$agent" --redfish "$n"
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
