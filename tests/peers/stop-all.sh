#!/usr/bin/env bash
# Stop groundtruth's test peers by their PID files (never by process name).
#   stop-all.sh            every peer, netbox included (PostgreSQL only if netbox/start.sh started it)
#   stop-all.sh PEER...    only those
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
peers=("$@")
[ ${#peers[@]} -gt 0 ] || peers=(netbox rt mqtt ipmi redfish modbus snmpsim snmpd)
rc=0
for p in "${peers[@]}"; do
    [ -x "$HERE/$p/stop.sh" ] || { echo "unknown peer '$p'" >&2; rc=2; continue; }
    "$HERE/$p/stop.sh" || rc=1
done
exit $rc
