#!/usr/bin/env bash
# Stop the NetBox peer: gunicorn and the private Redis (by PID file only). PostgreSQL is
# stopped only if netbox/start.sh started it and no other database has clients; the data stays.
set -euo pipefail
GT_PEER=netbox
source "$(dirname "$0")/../lib.sh"
RUN="$GT_PEERS_RUN/netbox"
cd /tmp
stop_pidfile "$RUN/gunicorn.pid"
stop_pidfile "$RUN/redis.pid"
if [ -f "$RUN/postgres.started-by-us" ]; then
    read -r ver cluster < "$RUN/postgres.started-by-us"
    port="$(pg_lsclusters -h | awk -v v="$ver" -v c="$cluster" '$1 == v && $2 == c { print $3 }')"
    others="$(runuser -u postgres -- psql -p "$port" -qtAX -c \
        "select count(*) from pg_stat_activity where datname is not null and datname not in ('${GT_NETBOX_DBNAME:-gt_netbox}', 'postgres') and pid <> pg_backend_pid()" 2>/dev/null || echo 0)"
    if [ "${others:-0}" = 0 ]; then
        pg_ctlcluster "$ver" "$cluster" stop && log "stopped PostgreSQL $ver/$cluster"
        rm -f "$RUN/postgres.started-by-us"
    else
        log "PostgreSQL $ver/$cluster left running: $others client(s) of other databases"
    fi
fi
env_drop GT_NETBOX_
env_drop GT_PG_URL
