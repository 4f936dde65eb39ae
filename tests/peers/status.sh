#!/usr/bin/env bash
# Show which test peers run: per peer its processes (from the PID files) and what they listen on.
# Exit status: 0 when every peer that has PID files is fully up, 1 when one is partly down.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib.sh"
rc=0
sockets="$(ss -Hlntup 2>/dev/null || true)"
for p in snmpd snmpsim modbus redfish ipmi mqtt rt netbox; do
    shopt -s nullglob
    pidfiles=("$GT_PEERS_RUN/$p"/*.pid)
    shopt -u nullglob
    if [ ${#pidfiles[@]} -eq 0 ]; then
        printf '%-8s stopped\n' "$p"
        continue
    fi
    up=0 lines=()
    for f in "${pidfiles[@]}"; do
        pid="$(cat "$f" 2>/dev/null || true)"
        name="$(basename "$f" .pid)"
        if [ -n "$pid" ] && proc_alive "$pid"; then
            up=$((up + 1))
            # every listening socket of that process (and of its children, e.g. gunicorn workers)
            pids="$pid $({ pgrep -P "$pid" || true; } | tr '\n' ' ')"
            addrs=""
            for q in $pids; do
                addrs+="$({ grep -E "pid=$q," <<<"$sockets" || true; } | awk '{print $1 "/" $5}' | tr '\n' ' ')"
            done
            lines+=("    $(printf '%-42s pid %-7s %s' "$name" "$pid" "${addrs:-(no socket)}")")
        else
            lines+=("    $(printf '%-42s DEAD (pid %s)' "$name" "${pid:-?}")")
        fi
    done
    if [ "$up" -eq ${#pidfiles[@]} ]; then state=running; else state="PARTLY DOWN ($up/${#pidfiles[@]})"; rc=1; fi
    printf '%-8s %s\n' "$p" "$state"
    printf '%s\n' "${lines[@]}"
done
[ -f "$GT_ENV_FILE" ] && echo "env file: $GT_ENV_FILE ($(grep -c '^GT_' "$GT_ENV_FILE") keys)"
exit $rc
