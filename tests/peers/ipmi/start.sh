#!/usr/bin/env bash
# IPMI peer: OpenIPMI ipmi_sim (Debian openipmi) on udp 127.0.0.1:${GT_IPMI_PORT:-26230},
# IPMI 1.5 (-I lan) and 2.0 RMCP+ (-I lanplus; use -C 3).
#   users: ADMIN / Adm1nPass! (admin), monitor / Mon1torPass (user)
#   FRU 0: chassis serial GTCH0000001, board serial GTBRD000001, product serial GTPRD000001,
#          asset tag DC1-R07-U12; SDRs: temperatures, fans, power (W), 12V, PSU status
#   LAN config (lan print 1): MAC 02:47:54:00:00:01, IP 192.0.2.50/24
#   emulator console (emulation commands, loopback): tcp 127.0.0.1:${GT_IPMI_CONSOLE_PORT:-26232}
# Sensor readings are polled from $GT_PEERS_RUN/ipmi/sensors/*.val (real units; write one to
# change a reading within 2 s). State (users, SEL) starts fresh on every (re)start. Idempotent.
set -euo pipefail
GT_PEER=ipmi
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../lib.sh"
RUN="$GT_PEERS_RUN/ipmi"; mkdir -p "$RUN"
PORT="${GT_IPMI_PORT:-26230}"
CONSOLE_PORT="${GT_IPMI_CONSOLE_PORT:-26232}"
USER=ADMIN PASS='Adm1nPass!'

need_apt openipmi ipmitool

if ! pid_alive "$RUN/ipmi_sim.pid"; then
    port_free_or_ours udp "$PORT" "$RUN/ipmi_sim.pid"
    port_free_or_ours tcp "$CONSOLE_PORT" "$RUN/ipmi_sim.pid"
    start_daemon "$RUN/ipmi_sim.pid" "$RUN/ipmi_sim.log" \
        env GT_PYTHON="$GT_PYTHON" "$HERE/sim.sh" "$RUN" "$PORT" "$CONSOLE_PORT"
fi

wait_udp "$PORT" 10 || fail "udp 127.0.0.1:$PORT" "$RUN/ipmi_sim.log" "ipmi_sim did not bind"
ok=0
for _ in $(seq 1 25); do
    if out="$(ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$PORT" -U "$USER" -P "$PASS" -N 1 -R 1 fru print 0 2>&1)" \
        && [[ "$out" == *GTCH0000001* ]]; then ok=1; break; fi
    pid_alive "$RUN/ipmi_sim.pid" || break
    sleep 0.2
done
[ $ok = 1 ] || fail "udp 127.0.0.1:$PORT" "$RUN/ipmi_sim.log" "ipmitool fru print did not show chassis serial GTCH0000001: ${out:-}"

# ---- pyghmi's fake BMC: a second, independent RMCP+ implementation (PyPI pyghmi).
PYGHMI_PORT="${GT_PYGHMI_PORT:-26231}"
if ! pid_alive "$RUN/pyghmi.pid"; then
    need_venv ipmi "$GT_PYTHON" pyghmi==1.6.19 || fail "udp 127.0.0.1:$PYGHMI_PORT" "" "pip install pyghmi failed"
    port_free_or_ours udp "$PYGHMI_PORT" "$RUN/pyghmi.pid"
    start_daemon "$RUN/pyghmi.pid" "$RUN/pyghmi.log" \
        "$GT_PEERS_VENV/venv-ipmi/bin/python" "$HERE/pyghmi_bmc.py" "$PYGHMI_PORT" "$USER" "$PASS"
fi
ok=0
for _ in $(seq 1 50); do
    if ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$PYGHMI_PORT" -U "$USER" -P "$PASS" -N 1 -R 1 mc info >/dev/null 2>&1; then ok=1; break; fi
    pid_alive "$RUN/pyghmi.pid" || break
    sleep 0.2
done
[ $ok = 1 ] || fail "udp 127.0.0.1:$PYGHMI_PORT" "$RUN/pyghmi.log" "pyghmi BMC did not answer mc info"

# ---- The ../shared ipmi_sim configuration (its generator and templates read in place; the
# generated files go to our run dir), frozen values (no vary.sh), on its own port.
SHARED_PORT="${GT_SHARED_IPMI_PORT:-26240}"
SHARED_KEYS=()
if shared_present && [ -f "$GT_SHARED_PEERS/ipmi/gen_emu.py" ]; then
    S="$RUN/shared"; SH="$GT_SHARED_PEERS/ipmi"
    if ! pid_alive "$S/ipmi_sim.pid"; then
        port_free_or_ours udp "$SHARED_PORT" "$S/ipmi_sim.pid"
        rm -rf "$S"; mkdir -p "$S/conf" "$S/sensors" "$S/state/ipmi_sim/dcbmc1"
        "$GT_PYTHON" "$SH/gen_emu.py" "$S/conf" "$S" >"$S/gen.log" 2>&1 || fail "udp 127.0.0.1:$SHARED_PORT" "$S/gen.log" "shared gen_emu.py failed"
        sed -e "s#@RUN@#$S#g" -e "s#@HERE@#$SH#g" \
            -e "s#addr 127.0.0.1 16230#addr 127.0.0.1 $SHARED_PORT#" -e "s#^console .*#console 127.0.0.1 $((SHARED_PORT + 2))#" \
            "$SH/lan.conf.in" > "$S/conf/lan.conf"
        sdrcomp -8 -o "$S/state/ipmi_sim/dcbmc1/sdr.20.main" "$S/conf/bmc.sdrs"
        while read -r name val; do echo "$val" > "$S/sensors/$name.val"; done < "$S/conf/sensors.defaults"
        start_daemon "$S/ipmi_sim.pid" "$S/ipmi_sim.log" \
            ipmi_sim -n -c "$S/conf/lan.conf" -f "$S/conf/bmc.emu" -s "$S/state"
    fi
    ok=0
    for _ in $(seq 1 50); do
        if ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$SHARED_PORT" -U "$USER" -P "$PASS" -N 1 -R 1 mc info >/dev/null 2>&1; then ok=1; break; fi
        pid_alive "$S/ipmi_sim.pid" || break
        sleep 0.2
    done
    [ $ok = 1 ] || fail "udp 127.0.0.1:$SHARED_PORT" "$S/ipmi_sim.log" "the ../shared ipmi_sim did not answer"
    SHARED_KEYS=("GT_IPMI_SHARED_ADDR=127.0.0.1:$SHARED_PORT")
else
    skip_shared_msg 2>/dev/null || true
fi

env_merge \
    "GT_IPMI_PYGHMI_ADDR=127.0.0.1:$PYGHMI_PORT" "${SHARED_KEYS[@]}" \
    "GT_IPMI_ADDR=127.0.0.1:$PORT" "GT_IPMI_USER=$USER" "GT_IPMI_PASS=$PASS" \
    "GT_IPMI_RO_USER=monitor" "GT_IPMI_RO_PASS=Mon1torPass" "GT_IPMI_CIPHER_SUITE=3" \
    "GT_IPMI_CONSOLE_ADDR=127.0.0.1:$CONSOLE_PORT" "GT_IPMI_SENSOR_DIR=$RUN/sensors"
log "up on udp 127.0.0.1:$PORT (lanplus -C 3, $USER)"
