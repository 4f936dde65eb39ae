#!/usr/bin/env bash
# Stop the Modbus peers (by PID file only), remove the pty links, drop the peers.env keys.
set -euo pipefail
GT_PEER=modbus
source "$(dirname "$0")/../lib.sh"
RUN="$GT_PEERS_RUN/modbus"
for n in ups-tcp meter-tcp meter-rtu socat; do stop_pidfile "$RUN/$n.pid"; done
rm -f "$RUN/ttySDM630-server" "$RUN/ttySDM630-client"
env_drop GT_MODBUS_
