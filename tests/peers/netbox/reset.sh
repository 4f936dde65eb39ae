#!/usr/bin/env bash
# Empty the NetBox test peer's data in well under a second, without re-running migrations:
# one SQL TRUNCATE ... RESTART IDENTITY CASCADE of the non-empty tables of the data apps (dcim,
# ipam, circuits, tenancy, virtualization, wireless, vpn, extras: devices, racks, sites,
# manufacturers, device types, roles, interfaces, MAC addresses, custom fields, tags, ...)
# and of the change log, then a flush of NetBox's Redis cache. Users and API tokens are kept;
# the IDs of the emptied tables start again at 1.
set -euo pipefail
GT_PEER=netbox
source "$(dirname "$0")/../lib.sh"
REDIS_PORT="${GT_NETBOX_REDIS_PORT:-26379}"
cd /tmp

pg_port="$(pg_lsclusters -h | awk '$4 == "online" { print $3; exit }')"
[ -n "$pg_port" ] || fail "PostgreSQL" "" "no PostgreSQL cluster is online (start netbox first)"
DB="${GT_NETBOX_DBNAME:-gt_netbox}"
psql_nb() { PGPASSWORD=gtNetboxDbPass1 psql -h 127.0.0.1 -p "$pg_port" -U gt_netbox -d "$DB" -v ON_ERROR_STOP=1 -qtAX "$@"; }

# TRUNCATE only the tables that hold rows (CASCADE takes their dependants along): each truncated
# table gets new files, and truncating all ~170 every time is slow on a busy disk.
out="$(psql_nb -c "
do \$\$
declare t text; full_tables text[] := '{}'; found_any boolean; n int := 0;
begin
  for t in select format('%I', tablename) from pg_tables
           where schemaname = 'public'
             and (tablename ~ '^(dcim|ipam|circuits|tenancy|virtualization|wireless|vpn|extras)_'
                  or tablename = 'core_objectchange')
  loop
    n := n + 1;
    execute format('select exists (select 1 from %s)', t) into found_any;
    if found_any then full_tables := full_tables || t; end if;
  end loop;
  if n = 0 then raise exception 'no NetBox tables in this database (run netbox/start.sh)'; end if;
  if cardinality(full_tables) > 0 then
    execute 'truncate ' || array_to_string(full_tables, ', ') || ' restart identity cascade';
  end if;
  raise notice 'emptied % of % tables', cardinality(full_tables), n;
end \$\$;" 2>&1)" || fail "PostgreSQL 127.0.0.1:$pg_port" "" "reset of database $DB failed: $out"
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -n 1 flushdb >/dev/null 2>&1 || warn "could not flush the Redis cache on :$REDIS_PORT"
log "NetBox data emptied (${out##*NOTICE:  }); users and tokens kept"
