#!/usr/bin/env bash
# Redfish peers: sushy-static (PyPI sushy-tools 2.2.0), one process per mockup, 127.0.0.1 only.
#   https://127.0.0.1:28000  tests/fixtures/redfish/gt-rack-server  (our realistic 1U server)
#   https://127.0.0.1:28001  tests/fixtures/redfish/gt-sparse-bmc   (our OpenBMC-like sparse BMC)
#   http://127.0.0.1:28080   gt-rack-server again, plain HTTP
#   https://127.0.0.1:28090  sushy-emulator --fake: three hosts behind one service and chassis
#                            (tests/fixtures/redfish/sushy-fake-systems.json)
#   https://127.0.0.1:28100+ ../shared/peers/redfish/mockups/*, read IN PLACE, in the order of
#                            ../shared/peers/README.md's table (skipped when ../shared is absent)
# TLS: a test CA and a 127.0.0.1/localhost server cert signed by it, generated once into
# $GT_PEERS_RUN/redfish (GT_REDFISH_CA = the CA cert; a CA cert is not used as the server cert
# because rustls/webpki rejects a CA certificate as an end-entity certificate).
# sushy-static serves GET only (POST/PATCH answer 204), ignores auth, 404s any query string.
# Ports: GT_REDFISH_BASE_PORT, GT_REDFISH_HTTP_PORT, GT_REDFISH_SHARED_BASE_PORT. Idempotent.
set -euo pipefail
GT_PEER=redfish
source "$(dirname "$0")/../lib.sh"
RUN="$GT_PEERS_RUN/redfish"; mkdir -p "$RUN"
BASE="${GT_REDFISH_BASE_PORT:-28000}"
HTTP_PORT="${GT_REDFISH_HTTP_PORT:-28080}"
SHARED_BASE="${GT_REDFISH_SHARED_BASE_PORT:-28100}"
FIXTURES="$GT_REPO_ROOT/tests/fixtures/redfish"
OURS=(gt-rack-server gt-sparse-bmc)
VENV="$GT_PEERS_VENV/venv-redfish"

need_apt openssl curl
need_venv redfish "$GT_PYTHON" sushy-tools==2.2.0

# ---- TLS: test CA + server certificate (once per run dir)
if [ ! -s "$RUN/tls.crt" ] || [ ! -s "$RUN/ca.crt" ]; then
    log "generating test CA and server certificate in $RUN"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=groundtruth test peers CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$RUN/ca.key" -out "$RUN/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$RUN/tls.key" -out "$RUN/tls.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" > "$RUN/tls.ext"
    openssl x509 -req -in "$RUN/tls.csr" -CA "$RUN/ca.crt" -CAkey "$RUN/ca.key" -CAcreateserial \
        -days 3650 -extfile "$RUN/tls.ext" -out "$RUN/tls.crt" 2>/dev/null
    rm -f "$RUN/tls.csr"
fi

serve() {  # serve NAME PORT DIR [tls]
    local name="$1" port="$2" dir="$3" tls=()
    [ "${4:-}" = tls ] && tls=(-c "$RUN/tls.crt" -k "$RUN/tls.key")
    port_free_or_ours tcp "$port" "$RUN/$name.pid"
    start_daemon "$RUN/$name.pid" "$RUN/$name.log" \
        "$VENV/bin/sushy-static" -i 127.0.0.1 -p "$port" -m "$dir" "${tls[@]}"
}

# ---- our fixtures
CHECK=()   # "url|log|name" to verify
for i in "${!OURS[@]}"; do
    m="${OURS[$i]}"; port=$((BASE + i))
    serve "sushy-$m" "$port" "$FIXTURES/$m" tls
    CHECK+=("https://127.0.0.1:$port|$RUN/sushy-$m.log|$m")
done
serve sushy-http-gt-rack-server "$HTTP_PORT" "$FIXTURES/gt-rack-server"
CHECK+=("http://127.0.0.1:$HTTP_PORT|$RUN/sushy-http-gt-rack-server.log|gt-rack-server (http)")

# ---- sushy-emulator (the live emulator, not a static mockup) with its fake driver: three hosts
# behind one service and one chassis, from our fixture tests/fixtures/redfish/sushy-fake-systems.json
EMU_PORT="${GT_REDFISH_EMULATOR_PORT:-28090}"
cat > "$RUN/sushy-emulator.conf" <<CONF
# Written by tests/peers/redfish/start.sh.
import json
SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_STATE_DIR = '$RUN/sushy-emulator-state'
SUSHY_EMULATOR_FAKE_SYSTEMS = json.load(open('$FIXTURES/sushy-fake-systems.json'))
CONF
pid_alive "$RUN/sushy-emulator.pid" || rm -rf "$RUN/sushy-emulator-state"
port_free_or_ours tcp "$EMU_PORT" "$RUN/sushy-emulator.pid"
start_daemon "$RUN/sushy-emulator.pid" "$RUN/sushy-emulator.log" \
    "$VENV/bin/sushy-emulator" --config "$RUN/sushy-emulator.conf" --fake -i 127.0.0.1 -p "$EMU_PORT" \
    --ssl-certificate "$RUN/tls.crt" --ssl-key "$RUN/tls.key"
CHECK+=("https://127.0.0.1:$EMU_PORT|$RUN/sushy-emulator.log|sushy-emulator (fake driver, 3 systems)")

# ---- ../shared mockups, in place
SHARED_LIST=()
if shared_present && [ -d "$GT_SHARED_PEERS/redfish/mockups" ]; then
    MOCKS="$(cd "$GT_SHARED_PEERS/redfish/mockups" && pwd)"
    # order of the README table rows "| 18000 / 18100 | name | ...", then any others
    mapfile -t ordered < <(awk -F'|' '$2 ~ /^ *[0-9]+ *\/ *[0-9]+ *$/ { gsub(/ /, "", $3); print $3 }' \
        "$GT_SHARED_PEERS/README.md" 2>/dev/null || true)
    for m in "${ordered[@]}"; do [ -f "$MOCKS/$m/index.json" ] && SHARED_LIST+=("$m"); done
    for d in "$MOCKS"/*/; do
        m="$(basename "$d")"
        [ -f "$d/index.json" ] && [[ " ${SHARED_LIST[*]} " != *" $m "* ]] && SHARED_LIST+=("$m")
    done
    for i in "${!SHARED_LIST[@]}"; do
        m="${SHARED_LIST[$i]}"; port=$((SHARED_BASE + i))
        serve "sushy-shared-$m" "$port" "$MOCKS/$m" tls
        CHECK+=("https://127.0.0.1:$port|$RUN/sushy-shared-$m.log|shared $m")
    done
else
    skip_shared_msg
    # servers of shared mockups started earlier would now serve a vanished directory
    for f in "$RUN"/sushy-shared-*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
fi

# ---- every server must answer GET /redfish/v1/ with a service root (TLS verified with our CA)
for c in "${CHECK[@]}"; do
    IFS='|' read -r url logf name <<<"$c"
    port="${url##*:}"
    wait_tcp "$port" 20 || fail "$url" "$logf" "sushy-static ($name) not listening"
    body=""
    for _ in $(seq 1 20); do
        body="$(curl -fsS --max-time 5 --cacert "$RUN/ca.crt" "$url/redfish/v1/" 2>&1)" && break
        sleep 0.25
    done
    [[ "$body" == *'"RedfishVersion"'* ]] || fail "$url" "$logf" "GET $url/redfish/v1/ ($name) gave: ${body:0:200}"
done

kv=(
    "GT_REDFISH_URL=https://127.0.0.1:$BASE"
    "GT_REDFISH_SPARSE_URL=https://127.0.0.1:$((BASE + 1))"
    "GT_REDFISH_HTTP_URL=http://127.0.0.1:$HTTP_PORT"
    "GT_REDFISH_EMULATOR_URL=https://127.0.0.1:$EMU_PORT"
    "GT_REDFISH_EMULATOR_SYSTEMS=$FIXTURES/sushy-fake-systems.json"
    "GT_REDFISH_CA=$RUN/ca.crt"
    "GT_REDFISH_CERT=$RUN/tls.crt"
)
env_drop GT_REDFISH_SHARED_
if [ ${#SHARED_LIST[@]} -gt 0 ]; then
    kv+=("GT_REDFISH_SHARED_BASE_PORT=$SHARED_BASE" "GT_REDFISH_SHARED_MOCKUPS=$(IFS=,; echo "${SHARED_LIST[*]}")")
fi
env_merge "${kv[@]}"
log "up: https://127.0.0.1:$BASE-$((BASE + ${#OURS[@]} - 1)) (ours), http://127.0.0.1:$HTTP_PORT, ${#SHARED_LIST[@]} shared mockups from $SHARED_BASE"
