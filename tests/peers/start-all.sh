#!/usr/bin/env bash
# Start groundtruth's test peers (idempotent: a peer whose PID is alive is left alone).
#   start-all.sh                 snmpd snmpsim modbus redfish ipmi mqtt rt (+ netbox if GT_PEERS_NETBOX=1;
#                                GT_PEERS_RT=0 leaves Request Tracker out)
#   start-all.sh PEER...         only those (netbox included when named)
# Missing Debian packages for the chosen peers are installed in one apt-get run first
# (each peer script checks its own again, with dpkg, so it also works alone).
# Connection details for the tests: $GT_PEERS_RUN/peers.env (default /tmp/gt-peers/peers.env).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
ALL=(snmpd snmpsim modbus redfish ipmi mqtt rt netbox)

if [ $# -gt 0 ]; then
    peers=("$@")
else
    peers=(snmpd snmpsim modbus redfish ipmi mqtt)
    [ "${GT_PEERS_RT:-1}" = 1 ] && peers+=(rt)
    [ "${GT_PEERS_NETBOX:-0}" = 1 ] && peers+=(netbox)
fi
for p in "${peers[@]}"; do
    [[ " ${ALL[*]} " == *" $p "* ]] || { echo "unknown peer '$p' (known: ${ALL[*]})" >&2; exit 2; }
done

declare -A APT=(
    [snmpd]="snmpd snmp" [snmpsim]="snmp" [modbus]="socat mbpoll" [redfish]="openssl curl"
    [ipmi]="openipmi ipmitool" [mqtt]="mosquitto mosquitto-clients" [netbox]="postgresql redis-server curl"
    [rt]="curl"   # request-tracker5 itself: rt/start.sh (it preseeds debconf first)
)
pkgs=(iproute2 procps)
for p in "${peers[@]}"; do read -r -a more <<<"${APT[$p]}"; pkgs+=("${more[@]}"); done
need_apt "${pkgs[@]}"

T0=$SECONDS
failed=()
for p in "${peers[@]}"; do
    t=$SECONDS
    echo "==== $p" >&2
    if "$HERE/$p/start.sh"; then
        echo "==== $p ok ($((SECONDS - t)) s)" >&2
    else
        echo "==== $p FAILED ($((SECONDS - t)) s)" >&2
        failed+=("$p")
    fi
done
echo "==== start-all: ${#peers[@]} peer(s) in $((SECONDS - T0)) s; env file: $GT_ENV_FILE" >&2
if [ ${#failed[@]} -gt 0 ]; then
    echo "!!!! start-all: FAILED: ${failed[*]}" >&2
    exit 1
fi
