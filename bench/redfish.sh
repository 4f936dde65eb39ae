#!/usr/bin/env bash
# Redfish: groundtruth against a plain sequential crawler in one run, on the HPE ProLiant DL325
# Gen10 Plus mockup served by sushy-static (the shared peer on GT_REDFISH_SHARED_BASE_PORT + 4,
# HTTPS, self-signed, no sessions, no $expand/$select). The crawler is ../shared/peers/redfish/
# crawl.py, read in place (every @odata.id, sequentially, one TLS connection per GET).
#
# Measured, release build:
#   * full inventory: requests and wall time of one crawl.py process vs one
#     `groundtruth-agent poll <target> --json` process (both from exec to exit; requests counted
#     on the server side, in the sushy-static access log, for both);
#   * the same in process (agent/examples/redfish-bench.rs): the first poll of a fresh endpoint,
#     and later full inventory refreshes on the warm endpoint (keep-alive, $expand probe
#     remembered);
#   * the steady-state power poll (inventory cached: only Power and Thermal): requests and median
#     wall time, against crawl.py, which has no cache and must crawl again for fresh readings.
# Prints a table with ratios and writes bench/results-redfish.json.
#
# Knobs: GT_BENCH_REDFISH_RUNS (3: crawl.py and CLI runs, median), GT_BENCH_REDFISH_REFRESHES (5),
# GT_BENCH_REDFISH_STEADY (50), GT_BENCH_REDFISH_PORT (default GT_REDFISH_SHARED_BASE_PORT + 4),
# GT_BENCH_REDFISH_LOG (the sushy-static log to count requests in), GT_SHARED (../shared).
# Needs the peers (tests/peers/start-all.sh; reads $GT_PEERS_RUN/peers.env) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
run="${GT_PEERS_RUN:-/tmp/gt-peers}"
# shellcheck disable=SC1091
set -a; . "$run/peers.env"; set +a
shared="${GT_SHARED:-../shared}"
crawl="$shared/peers/redfish/crawl.py"
if [ ! -f "$crawl" ]; then
  echo "######## SKIP: $crawl not present (../shared missing) ########" >&2
  exit 0
fi
runs="${GT_BENCH_REDFISH_RUNS:-3}"
refreshes="${GT_BENCH_REDFISH_REFRESHES:-5}"
steady="${GT_BENCH_REDFISH_STEADY:-50}"
port="${GT_BENCH_REDFISH_PORT:-$(( ${GT_REDFISH_SHARED_BASE_PORT:?no shared mockups in peers.env} + 4 ))}"
log="${GT_BENCH_REDFISH_LOG:-$run/redfish/sushy-shared-hpe-proliant-dl325-gen10plus.log}"
[ -f "$log" ] || { echo "no sushy-static log at $log (GT_BENCH_REDFISH_LOG)" >&2; exit 1; }
base="https://127.0.0.1:$port"
target="redfish://127.0.0.1:$port?insecure"

cargo build --release --locked -p groundtruth-agent --bin groundtruth-agent --example redfish-bench >&2
agent=target/release/groundtruth-agent
bench=target/release/examples/redfish-bench

now() { date +%s.%N; }
served() { grep -c '"\(GET\|POST\|DELETE\|PATCH\|HEAD\) ' "$log" || true; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

crawl_s=(); crawl_n=(); cli_s=(); cli_n=()
for _ in $(seq "$runs"); do
  c0=$(served); t0=$(now)
  crawl_out=$(python3 "$crawl" "$base")
  t1=$(now); c1=$(served)
  crawl_s+=("$(echo "$t1 - $t0" | bc -l)"); crawl_n+=("$((c1 - c0))")

  c0=$(served); t0=$(now)
  "$agent" poll "$target" --json --log off > "$run/redfish-bench-poll.json"
  t1=$(now); c1=$(served)
  cli_s+=("$(echo "$t1 - $t0" | bc -l)"); cli_n+=("$((c1 - c0))")
done
crawl_s_med=$(printf '%s\n' "${crawl_s[@]}" | median)
crawl_n_med=$(printf '%s\n' "${crawl_n[@]}" | median)
cli_s_med=$(printf '%s\n' "${cli_s[@]}" | median)
cli_n_med=$(printf '%s\n' "${cli_n[@]}" | median)

c0=$(served)
gt=$("$bench" "$target" "$refreshes" "$steady")
c1=$(served)
field() { echo "$gt" | sed "s/.*\"$1\":{[^}]*\"$2\":\([0-9.]*\).*/\1/"; }
cold_n=$(field cold requests); cold_s=$(field cold seconds)
ref_n=$(field refresh requests); ref_s=$(field refresh median_seconds)
st_n=$(field steady requests); st_s=$(field steady median_seconds)
# Cross-check: the in-process run's own count against the server's.
# (The steady phase reuses the warm endpoint and its last inventory: its first poll is a steady
# one too, hence steady + 1.)
own_total=$(echo "$cold_n + $ref_n * $refreshes + $st_n * ($steady + 1)" | bc -l)

ratio() { echo "$1 / $2" | bc -l; }
printf '\nRedfish, HPE DL325 Gen10 Plus mockup (sushy-static %s), release build, %s run(s)\n' "$base" "$runs"
printf '%s\n' "crawl.py: $crawl_out"
printf '| %-48s | %-26s | %-30s | %-14s |\n' "measure" "crawl.py (sequential)" "groundtruth" "ratio"
printf '|%s|%s|%s|%s|\n' "--------------------------------------------------" "----------------------------" "--------------------------------" "----------------"
printf '| %-48s | %-26s | %-30s | %-14s |\n' "full inventory, process exec to exit: requests" "$crawl_n_med" "$cli_n_med (CLI poll --json)" "$(printf '%.1fx fewer' "$(ratio "$crawl_n_med" "$cli_n_med")")"
printf '| %-48s | %-26s | %-30s | %-14s |\n' "full inventory, process exec to exit: wall" "$(printf '%.3f s' "$crawl_s_med")" "$(printf '%.3f s' "$cli_s_med")" "$(printf '%.1fx faster' "$(ratio "$crawl_s_med" "$cli_s_med")")"
printf '| %-48s | %-26s | %-30s | %-14s |\n' "full inventory in process, cold endpoint" "" "$(printf '%s req, %.3f s' "$cold_n" "$cold_s")" ""
printf '| %-48s | %-26s | %-30s | %-14s |\n' "full inventory refresh, warm (median of $refreshes)" "" "$(printf '%s req, %.3f s' "$ref_n" "$ref_s")" "$(printf '%.1fx faster' "$(ratio "$crawl_s_med" "$ref_s")")"
printf '| %-48s | %-26s | %-30s | %-14s |\n' "steady-state power poll (median of $steady)" "$(printf '%s req, %.3f s (recrawl)' "$crawl_n_med" "$crawl_s_med")" "$(printf '%s req, %.1f ms' "$st_n" "$(echo "$st_s * 1000" | bc -l)")" "$(printf '%.0fx req, %.0fx time' "$(ratio "$crawl_n_med" "$st_n")" "$(ratio "$crawl_s_med" "$st_s")")"
printf 'in-process requests: %s by its own count, %s in the server log\n' "$(printf '%.0f' "$own_total")" "$((c1 - c0))"

machine=$(printf '{"nproc":%s,"cpu":"%s","loadavg":"%s"}' "$(nproc)" \
  "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(cut -d' ' -f1-3 /proc/loadavg)")
printf '{"machine":%s,"mockup":"hpe-proliant-dl325-gen10plus","runs":%s,"crawl_py":{"requests":%s,"seconds":%.4f,"all_seconds":[%s]},"agent_cli_poll":{"requests":%s,"seconds":%.4f,"all_seconds":[%s]},"agent_in_process":%s,"server_log_requests_in_process":%s}\n' \
  "$machine" "$runs" "$crawl_n_med" "$crawl_s_med" "$(IFS=,; echo "${crawl_s[*]}")" \
  "$cli_n_med" "$cli_s_med" "$(IFS=,; echo "${cli_s[*]}")" "$gt" "$((c1 - c0))" > bench/results-redfish.json
echo "wrote bench/results-redfish.json"
