#!/usr/bin/env bash
# Stop the MQTT peer (by PID file only) and drop its keys from peers.env.
set -euo pipefail
GT_PEER=mqtt
source "$(dirname "$0")/../lib.sh"
stop_pidfile "$GT_PEERS_RUN/mqtt/mosquitto.pid"
env_drop GT_MQTT_
