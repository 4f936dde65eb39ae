#!/usr/bin/env bash
# IPMI side by side in one run (issue #12): a full inventory poll (FRU + SDR + sensors + LAN +
# chassis + DCMI) and a sensors-only read of the ipmi_sim peer by the release agent, by ipmitool
# (lanplus, cipher suite 3) and by Prometheus' ipmi_exporter (FreeIPMI), each opening a fresh
# RMCP+ session per run. Prints min/median/max ms per tool and the ratios of the medians; writes
# bench/results-ipmi.json.
#   bench/ipmi.sh            # GT_BENCH_IPMI_N=15 runs each
# Needs the ipmi peer (tests/peers/start-all.sh ipmi), ipmitool, and prometheus-ipmi-exporter
# (apt) for the exporter rows.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${GT_BENCH_IPMI_N:-15}"
cargo build --release --locked -p groundtruth-agent --bin groundtruth-agent >&2
out=$(GT_AGENT_BIN="$PWD/target/release/groundtruth-agent" tests/peers/ipmi/bench.sh "$n")
echo "$out"
median() { grep -F "$1" <<<"$out" | sed -n 's/.*median *\([0-9]*\)  .*/\1/p' | head -1; }
agent=$(median "agent poll")
ipmitool=$(median "ipmitool fru print")
exporter=$(median "ipmi_exporter module full")
sensors_ipmitool=$(median "ipmitool sdr list")
sensors_exporter=$(median "ipmi_exporter module sensors")
ratio() { [ -n "$1" ] && [ -n "$2" ] && [ "$2" != 0 ] && echo "scale=2; $1 / $2" | bc || echo null; }
printf '\nfull poll, median: agent %s ms; ipmitool %s ms (%sx slower); ipmi_exporter %s ms (%sx slower)\n' \
  "$agent" "$ipmitool" "$(ratio "$ipmitool" "$agent")" "${exporter:-n/a}" "$(ratio "$exporter" "$agent")"
printf '{"runs":%s,"agent_full_ms":%s,"ipmitool_full_ms":%s,"ipmi_exporter_full_ms":%s,"ipmitool_sensors_ms":%s,"ipmi_exporter_sensors_ms":%s}\n' \
  "$n" "${agent:-null}" "${ipmitool:-null}" "${exporter:-null}" "${sensors_ipmitool:-null}" "${sensors_exporter:-null}" > bench/results-ipmi.json
echo "(JSON: bench/results-ipmi.json)"
