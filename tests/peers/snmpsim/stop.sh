#!/usr/bin/env bash
# Stop the snmpsim peer (by PID file only) and drop its keys from peers.env.
set -euo pipefail
GT_PEER=snmpsim
source "$(dirname "$0")/../lib.sh"
stop_pidfile "$GT_PEERS_RUN/snmpsim/snmpsim.pid"
env_drop GT_SNMPSIM_
