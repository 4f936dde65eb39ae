#!/usr/bin/env bash
# Stop the snmpd peer (by PID file only) and drop its keys from peers.env.
set -euo pipefail
GT_PEER=snmpd
source "$(dirname "$0")/../lib.sh"
stop_pidfile "$GT_PEERS_RUN/snmpd/snmpd.pid"
env_drop GT_SNMPD_
