#!/usr/bin/env bash
# Modbus benchmark (issue #5): requests per second of the agent's Modbus driver vs pymodbus' own
# client against the same pymodbus server, over TCP and over RTU on a pty pair, side by side in
# one run, release build. Prints a table with ratios and writes bench/results-modbus.json.
#
#   bench/modbus.sh
#   GT_BENCH_MODBUS_SECONDS=3 GT_BENCH_MODBUS_ROUNDS=5 bench/modbus.sh
#
# Knobs: GT_BENCH_MODBUS_SECONDS (3) per client per round; GT_BENCH_MODBUS_ROUNDS (5), the two
# clients alternate within a round; the table shows each side's median and best round and the
# ratio of medians. GT_PEERS_VENV (/opt/gt-peers): where tests/peers/modbus/start.sh put the
# pymodbus venv (venv-modbus, pymodbus 3.16.1).
#
# The server is a private pymodbus simulator (its own TCP port, its own socat pty pair, register
# maps from tests/peers/modbus/gen_registers.py), so tests running elsewhere on the machine do
# not share it. Both clients do the same work: 2-register reads of unit 1, one at a time, on one
# connection (holding registers of the UPS map over TCP, input registers of the meter map over
# RTU, 9600 8N1). pymodbus' side is its synchronous client in a loop; groundtruth's side is
# tests/examples/gt-bench-drv.rs: polls of a map of ten float32 values with max_registers = 2,
# i.e. ten requests per poll through the agent's poll path (TCP connection kept between polls).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${GT_BENCH_MODBUS_SECONDS:-3}"
rounds="${GT_BENCH_MODBUS_ROUNDS:-5}"
venv="${GT_PEERS_VENV:-/opt/gt-peers}/venv-modbus"
py="$venv/bin/python"
for tool in socat python3 "$py" "$venv/bin/pymodbus.simulator"; do
  command -v "$tool" >/dev/null || { echo "bench/modbus.sh: $tool not found (tests/peers/modbus/start.sh installs it)" >&2; exit 1; }
done

cargo build --release --locked -p groundtruth-tests --example gt-bench-drv >&2
gt=target/release/examples/gt-bench-drv
out=bench/results-modbus.json
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- private server: pymodbus simulator, TCP + RTU on a pty pair
tcp_port=$(free_port); meter_port=$(free_port)
python3 tests/peers/modbus/gen_registers.py "$work" --ups-port "$tcp_port" --meter-port "$meter_port" --static >"$work/registers.json"
socat "pty,raw,echo=0,link=$work/ttySDM630-server" "pty,raw,echo=0,link=$work/tty-client" 2>"$work/socat.log" &
pids+=($!)
for _ in $(seq 50); do [ -e "$work/tty-client" ] && break; sleep 0.1; done
sim() {  # sim SERVER DEVICE
  "$venv/bin/pymodbus.simulator" --modbus_server "$1" --modbus_device "$2" --http_host 127.0.0.1 \
    --http_port "$(free_port)" --json_file "$work/registers.json" --log warning \
    --log_file "$work/$1.log" >"$work/$1.out" 2>&1 &
  pids+=($!)
}
sim ups_tcp gt_rack_ups
sim meter_rtu gt_sdm630
cat >"$work/client.py" <<'PY'
import sys, time
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
kind, target, table, address, secs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
if kind == "rtu":
    c = ModbusSerialClient(port=target, baudrate=9600, bytesize=8, parity="N", stopbits=1, timeout=2, retries=0)
else:
    h, p = target.rsplit(":", 1)
    c = ModbusTcpClient(h, port=int(p), timeout=2, retries=0)
assert c.connect()
read = c.read_holding_registers if table == "holding" else c.read_input_registers
n, t0 = 0, time.monotonic()
while time.monotonic() - t0 < secs:
    r = read(address, count=2, device_id=1)
    assert not r.isError(), r
    n += 1
s = time.monotonic() - t0
print('{"requests":%d,"seconds":%.4f,"rps":%.1f}' % (n, s, n / s))
PY
# Ready when pymodbus' client reads both.
for _ in $(seq 100); do
  "$py" "$work/client.py" tcp "127.0.0.1:$tcp_port" holding 100 0.01 >/dev/null 2>&1 &&
    "$py" "$work/client.py" rtu "$work/tty-client" input 0 0.01 >/dev/null 2>&1 && break
  sleep 0.2
done
"$py" "$work/client.py" tcp "127.0.0.1:$tcp_port" holding 100 0.01 >/dev/null

rps() { sed 's/.*"rps":\([0-9.]*\).*/\1/'; }
stats() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(statistics.median(v), max(v))' "$@"; }
rows=(); results=()
for kind in tcp rtu; do
  if [ "$kind" = tcp ]; then
    where="127.0.0.1:$tcp_port"; table=holding; addr=100
    url="modbus+tcp://$where?unit=1&map=bench"
  else
    where="$work/tty-client"; table=input; addr=0
    url="modbus+rtu://$where?unit=1&baud=9600&map=bench"
  fi
  ours=(); theirs=()
  for _ in $(seq "$rounds"); do
    theirs+=("$("$py" "$work/client.py" "$kind" "$where" "$table" "$addr" "$secs" | rps)")
    ours+=("$("$gt" modbus "$url" "$table" "$addr" "$secs" | rps)")
  done
  read -r o_med o_max <<<"$(stats "${ours[@]}")"
  read -r p_med p_max <<<"$(stats "${theirs[@]}")"
  ratio=$(echo "$o_med / $p_med" | bc -l)
  rows+=("$(printf 'modbus %s, 2-register reads (%s x %s s)|pymodbus client %.0f req/s (best %.0f)|groundtruth %.0f req/s (best %.0f)|%.2fx' \
    "$kind" "$rounds" "$secs" "$p_med" "$p_max" "$o_med" "$o_max" "$ratio")")
  results+=("$(printf '"%s":{"rounds":%s,"seconds":%s,"pymodbus_rps_median":%.1f,"groundtruth_rps_median":%.1f,"ratio_median":%.3f,"pymodbus_rps":[%s],"groundtruth_rps":[%s]}' \
    "$kind" "$rounds" "$secs" "$p_med" "$o_med" "$ratio" "$(IFS=,; echo "${theirs[*]}")" "$(IFS=,; echo "${ours[*]}")")")
done

machine=$(printf '{"nproc":%s,"cpu":"%s","load_avg_1m":%s,"pymodbus":"%s"}' "$(nproc)" \
  "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(cut -d' ' -f1 /proc/loadavg)" \
  "$("$py" -c 'import pymodbus; print(pymodbus.__version__)')")
{ printf '{"machine":%s,' "$machine"; (IFS=,; printf '%s' "${results[*]}"); printf '}\n'; } >"$out"
echo
echo "requests/s, median of rounds; ratio = groundtruth / pymodbus client (> 1: groundtruth faster)"
printf '%s\n' "${rows[@]}" | column -t -s '|'
echo "(JSON: $out)"
