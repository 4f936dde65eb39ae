#!/usr/bin/env bash
# SNMP walk benchmark (issue #4): a full walk of net-snmp snmpd on loopback by the agent's walk
# code, by net-snmp's snmpbulkwalk and by Prometheus' snmp_exporter, side by side in one run,
# same subtree, same GETBULK max-repetitions, release build. Prints a table with ratios and
# writes bench/results-snmp.json.
#
#   bench/snmp.sh
#   GT_BENCH_SNMP_REPS=10 GT_BENCH_SNMP_ROUNDS=3 GT_BENCH_SNMP_OID=1.3.6.1 bench/snmp.sh
#
# Knobs: GT_BENCH_SNMP_REPS (10) walks per tool per round; GT_BENCH_SNMP_ROUNDS (3) rounds, the
# tools alternate within a round and each tool's best round is reported (so a burst of load
# elsewhere on the machine does not decide the comparison); GT_BENCH_SNMP_OID (1.3.6.1) subtree;
# GT_BENCH_SNMP_MAXREP (25) max-repetitions; GT_BENCH_SNMP_V3 (1) also runs the three over
# SNMPv3 authPriv SHA/AES (the harness's user gtadmin).
#
# Needs the test peers (tests/peers/start-all.sh; reads $GT_PEERS_RUN/peers.env): net-snmp snmpd
# (GT_SNMPD_*), snmpbulkwalk, curl, python3, and prometheus-snmp-exporter (Debian package, 0.21
# here). The exporter's module is generated from one snmpbulkwalk of the same subtree with
# numeric OIDs: a metric per table column (its cells' parent OID, the last arc as the `idx`
# label), a metric per cell of multi-arc indexes (its shortest unique prefix), typed from the walk
# (counter, gauge, or OctetString: a hex label), so every walked varbind becomes one sample; the
# exporter runs on a free loopback port and is timed by `curl` scrapes, in series.
# groundtruth's side is tests/examples/gt-bench-drv.rs (`walk_count`, the code path of polls:
# bounded walk, OID ordering checks), one client per walk, in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
run="${GT_PEERS_RUN:-/tmp/gt-peers}"
# shellcheck disable=SC1091
set -a; . "$run/peers.env"; set +a
reps="${GT_BENCH_SNMP_REPS:-10}"
rounds="${GT_BENCH_SNMP_ROUNDS:-3}"
base="${GT_BENCH_SNMP_OID:-1.3.6.1}"
maxrep="${GT_BENCH_SNMP_MAXREP:-25}"
v3="${GT_BENCH_SNMP_V3:-1}"
exporter=/usr/bin/prometheus-snmp-exporter
for tool in snmpbulkwalk curl python3 "$exporter"; do
  command -v "$tool" >/dev/null || { echo "bench/snmp.sh: $tool not found" >&2; exit 1; }
done

cargo build --release --locked -p groundtruth-tests --example gt-bench-drv >&2
gt=target/release/examples/gt-bench-drv
out=bench/results-snmp.json
work=$(mktemp -d)
exp_pid=""
# GT_BENCH_KEEP=1 keeps the work dir (generated snmp.yml, last scrape) for a look afterwards.
cleanup() {
  [ -n "$exp_pid" ] && kill "$exp_pid" 2>/dev/null
  if [ -n "${GT_BENCH_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
now() { date +%s.%N; }

host=${GT_SNMPD_ADDR%:*}; port=${GT_SNMPD_ADDR##*:}
v2_args=(-v2c -c "$GT_SNMPD_COMMUNITY")
v3_args=(-v3 -l authPriv -u "$GT_SNMPD_V3_USER" -a SHA -A "$GT_SNMPD_V3_AUTH_PASS" -x AES -X "$GT_SNMPD_V3_PRIV_PASS")
v2_url="snmp://$GT_SNMPD_COMMUNITY@$GT_SNMPD_ADDR?max_repetitions=$maxrep"
v3_url="snmpv3://$GT_SNMPD_V3_USER@$GT_SNMPD_ADDR?auth=sha&priv=aes&auth_pass=$GT_SNMPD_V3_AUTH_PASS&priv_pass=$GT_SNMPD_V3_PRIV_PASS&max_repetitions=$maxrep"

# ---- snmp_exporter module from one walk, numeric OIDs
snmpbulkwalk "${v2_args[@]}" -Cr"$maxrep" -On -t 3 -r 1 "$GT_SNMPD_ADDR" ".$base" >"$work/walk.txt"
python3 - "$work/walk.txt" "$base" "$maxrep" "$GT_SNMPD_COMMUNITY" "$GT_SNMPD_V3_USER" \
  "$GT_SNMPD_V3_AUTH_PASS" "$GT_SNMPD_V3_PRIV_PASS" >"$work/snmp.yml" <<'PY'
import re, sys
walk, base, maxrep, community, user, ap, pp = sys.argv[1:]
kinds = {}  # varbind OID (tuple) -> metric type
for line in open(walk, errors="replace"):
    m = re.match(r"^\.(1(?:\.\d+)+) = (?:([A-Za-z0-9-]+(?: [A-Za-z]+)?):|\"\")", line)
    if not m:
        continue  # continuation of a multi-line string, or the end-of-MIB line
    oid, typ = tuple(int(x) for x in m.group(1).split(".")), m.group(2) or "STRING"
    kinds[oid] = {"Counter32": "counter", "Counter64": "counter", "INTEGER": "gauge", "Gauge32": "gauge",
                  "Timeticks": "gauge", "Unsigned32": "gauge"}.get(typ, "OctetString")
# snmp_exporter matches a varbind to the metric of its SHORTEST prefix. A table column (the
# parent of its cells, one `idx` label) works when no cell has more arcs below it; other
# varbinds (multi-arc indexes) get a metric of their own: their shortest unique prefix.
oids = sorted(kinds)
parents = {}
for o in oids:
    parents.setdefault(o[:-1], []).append(o)
def lcp(x, y):
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n
metrics, dropped = [], 0  # (oid tuple, type, indexed)
prefixes = set(parents)
import bisect
def under(p):  # number of varbinds below p
    return bisect.bisect_left(oids, p + (1 << 40,)) - bisect.bisect_right(oids, p)
clean = {p for p, cells in parents.items()
         if under(p) == len(cells) and p not in kinds
         and not any(p[:k] in prefixes or p[:k] in kinds for k in range(1, len(p)))}
for p in sorted(clean):
    metrics.append((p, kinds[parents[p][0]], True))
for i, o in enumerate(oids):
    if o[:-1] in clean:
        continue
    before = lcp(o, oids[i - 1]) if i else 0
    after = lcp(o, oids[i + 1]) if i + 1 < len(oids) else 0
    if after >= len(o):
        dropped += 1  # a varbind that is a prefix of another one: no metric can isolate it
        continue
    metrics.append((o[:max(before, after) + 1], kinds[o], False))
print(f"# {len(kinds)} varbinds, {len(metrics)} metrics, {dropped} varbinds without a metric", file=sys.stderr)
def module(name, auth):
    # snmp_exporter 0.21's format: modules at the top level, auth inside the module.
    print(f"{name}:\n  walk: ['{base}']\n  version: {2 if 'community' in auth else 3}")
    print(f"  max_repetitions: {maxrep}\n  retries: 1\n  timeout: 5s\n  auth:")
    for k, v in auth.items():
        print(f"    {k}: '{v}'")
    print("  metrics:")
    for oid, kind, indexed in metrics:
        dotted = ".".join(map(str, oid))
        print(f"  - name: o_{dotted.replace('.', '_')}\n    oid: {dotted}\n    type: {kind}")
        if indexed:
            print("    indexes:\n    - labelname: idx\n      type: gauge")
module("gt_v2c", {"community": community})
module("gt_v3", {"security_level": "authPriv", "username": user, "password": ap,
                 "auth_protocol": "SHA", "priv_protocol": "AES", "priv_password": pp})
PY
exp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$exporter" --config.file="$work/snmp.yml" --web.listen-address="127.0.0.1:$exp_port" \
  --log.level=warn >"$work/exporter.log" 2>&1 &
exp_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$exp_port/" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$exp_port/" >/dev/null || { cat "$work/exporter.log" >&2; exit 1; }
scrape() {  # scrape MODULE -> "varbinds samples": what the exporter walked, what it exported
  curl -sf "http://127.0.0.1:$exp_port/snmp?target=$host:$port&module=$1" >"$work/scrape.txt" ||
    { echo "snmp_exporter scrape failed" >&2; cat "$work/exporter.log" >&2; exit 1; }
  echo "$(awk '/^snmp_scrape_pdus_returned/ {print $2}' "$work/scrape.txt") $(grep -c '^o_' "$work/scrape.txt")"
}

best() { python3 -c 'import sys; print(min(float(x) for x in sys.argv[1:]))' "$@"; }
rows=(); results=()
modes=(v2c); [ "$v3" = 1 ] && modes+=(v3)
for mode in "${modes[@]}"; do
  if [ "$mode" = v2c ]; then args=("${v2_args[@]}"); url=$v2_url; else args=("${v3_args[@]}"); url=$v3_url; fi
  t_ref=(); t_exp=(); t_gt=()
  for _ in $(seq "$rounds"); do
    t0=$(now)
    for _ in $(seq "$reps"); do
      ref_n=$(snmpbulkwalk "${args[@]}" -Cr"$maxrep" -On -t 3 -r 1 "$GT_SNMPD_ADDR" ".$base" | grep -c '^\.1\.')
    done
    t1=$(now); t_ref+=("$(echo "$t1 - $t0" | bc -l)")
    t0=$(now)
    for _ in $(seq "$reps"); do exp=$(scrape "gt_$mode"); done
    exp_n=${exp% *}; exp_samples=${exp#* }
    t1=$(now); t_exp+=("$(echo "$t1 - $t0" | bc -l)")
    g=$("$gt" snmp-walk "$url" "$base" "$reps")
    t_gt+=("$(echo "$g" | sed 's/.*"seconds":\([0-9.]*\).*/\1/')")
    gt_n=$(echo "$g" | sed 's/.*"varbinds":\([0-9]*\).*/\1/')
  done
  ref_s=$(best "${t_ref[@]}"); exp_s=$(best "${t_exp[@]}"); gt_s=$(best "${t_gt[@]}")
  ms() { echo "$1 * 1000 / $reps" | bc -l; }
  rows+=("$(printf 'walk %s %s (%s reps, best of %s)|snmpbulkwalk %.1f ms (%s varbinds)|snmp_exporter %.1f ms (%s varbinds, %s samples)|groundtruth %.1f ms (%s varbinds)|%.2fx vs snmp_exporter, %.2fx vs snmpbulkwalk' \
    "$mode" "$base" "$reps" "$rounds" "$(ms "$ref_s")" "$ref_n" "$(ms "$exp_s")" "$exp_n" "$exp_samples" "$(ms "$gt_s")" "$gt_n" \
    "$(echo "$exp_s / $gt_s" | bc -l)" "$(echo "$ref_s / $gt_s" | bc -l)")")
  results+=("$(printf '"%s":{"oid":"%s","reps":%s,"rounds":%s,"max_repetitions":%s,"snmpbulkwalk_seconds":%.4f,"snmpbulkwalk_varbinds":%s,"snmp_exporter_seconds":%.4f,"snmp_exporter_varbinds":%s,"snmp_exporter_samples":%s,"groundtruth_seconds":%.4f,"groundtruth_varbinds":%s,"speedup_vs_snmp_exporter":%.3f,"speedup_vs_snmpbulkwalk":%.3f,"rounds_seconds":{"snmpbulkwalk":[%s],"snmp_exporter":[%s],"groundtruth":[%s]}}' \
    "$mode" "$base" "$reps" "$rounds" "$maxrep" "$ref_s" "$ref_n" "$exp_s" "$exp_n" "$exp_samples" "$gt_s" "$gt_n" \
    "$(echo "$exp_s / $gt_s" | bc -l)" "$(echo "$ref_s / $gt_s" | bc -l)" \
    "$(IFS=,; echo "${t_ref[*]}")" "$(IFS=,; echo "${t_exp[*]}")" "$(IFS=,; echo "${t_gt[*]}")")")
done

machine=$(printf '{"nproc":%s,"cpu":"%s","net_snmp":"%s","snmp_exporter":"%s"}' "$(nproc)" \
  "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" \
  "$(snmpbulkwalk --version 2>&1 | sed -n 's/^NET-SNMP version: *//p')" \
  "$("$exporter" --version 2>&1 | sed -n 's/.*version \([0-9.]*\).*/\1/p' | head -1)")
{ printf '{"machine":%s,' "$machine"; (IFS=,; printf '%s' "${results[*]}"); printf '}\n'; } >"$out"
echo
echo "per walk; ratio = reference time / groundtruth time (> 1: groundtruth faster)"
printf '%s\n' "${rows[@]}" | column -t -s '|'
echo "(JSON: $out)"
