#!/usr/bin/env bash
# Client-side checks of every running test peer, with the stock clients (snmpget, curl, mbpoll,
# ipmitool, mosquitto_pub/sub), using the addresses and credentials in peers.env.
# Peers without keys in peers.env (not started) are skipped. Ends with "N passed, M failed".
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
[ -f "$GT_ENV_FILE" ] || { echo "no $GT_ENV_FILE: start the peers first" >&2; exit 1; }
# shellcheck disable=SC1090
source "$GT_ENV_FILE"
pass=0 failn=0

# check NAME EXPECTED-SUBSTRING COMMAND... : run COMMAND, pass when its output contains EXPECTED
check() {
    local name="$1" want="$2" out; shift 2
    out="$("$@" 2>&1)" || true
    if [[ "$out" == *"$want"* ]]; then
        pass=$((pass + 1)); printf 'ok    %s\n' "$name"
    else
        failn=$((failn + 1)); printf 'FAIL  %s\n      wanted "%s", got: %s\n' "$name" "$want" "$(head -c 400 <<<"$out")"
    fi
}
# refuse NAME COMMAND... : pass when COMMAND fails (an access that must be refused)
refuse() {
    local name="$1"; shift
    if "$@" >/dev/null 2>&1; then
        failn=$((failn + 1)); printf 'FAIL  %s (was accepted)\n' "$name"
    else
        pass=$((pass + 1)); printf 'ok    %s (refused)\n' "$name"
    fi
}

if [ -n "${GT_SNMPD_ADDR:-}" ]; then
    check "snmpd v2c sysName" "$GT_SNMPD_SYSNAME" snmpget -v2c -c "$GT_SNMPD_COMMUNITY" -Oqv "$GT_SNMPD_ADDR" 1.3.6.1.2.1.1.5.0
    check "snmpd v3 SHA/AES sysLocation" "$GT_SNMPD_SYSLOCATION" snmpget -v3 -l authPriv -u "$GT_SNMPD_V3_USER" \
        -a SHA -A "$GT_SNMPD_V3_AUTH_PASS" -x AES -X "$GT_SNMPD_V3_PRIV_PASS" -Oqv "$GT_SNMPD_ADDR" 1.3.6.1.2.1.1.6.0
    check "snmpd v3 SHA-256/AES sysName" "$GT_SNMPD_SYSNAME" snmpget -v3 -l authPriv -u "$GT_SNMPD_V3_USER_SHA256" \
        -a SHA-256 -A "$GT_SNMPD_V3_AUTH_PASS_SHA256" -x AES -X "$GT_SNMPD_V3_PRIV_PASS_SHA256" -Oqv "$GT_SNMPD_ADDR" 1.3.6.1.2.1.1.5.0
    check "snmpd ifPhysAddress walk" "1.3.6.1.2.1.2.2.1.6" snmpbulkwalk -v2c -c "$GT_SNMPD_COMMUNITY" -On "$GT_SNMPD_ADDR" 1.3.6.1.2.1.2.2.1.6
    refuse "snmpd wrong v3 password" snmpget -v3 -l authPriv -u "$GT_SNMPD_V3_USER" -a SHA -A wrongPass123 \
        -x AES -X "$GT_SNMPD_V3_PRIV_PASS" -t 1 -r 0 "$GT_SNMPD_ADDR" 1.3.6.1.2.1.1.5.0
fi

if [ -n "${GT_SNMPSIM_ADDR:-}" ]; then
    check "snmpsim public sysName (APC AP8641)" "pwr-dc01-pdu-rack1-01" snmpget -v2c -c public -Oqv "$GT_SNMPSIM_ADDR" 1.3.6.1.2.1.1.5.0
    check "snmpsim public rPDUIdentSerialNumber" "3F3452A52295" snmpget -v2c -c public -Oqv "$GT_SNMPSIM_ADDR" 1.3.6.1.4.1.318.1.1.12.1.6.0
    check "snmpsim UPS/eaton-93e-80 sysObjectID" "1.3.6.1.4.1" snmpget -v2c -c UPS/eaton-93e-80 -On "$GT_SNMPSIM_ADDR" 1.3.6.1.2.1.1.2.0
    check "snmpsim cloud/arista entPhysicalSerialNum.1" "JPE15151458" snmpget -v2c -c cloud/arista-dcs-7150s-52-cl -Oqv "$GT_SNMPSIM_ADDR" 1.3.6.1.2.1.47.1.1.1.1.11.1
    check "snmpsim v3 SHA/AES context public" "pwr-dc01-pdu-rack1-01" snmpget -v3 -l authPriv -u "$GT_SNMPSIM_V3_USER" \
        -a SHA -A "$GT_SNMPSIM_V3_AUTH_PASS" -x AES -X "$GT_SNMPSIM_V3_PRIV_PASS" -n public -Oqv "$GT_SNMPSIM_ADDR" 1.3.6.1.2.1.1.5.0
    if [ "${GT_SNMPSIM_SHARED_DATA:-0}" = 1 ]; then
        check "snmpsim shared ups-apc-smt750x serial" "AS1907242163" snmpget -v2c -c ups-apc-smt750x -Oqv "$GT_SNMPSIM_ADDR" 1.3.6.1.4.1.318.1.1.1.1.2.3.0
    fi
fi

if [ -n "${GT_MODBUS_UPS_ADDR:-}" ]; then
    check "modbus UPS TCP serial (HR 20..27)" "0x4754" mbpoll -1 -m tcp -p "${GT_MODBUS_UPS_ADDR##*:}" -a 1 -t 4:hex -0 -r 20 -c 8 127.0.0.1
    check "modbus UPS TCP floats (HR 100..)" "[100]:" mbpoll -1 -m tcp -p "${GT_MODBUS_UPS_ADDR##*:}" -a 1 -t 4:float -B -0 -r 100 -c 10 127.0.0.1
    check "modbus meter TCP serial (HR 0xFC00)" "$GT_MODBUS_METER_SERIAL" mbpoll -1 -m tcp -p "${GT_MODBUS_METER_ADDR##*:}" -a 1 -t 4:int -B -0 -r 0xFC00 -c 1 127.0.0.1
    check "modbus meter RTU L1-L3 voltage (IR 0..)" "[4]:" mbpoll -1 -m rtu -b "$GT_MODBUS_RTU_BAUD" -P none -a 1 -t 3:float -B -0 -r 0 -c 3 "$GT_MODBUS_RTU_TTY"
    check "modbus meter RTU serial" "$GT_MODBUS_METER_SERIAL" mbpoll -1 -m rtu -b "$GT_MODBUS_RTU_BAUD" -P none -a 1 -t 4:int -B -0 -r 0xFC00 -c 1 "$GT_MODBUS_RTU_TTY"
fi

if [ -n "${GT_REDFISH_URL:-}" ]; then
    check "redfish gt-rack-server chassis serial" '"GTSRV0000001"' curl -fsS --cacert "$GT_REDFISH_CA" "$GT_REDFISH_URL/redfish/v1/Chassis/1U"
    check "redfish gt-rack-server power 412 W" '"PowerConsumedWatts": 412' curl -fsS --cacert "$GT_REDFISH_CA" "$GT_REDFISH_URL/redfish/v1/Chassis/1U/Power"
    check "redfish gt-sparse-bmc dash MAC" '02-47-54-30-00-01' curl -fsS --cacert "$GT_REDFISH_CA" "$GT_REDFISH_SPARSE_URL/redfish/v1/Managers/bmc/EthernetInterfaces/eth0"
    check "redfish plain http" '"RedfishVersion"' curl -fsS "$GT_REDFISH_HTTP_URL/redfish/v1/"
    if [ -n "${GT_REDFISH_SHARED_BASE_PORT:-}" ]; then
        IFS=, read -r -a mocks <<<"$GT_REDFISH_SHARED_MOCKUPS"
        for i in "${!mocks[@]}"; do
            check "redfish shared ${mocks[$i]} (:$((GT_REDFISH_SHARED_BASE_PORT + i)))" '"RedfishVersion"' \
                curl -fsS --cacert "$GT_REDFISH_CA" "https://127.0.0.1:$((GT_REDFISH_SHARED_BASE_PORT + i))/redfish/v1/"
        done
    fi
fi

if [ -n "${GT_IPMI_ADDR:-}" ]; then
    ipmi() { ipmitool -I lanplus -C "$GT_IPMI_CIPHER_SUITE" -H "${GT_IPMI_ADDR%:*}" -p "${GT_IPMI_ADDR##*:}" "$@"; }
    check "ipmi fru print: chassis serial" "GTCH0000001" ipmi -U "$GT_IPMI_USER" -P "$GT_IPMI_PASS" fru print
    check "ipmi fru print: asset tag" "DC1-R07-U12" ipmi -U "$GT_IPMI_USER" -P "$GT_IPMI_PASS" fru print
    check "ipmi sdr list: power" "412 Watts" ipmi -U "$GT_IPMI_USER" -P "$GT_IPMI_PASS" sdr list
    check "ipmi sdr list: fan" "6840 RPM" ipmi -U "$GT_IPMI_USER" -P "$GT_IPMI_PASS" sdr list
    check "ipmi lan print 1: MAC" "02:47:54:00:00:01" ipmi -U "$GT_IPMI_USER" -P "$GT_IPMI_PASS" lan print 1
    check "ipmi user monitor (USER level)" "degrees C" ipmi -U "$GT_IPMI_RO_USER" -P "$GT_IPMI_RO_PASS" -L USER sdr list
    refuse "ipmi wrong password" ipmi -U "$GT_IPMI_USER" -P wrongpass -N 1 -R 1 mc info
fi

if [ -n "${GT_MQTT_ADDR:-}" ]; then
    h="${GT_MQTT_ADDR%:*}" p="${GT_MQTT_ADDR##*:}"
    mosquitto_pub -h "$h" -p "$p" -u "$GT_MQTT_USER" -P "$GT_MQTT_PASS" -q 1 -r -t groundtruth/check/retained -m hello-collector || true
    check "mqtt agent->collector retained message" "hello-collector" \
        mosquitto_sub -h "$h" -p "$p" -u "$GT_MQTT_COLLECTOR_USER" -P "$GT_MQTT_COLLECTOR_PASS" -t groundtruth/check/retained -C 1 -W 5
    mosquitto_pub -h "$h" -p "$p" -u "$GT_MQTT_USER" -P "$GT_MQTT_PASS" -q 1 -r -t groundtruth/check/retained -n || true
    refuse "mqtt anonymous on the auth listener" mosquitto_pub -h "$h" -p "$p" -t groundtruth/x -m x
    refuse "mqtt wrong password" mosquitto_pub -h "$h" -p "$p" -u "$GT_MQTT_USER" -P wrong -t groundtruth/x -m x
    # the ACL: a subscription outside groundtruth/# receives nothing, even a retained message
    mosquitto_pub -h "${GT_MQTT_ANON_ADDR%:*}" -p "${GT_MQTT_ANON_ADDR##*:}" -r -t outside/acl -m secret || true
    refuse "mqtt ACL denies outside/# (anonymous listener's retained msg)" \
        mosquitto_sub -h "$h" -p "$p" -u "$GT_MQTT_USER" -P "$GT_MQTT_PASS" -t outside/acl -C 1 -W 2
    mosquitto_pub -h "${GT_MQTT_ANON_ADDR%:*}" -p "${GT_MQTT_ANON_ADDR##*:}" -r -t outside/acl -n || true
fi

if [ -n "${GT_NETBOX_URL:-}" ]; then
    check "netbox /api/status/ (v2 Bearer token)" '"netbox-version":"4.7' curl -fsS -H "$GT_NETBOX_AUTH_HEADER" "$GT_NETBOX_URL/api/status/"
    check "netbox /api/dcim/devices/ (v1 Token)" '"count"' curl -fsS -H "Authorization: Token $GT_NETBOX_TOKEN_V1" "$GT_NETBOX_URL/api/dcim/devices/"
    check "netbox rejects a bad token" '"detail"' curl -sS -H "Authorization: Bearer nbt_gtpeers00001.wrong" "$GT_NETBOX_URL/api/dcim/sites/"
    check "netbox web UI static file" "200" curl -s -o /dev/null -w '%{http_code}' "$GT_NETBOX_URL/static/netbox.css"
fi

echo "$pass passed, $failn failed"
[ "$failn" -eq 0 ]
