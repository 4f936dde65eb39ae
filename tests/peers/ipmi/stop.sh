#!/usr/bin/env bash
# Stop the IPMI peer (by PID file only) and drop its keys from peers.env.
set -euo pipefail
GT_PEER=ipmi
source "$(dirname "$0")/../lib.sh"
stop_pidfile "$GT_PEERS_RUN/ipmi/ipmi_sim.pid"
stop_pidfile "$GT_PEERS_RUN/ipmi/pyghmi.pid"
stop_pidfile "$GT_PEERS_RUN/ipmi/shared/ipmi_sim.pid"
env_drop GT_IPMI_
