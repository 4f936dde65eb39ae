#!/usr/bin/env bash
# Stop every sushy-static started by redfish/start.sh (by PID file only); drop the peers.env keys.
set -euo pipefail
GT_PEER=redfish
source "$(dirname "$0")/../lib.sh"
for f in "$GT_PEERS_RUN"/redfish/*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
env_drop GT_REDFISH_
