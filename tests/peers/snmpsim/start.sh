#!/usr/bin/env bash
# snmpsim peer: PyPI snmpsim 1.2.2 on udp 127.0.0.1:${GT_SNMPSIM_PORT:-26100}.
# Data (community = recording path without .snmprec, e.g. "UPS/apc-8641"):
#   1. PyPI snmpsim-data 1.0.1's recordings (those up to GT_SNMPSIM_MAX_MB=16 MB: 99 of 116),
#      unpacked from the installed package into $GT_PEERS_RUN/snmpsim/data-pypi,
#      plus "public" = a copy of UPS/apc-8641 (an APC AP8641 rack PDU)
#   2. ../shared/peers/snmp/data, read in place, when ../shared is present
# SNMPv3: user simulator, SHA "auctoritas", AES "privatus"; context name = community above.
# snmpsim refuses to run as root: it drops to nobody (venv under /opt, not /root).
set -euo pipefail
GT_PEER=snmpsim
source "$(dirname "$0")/../lib.sh"
RUN="$GT_PEERS_RUN/snmpsim"; mkdir -p "$RUN"
PORT="${GT_SNMPSIM_PORT:-26100}"
VENV="$GT_PEERS_VENV/venv-snmpsim"

need_apt snmp
# cryptography: without it every authPriv request fails with a decryption error
need_venv snmpsim "$GT_PYTHON" snmpsim==1.2.2 snmpsim-data==1.0.1 cryptography

# ---- unpack snmpsim-data's recordings into the run dir (once per version and size cap).
# 17 of the 116 recordings are 18-240 MB each unpacked (1.5 GB in all, plus 3.5 GB of snmpsim
# index and minutes of indexing); they are skipped unless GT_SNMPSIM_MAX_MB=0 (no cap).
PYPI_DATA="$RUN/data-pypi"
MAX_MB="${GT_SNMPSIM_MAX_MB:-16}"
SRC="$("$VENV/bin/python" -c 'import os, snmpsim_data; print(os.path.join(os.path.dirname(snmpsim_data.__file__), "data"))')"
STAMP="snmpsim-data $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("snmpsim-data"))') from $SRC, max ${MAX_MB} MB"
if [ "$(cat "$PYPI_DATA/.unpacked" 2>/dev/null)" != "$STAMP" ]; then
    log "unpacking snmpsim-data recordings from $SRC (max $MAX_MB MB each)"
    rm -rf "$PYPI_DATA" "$RUN/cache"; mkdir -p "$PYPI_DATA"
    "$VENV/bin/python" - "$SRC" "$PYPI_DATA" "$MAX_MB" <<'PY'
import bz2, os, sys
src, dst, max_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
cap = max_mb * 1024 * 1024 if max_mb > 0 else None
kept, skipped = 0, []
for root, _dirs, files in os.walk(src):
    for name in sorted(files):
        if not (name.endswith(".snmprec") or name.endswith(".snmprec.bz2")):
            continue
        rel = os.path.relpath(os.path.join(root, name), src)
        out = os.path.join(dst, rel[:-4] if rel.endswith(".bz2") else rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        opener = bz2.open if name.endswith(".bz2") else open
        size = 0
        with opener(os.path.join(root, name), "rb") as fin, open(out, "wb") as fout:
            while chunk := fin.read(1 << 20):
                size += len(chunk)
                if cap and size > cap:
                    break
                fout.write(chunk)
        if cap and size > cap:
            os.unlink(out)
            skipped.append(rel)
        else:
            kept += 1
with open(os.path.join(dst, "SKIPPED.txt"), "w") as fh:
    fh.write("".join(f"{r}\n" for r in sorted(skipped)))
print(f"unpacked {kept} recordings, skipped {len(skipped)} larger than {max_mb} MB (list: {dst}/SKIPPED.txt)", file=sys.stderr)
PY
    # a plain "public" community (a copy: snmpsim would name a symlink after its target)
    cp "$PYPI_DATA/UPS/apc-8641.snmprec" "$PYPI_DATA/public.snmprec"
    chmod -R a+rX "$PYPI_DATA"
    echo "$STAMP" > "$PYPI_DATA/.unpacked"
fi

DATA_ARGS=(--data-dir="$PYPI_DATA")
SHARED_DATA=0
if shared_present && [ -d "$GT_SHARED_PEERS/snmp/data" ]; then
    DATA_ARGS+=(--data-dir="$(cd "$GT_SHARED_PEERS/snmp/data" && pwd)")
    SHARED_DATA=1
else
    skip_shared_msg
fi

# a running snmpsim with other data dirs (../shared appeared or went away, new size cap) restarts
if pid_alive "$RUN/snmpsim.pid" && [ "$(cat "$RUN/data-dirs" 2>/dev/null)" != "${DATA_ARGS[*]} $STAMP" ]; then
    log "data directories changed: restarting snmpsim"
    stop_pidfile "$RUN/snmpsim.pid"
fi
if ! pid_alive "$RUN/snmpsim.pid"; then
    port_free_or_ours udp "$PORT" "$RUN/snmpsim.pid"
    echo "${DATA_ARGS[*]} $STAMP" > "$RUN/data-dirs"
    mkdir -p "$RUN/cache"; chown -R nobody:nogroup "$RUN/cache"
    start_daemon "$RUN/snmpsim.pid" "$RUN/snmpsim.log" \
        "$VENV/bin/snmpsim-command-responder" \
        --process-user=nobody --process-group=nogroup \
        --cache-dir="$RUN/cache" \
        --v3-engine-id=auto \
        --v3-user=simulator --v3-auth-key=auctoritas --v3-auth-proto=SHA \
        --v3-priv-key=privatus --v3-priv-proto=AES \
        "${DATA_ARGS[@]}" \
        --agent-udpv4-endpoint="127.0.0.1:$PORT"
fi

# the first start indexes every recording (tens of seconds); later starts reuse the cache
ok=0
for _ in $(seq 1 240); do
    if snmpget -v2c -c public -t 1 -r 0 -Oqv "127.0.0.1:$PORT" 1.3.6.1.2.1.1.5.0 >/dev/null 2>&1; then ok=1; break; fi
    pid_alive "$RUN/snmpsim.pid" || break
    sleep 0.5
done
[ $ok = 1 ] || fail "udp 127.0.0.1:$PORT" "$RUN/snmpsim.log" "snmpget -c public sysName.0 got no answer"

env_merge \
    "GT_SNMPSIM_ADDR=127.0.0.1:$PORT" \
    "GT_SNMPSIM_COMMUNITY=public" \
    "GT_SNMPSIM_V3_USER=simulator" "GT_SNMPSIM_V3_AUTH_PROTO=SHA" "GT_SNMPSIM_V3_AUTH_PASS=auctoritas" \
    "GT_SNMPSIM_V3_PRIV_PROTO=AES" "GT_SNMPSIM_V3_PRIV_PASS=privatus" \
    "GT_SNMPSIM_PYPI_DATA=$PYPI_DATA" \
    "GT_SNMPSIM_SHARED_DATA=$SHARED_DATA"
log "up on udp 127.0.0.1:$PORT (snmpsim-data + shared data: $SHARED_DATA)"
