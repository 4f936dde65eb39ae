#!/usr/bin/env bash
# Modbus peers, served by pymodbus 3.16.1's own simulator (`pymodbus.simulator`) from the
# register maps written by gen_registers.py (our own data):
#   tcp 127.0.0.1:${GT_MODBUS_UPS_PORT:-25020}    unit 1  rack UPS (test-rack-ups layout)
#   tcp 127.0.0.1:${GT_MODBUS_METER_PORT:-25021}  unit 1  SDM630-style 3-phase meter
#   RTU 9600 8N1 unit 1, SDM630-style meter, on a socat pty pair:
#       masters open $GT_PEERS_RUN/modbus/ttySDM630-client (the simulator holds ...-server)
#   simulator web UI/REST: 127.0.0.1:${GT_MODBUS_HTTP_BASE:-25080} (UPS), +1 (RTU meter), +2 (TCP meter)
# GT_MODBUS_STATIC=1: measurements keep their nominal values instead of random ones.
# Idempotent.
set -euo pipefail
GT_PEER=modbus
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../lib.sh"
RUN="$GT_PEERS_RUN/modbus"; mkdir -p "$RUN"
UPS_PORT="${GT_MODBUS_UPS_PORT:-25020}"
METER_PORT="${GT_MODBUS_METER_PORT:-25021}"
HTTP_BASE="${GT_MODBUS_HTTP_BASE:-25080}"
VENV="$GT_PEERS_VENV/venv-modbus"
TTY="$RUN/ttySDM630-client"

need_apt socat mbpoll
need_venv modbus "$GT_PYTHON" 'pymodbus[serial]==3.16.1' aiohttp

static=(); [ "${GT_MODBUS_STATIC:-0}" = 1 ] && static=(--static)
"$GT_PYTHON" "$HERE/gen_registers.py" "$RUN" --ups-port "$UPS_PORT" --meter-port "$METER_PORT" \
    "${static[@]}" > "$RUN/registers.json.new"
if ! cmp -s "$RUN/registers.json.new" "$RUN/registers.json"; then
    # new register maps (or ports): simulators started with the old file must restart
    for n in ups-tcp meter-tcp meter-rtu; do stop_pidfile "$RUN/$n.pid"; done
fi
mv "$RUN/registers.json.new" "$RUN/registers.json"

sim() {  # sim NAME SERVER DEVICE HTTP_PORT
    start_daemon "$RUN/$1.pid" "$RUN/$1.log" "$VENV/bin/pymodbus.simulator" \
        --modbus_server "$2" --modbus_device "$3" \
        --http_host 127.0.0.1 --http_port "$4" \
        --json_file "$RUN/registers.json" --log warning --log_file "$RUN/$1.server.log"
}

# ---- RTU: a pty pair; a new socat means new ptys, so the RTU simulator restarts with it
if ! pid_alive "$RUN/socat.pid"; then
    stop_pidfile "$RUN/meter-rtu.pid"
    rm -f "$RUN/ttySDM630-server" "$TTY"
    start_daemon "$RUN/socat.pid" "$RUN/socat.log" socat -d -d \
        "pty,raw,echo=0,link=$RUN/ttySDM630-server" "pty,raw,echo=0,link=$TTY"
    for _ in $(seq 1 50); do [ -e "$TTY" ] && [ -e "$RUN/ttySDM630-server" ] && break; sleep 0.1; done
    [ -e "$TTY" ] || fail "$TTY" "$RUN/socat.log" "socat did not create the pty pair"
fi
port_free_or_ours tcp $((HTTP_BASE + 1)) "$RUN/meter-rtu.pid"
sim meter-rtu meter_rtu gt_sdm630 $((HTTP_BASE + 1))

# ---- TCP
port_free_or_ours tcp "$UPS_PORT" "$RUN/ups-tcp.pid"
port_free_or_ours tcp "$METER_PORT" "$RUN/meter-tcp.pid"
sim ups-tcp ups_tcp gt_rack_ups "$HTTP_BASE"
sim meter-tcp meter_tcp gt_sdm630 $((HTTP_BASE + 2))

wait_tcp "$UPS_PORT" 30 || fail "tcp 127.0.0.1:$UPS_PORT" "$RUN/ups-tcp.log" "UPS simulator not listening"
wait_tcp "$METER_PORT" 30 || fail "tcp 127.0.0.1:$METER_PORT" "$RUN/meter-tcp.log" "meter simulator not listening"
wait_tcp $((HTTP_BASE + 1)) 30 || fail "$TTY" "$RUN/meter-rtu.log" "RTU meter simulator not up"

probe() {  # probe LOG KIND TARGET : real Modbus reads with the pymodbus client
    local out
    for _ in 1 2 3 4 5; do
        out="$("$VENV/bin/python" "$HERE/probe.py" "$2" "$3" 2>&1)" && { log "$3: $out"; return 0; }
        sleep 0.5
    done
    fail "$3" "$1" "Modbus read failed: $out"
}
probe "$RUN/ups-tcp.log" ups "127.0.0.1:$UPS_PORT"
probe "$RUN/meter-tcp.log" meter "127.0.0.1:$METER_PORT"
probe "$RUN/meter-rtu.log" rtu "$TTY"

env_merge \
    "GT_MODBUS_UPS_ADDR=127.0.0.1:$UPS_PORT" "GT_MODBUS_UPS_UNIT=1" "GT_MODBUS_UPS_SERIAL=GTU3K0000001" \
    "GT_MODBUS_METER_ADDR=127.0.0.1:$METER_PORT" "GT_MODBUS_METER_UNIT=1" "GT_MODBUS_METER_SERIAL=31415926" \
    "GT_MODBUS_RTU_TTY=$TTY" "GT_MODBUS_RTU_BAUD=9600" "GT_MODBUS_RTU_UNIT=1"
log "up: ups tcp 127.0.0.1:$UPS_PORT, meter tcp 127.0.0.1:$METER_PORT, meter rtu $TTY"
