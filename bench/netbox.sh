#!/usr/bin/env bash
# NetBox sync (issue #10): first sync of N new devices into the NetBox peer and a no-change cycle,
# side by side with the reference: a plain script (python3 + requests, one keep-alive session)
# writing the same objects the usual way, one object per request (device with its custom field,
# interface, MAC object, primary-MAC PATCH, journal entry), no reads. Prints a table with the
# per-device ratio; writes bench/results-netbox.json.
#
#   bench/netbox.sh
#
# Knobs: GT_BENCH_NETBOX_DEVICES ("1000 10000") sizes of the first sync; GT_BENCH_NETBOX_MAX_S
# (1500) a first sync still running after this is stopped and reported with the devices it made;
# GT_BENCH_NETBOX_REF (100) devices for the reference script; GT_BENCH_NETBOX_MAX_S=0 means no
# limit; GT_BENCH_NETBOX_TEST_BIN a pre-built `it` test binary to run instead of building one (so
# a long run is not rebuilt from code edited while it runs). Every run uses fresh
# `GT-Bench-<tag>` / `GT-BenchRef-<tag>` sites and deletes what it created (GT_BENCH_KEEP=1 keeps
# it). Needs the NetBox peer (tests/peers/start-all.sh netbox; reads $GT_PEERS_RUN/peers.env) and
# python3 with requests. The client is the debug test build: NetBox is the bottleneck.
set -euo pipefail
cd "$(dirname "$0")/.."
run="${GT_PEERS_RUN:-/tmp/gt-peers}"
# shellcheck disable=SC1091
set -a; . "$run/peers.env"; set +a
sizes="${GT_BENCH_NETBOX_DEVICES:-1000 10000}"
max_s="${GT_BENCH_NETBOX_MAX_S:-1500}"
n_ref="${GT_BENCH_NETBOX_REF:-100}"

if [ "$max_s" = 0 ]; then max_s=1000000000; fi
test_bin="${GT_BENCH_NETBOX_TEST_BIN:-}"
if [ -z "$test_bin" ]; then
  cargo test -p groundtruth-tests --test it --no-run >&2
fi
bench_test() {
  if [ -n "$test_bin" ]; then
    "$test_bin" --ignored --nocapture bench_netbox
  else
    cargo test -q -p groundtruth-tests --test it -- --ignored --nocapture bench_netbox
  fi
}

# Reference: one object per request.
ref=$(GT_N="$n_ref" python3 - <<'EOF'
import json, os, random, time, requests
url = os.environ["GT_NETBOX_URL"].rstrip("/") + "/api/"
s = requests.Session()
s.headers.update({"Authorization": "Bearer " + os.environ["GT_NETBOX_TOKEN"], "Accept": "application/json"})
def post(path, body):
    r = s.post(url + path, json=body); r.raise_for_status(); return r.json()
t = "%08X" % random.getrandbits(32)
slug = "gt-benchref-" + t.lower()
site = post("dcim/sites/", {"name": "GT-BenchRef-" + t, "slug": slug, "status": "active"})
mfr = post("dcim/manufacturers/", {"name": "GT BenchRef " + t, "slug": slug})
dt = post("dcim/device-types/", {"manufacturer": mfr["id"], "model": "GR-1", "slug": "gr-1", "u_height": 1})
role = post("dcim/device-roles/", {"name": "GT BenchRef " + t, "slug": slug, "color": "00ff00"})
n = int(os.environ["GT_N"])
racks = [post("dcim/racks/", {"name": "B%04d" % r, "site": site["id"], "u_height": 42})["id"] for r in range((n + 39) // 40)]
requests_made = 0
t0 = time.monotonic()
for i in range(n):
    d = post("dcim/devices/", {"name": "ref-%d-%s" % (i, t.lower()), "device_type": dt["id"], "role": role["id"],
        "status": "active", "site": site["id"], "rack": racks[i // 40], "position": i % 40 + 1, "face": "front",
        "serial": "GTREF%s%05d" % (t, i), "custom_fields": {"gt_measured_power_w": 200 + i % 300}})
    itf = post("dcim/interfaces/", {"device": d["id"], "name": "eth0", "type": "1000base-t"})
    mac = "02:48:%02x:%02x:%02x:%02x" % tuple(random.getrandbits(8) for _ in range(4))
    m = post("dcim/mac-addresses/", {"mac_address": mac, "assigned_object_type": "dcim.interface", "assigned_object_id": itf["id"]})
    r = s.patch(url + "dcim/interfaces/%d/" % itf["id"], json={"primary_mac_address": m["id"]}); r.raise_for_status()
    post("extras/journal-entries/", {"assigned_object_type": "dcim.device", "assigned_object_id": d["id"], "kind": "info",
        "comments": "created by the reference script"})
    requests_made += 5
secs = time.monotonic() - t0
if os.environ.get("GT_BENCH_KEEP") != "1":
    while True:
        ids = [{"id": x["id"]} for x in s.get(url + "dcim/devices/?site_id=%d&limit=200&brief=1" % site["id"]).json()["results"]]
        if not ids:
            break
        s.delete(url + "dcim/devices/", json=ids).raise_for_status()
    s.delete(url + "dcim/racks/", json=[{"id": r} for r in racks]).raise_for_status()
    for path in ("dcim/device-types/%d/" % dt["id"], "dcim/manufacturers/%d/" % mfr["id"],
                 "dcim/device-roles/%d/" % role["id"], "dcim/sites/%d/" % site["id"]):
        s.delete(url + path).raise_for_status()
print(json.dumps({"devices": n, "seconds": round(secs, 2), "requests": requests_made}))
EOF
)
ref_n=$(sed 's/.*"devices": \([0-9]*\).*/\1/' <<<"$ref")
ref_s=$(sed 's/.*"seconds": \([0-9.]*\).*/\1/' <<<"$ref")
ref_per=$(echo "$ref_s / $ref_n" | bc -l)

rows=()
results=()
for n in $sizes; do
  line=$(GT_BENCH_DEVICES="$n" GT_BENCH_MAX_S="$max_s" bench_test 2>/dev/null | grep '^BENCH netbox' || true)
  echo "$line" >&2
  get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  first_s=$(get first_s)
  if [ -z "$line" ]; then
    rows+=("$n devices|(failed)|||")
    results+=("{\"devices\":$n,\"error\":\"no result\"}")
  elif [ "$first_s" = TIMEOUT ]; then
    stopped=$(get stopped_after_s); made=$(get devices_created)
    rows+=("$(printf '%s devices, first sync|%.1f s/device (ref. %s devices)|stopped after %.0f s with %s devices created (later phases not reached)|%s' \
      "$n" "$ref_per" "$ref_n" "$stopped" "$made" "n/a (incomplete)")")
    results+=("{\"devices\":$n,\"first_sync\":\"stopped\",\"stopped_after_s\":$stopped,\"devices_created\":$made}")
  else
    per=$(echo "$first_s / $n" | bc -l)
    rows+=("$(printf '%s devices, first sync|%.3f s/device, 5 req/device (%s devices)|%.1f s = %.3f s/device, %s requests, %s writes (%s writes/s)|%.1fx' \
      "$n" "$ref_per" "$ref_n" "$first_s" "$per" "$(get requests)" "$(get writes)" "$(get writes_per_s)" "$(echo "$ref_per / $per" | bc -l)")")
    rows+=("$(printf '%s devices, no-change cycle|(a script without reads cannot tell)|%s s, %s requests, %s writes|' \
      "$n" "$(get nochange_s)" "$(get nochange_requests)" "$(get nochange_writes)")")
    results+=("$(printf '{"devices":%s,"first_sync_s":%s,"requests":%s,"writes":%s,"writes_per_s":%s,"nochange_s":%s,"nochange_requests":%s,"nochange_writes":%s}' \
      "$n" "$first_s" "$(get requests)" "$(get writes)" "$(get writes_per_s)" "$(get nochange_s)" "$(get nochange_requests)" "$(get nochange_writes)")")
  fi
done

printf '\n%-34s | %-44s | %-70s | %s\n' case "reference (one object per request)" groundtruth "speed-up"
for r in "${rows[@]}"; do
  IFS='|' read -r a b c d <<<"$r"
  printf '%-34s | %-44s | %-70s | %s\n' "$a" "$b" "$c" "$d"
done
machine=$(printf '{"nproc":%s,"load":"%s"}' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)")
printf '{"machine":%s,"reference":%s,"groundtruth":[%s]}\n' "$machine" "$ref" "$(IFS=,; echo "${results[*]}")" > bench/results-netbox.json
echo "(JSON: bench/results-netbox.json)"
