#!/usr/bin/env bash
# Stops the Request Tracker peer started by start.sh (its database stays for a fast restart).
set -euo pipefail
GT_PEER=rt
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../lib.sh"
stop_pidfile "$GT_PEERS_RUN/rt/rt.pid"
env_drop GT_RT_
