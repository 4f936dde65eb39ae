#!/usr/bin/env bash
# NetBox peer: NetBox 4.7.3 (PyPI `netbox`, gunicorn) on http://127.0.0.1:${GT_NETBOX_PORT:-28800}
#   PostgreSQL: Debian's cluster (started with listen_addresses=127.0.0.1 if it was down),
#               own role gt_netbox + database ${GT_NETBOX_DBNAME:-gt_netbox}; also role gt_store +
#               database gt_store (locale C) for the collector's PostgreSQL store tests (GT_PG_URL;
#               each test creates and drops its own schema there)
#   Redis:      a private redis-server on 127.0.0.1:${GT_NETBOX_REDIS_PORT:-26379}
#   login admin / GtAdminPass123; API token v2 (Authorization: Bearer nbt_gtpeers00001.…),
#   legacy v1 token (Authorization: Token …) — all values in peers.env
# First start ~7 min (pip ~1 min, migrations 3-5 min); later starts take seconds.
# Needs a Python >= 3.12 (pyenv's here; override with GT_NETBOX_PYTHON). Idempotent.
# Every credential here is a TEST value for a loopback-only peer.
set -euo pipefail
GT_PEER=netbox
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../lib.sh"
RUN="$GT_PEERS_RUN/netbox"; mkdir -p "$RUN"
cd /tmp   # runuser postgres needs a readable cwd

PORT="${GT_NETBOX_PORT:-28800}"
REDIS_PORT="${GT_NETBOX_REDIS_PORT:-26379}"
WORKERS="${GT_NETBOX_WORKERS:-2}"
VENV="$GT_PEERS_VENV/venv-netbox"
NB="$VENV/bin/netbox"
export NETBOX_ROOT="$RUN/root"
DB="${GT_NETBOX_DBNAME:-gt_netbox}" DB_USER=gt_netbox DB_PASS=gtNetboxDbPass1
export GT_NB_USER=admin GT_NB_PASSWORD=GtAdminPass123
export GT_NB_V2_KEY=gtpeers00001 GT_NB_V2_SECRET=gtPeersNetboxV2Secret0123456789abcdefghi
export GT_NB_V1_TOKEN=0gtpeers0legacy0v1token00000000000000001
TOKEN="nbt_$GT_NB_V2_KEY.$GT_NB_V2_SECRET"
URL="http://127.0.0.1:$PORT"

T0=$SECONDS
step() { log "[$((SECONDS - T0)) s] $*"; }

need_apt postgresql redis-server curl

# ---- venv (python >= 3.12)
find_python() {
    local c
    for c in "${GT_NETBOX_PYTHON:-}" "$(command -v python3.12 || true)" "$(command -v python3.13 || true)" \
             /root/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.13*/bin/python3.13; do
        [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
            && { echo "$c"; return 0; }
    done
    return 1
}
if [ "$(cat "$VENV/.gt-peers-installed" 2>/dev/null)" != "netbox==4.7.3 gunicorn" ]; then
    PY="$(find_python)" || fail "$URL" "" "no Python >= 3.12 found (NetBox 4.7 needs one); set GT_NETBOX_PYTHON"
    need_venv netbox "$PY" netbox==4.7.3 gunicorn
fi
step "venv ready"

# ---- PostgreSQL: Debian's first cluster; start it loopback-only if it is down
read -r PG_VER PG_CLUSTER PG_PORT PG_STATUS _ < <(pg_lsclusters -h 2>/dev/null | head -n 1) || true
if [ -z "${PG_VER:-}" ]; then
    PG_VER="$(ls /usr/lib/postgresql | sort -n | tail -n 1)"
    log "creating PostgreSQL cluster $PG_VER/main"
    pg_createcluster "$PG_VER" main >/dev/null
    read -r PG_VER PG_CLUSTER PG_PORT PG_STATUS _ < <(pg_lsclusters -h | head -n 1)
fi
if [ "$PG_STATUS" != online ]; then
    log "starting PostgreSQL $PG_VER/$PG_CLUSTER on 127.0.0.1:$PG_PORT"
    pg_ctlcluster "$PG_VER" "$PG_CLUSTER" start -- -o "-c listen_addresses=127.0.0.1" \
        || fail "127.0.0.1:$PG_PORT" "/var/log/postgresql/postgresql-$PG_VER-$PG_CLUSTER.log" "PostgreSQL did not start"
    echo "$PG_VER $PG_CLUSTER" > "$RUN/postgres.started-by-us"
fi
psql_pg() { runuser -u postgres -- psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -qtAX "$@"; }
for _ in $(seq 1 50); do psql_pg -c 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
[ "$(psql_pg -c "select 1 from pg_roles where rolname = '$DB_USER'")" = 1 ] \
    || psql_pg -c "create role $DB_USER login password '$DB_PASS'"
[ "$(psql_pg -c "select 1 from pg_database where datname = '$DB'")" = 1 ] \
    || psql_pg -c "create database $DB owner $DB_USER"
STORE_DB=gt_store STORE_USER=gt_store STORE_PASS=gtStoreDbPass1
[ "$(psql_pg -c "select 1 from pg_roles where rolname = '$STORE_USER'")" = 1 ] \
    || psql_pg -c "create role $STORE_USER login password '$STORE_PASS'"
[ "$(psql_pg -c "select 1 from pg_database where datname = '$STORE_DB'")" = 1 ] \
    || psql_pg -c "create database $STORE_DB owner $STORE_USER template template0 encoding 'UTF8' locale 'C'"
env_merge "GT_PG_URL=postgres://$STORE_USER:$STORE_PASS@127.0.0.1:$PG_PORT/$STORE_DB"
step "postgres $PG_VER/$PG_CLUSTER on 127.0.0.1:$PG_PORT, databases $DB and $STORE_DB"

# ---- private Redis
if ! pid_alive "$RUN/redis.pid"; then
    port_free_or_ours tcp "$REDIS_PORT" "$RUN/redis.pid"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log" --dir "$RUN"
fi
for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG \
    || fail "tcp 127.0.0.1:$REDIS_PORT" "$RUN/redis.log" "redis did not answer PING"
step "redis on 127.0.0.1:$REDIS_PORT"

# ---- configuration (rewritten when it changes)
mkdir -p "$NETBOX_ROOT/conf"
touch "$NETBOX_ROOT/conf/__init__.py"
cat > "$NETBOX_ROOT/conf/configuration.py.new" <<CONF
# generated by tests/peers/netbox/start.sh: NetBox test peer, loopback only, TEST values
ALLOWED_HOSTS = ['127.0.0.1', 'localhost']
DATABASES = {'default': {
    'ENGINE': 'django.db.backends.postgresql', 'NAME': '$DB', 'USER': '$DB_USER', 'PASSWORD': '$DB_PASS',
    'HOST': '127.0.0.1', 'PORT': '$PG_PORT', 'CONN_MAX_AGE': 300,
}}
REDIS = {
    'tasks':   {'HOST': '127.0.0.1', 'PORT': $REDIS_PORT, 'USERNAME': '', 'PASSWORD': '', 'DATABASE': 0, 'SSL': False},
    'caching': {'HOST': '127.0.0.1', 'PORT': $REDIS_PORT, 'USERNAME': '', 'PASSWORD': '', 'DATABASE': 1, 'SSL': False},
}
SECRET_KEY = 'gt-peers-netbox-secret-key-test-only-0123456789abcdefghijklmnopqrstuvwxyz'
# v2 API tokens (nbt_<key>.<secret>) are HMACs with a pepper
API_TOKEN_PEPPERS = {1: 'gt-peers-netbox-token-pepper-test-only-0123456789abcdefghijklmnop'}
TIME_ZONE = 'UTC'
DEBUG = False
# no internet: no census, release check or plugin catalogue
CENSUS_REPORTING_ENABLED = False
ISOLATED_DEPLOYMENT = True
RELEASE_CHECK_URL = None
CONF
if cmp -s "$NETBOX_ROOT/conf/configuration.py.new" "$NETBOX_ROOT/conf/configuration.py"; then
    rm "$NETBOX_ROOT/conf/configuration.py.new"
else
    mv "$NETBOX_ROOT/conf/configuration.py.new" "$NETBOX_ROOT/conf/configuration.py"
    log "wrote $NETBOX_ROOT/conf/configuration.py"
fi

api_ok() {  # api_ok : NetBox answers /api/status/ with 200 for the fixed v2 token
    [ "$(curl -s -o "$RUN/status.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$URL/api/status/" || true)" = 200 ]
}

if pid_alive "$RUN/gunicorn.pid" && api_ok; then
    step "gunicorn already running and answering"
else
    # ---- schema and static files: only when needed. `netbox migrate --check` costs ~10 s of
    # Django start-up, so a stamp (NetBox version + applied-migration count) skips it when nothing changed.
    applied="$(psql_pg -d "$DB" -c "select count(*) from django_migrations" 2>/dev/null || echo none)"
    want_stamp="$(basename "$(ls -d "$VENV"/lib/python3*/site-packages/netbox-*.dist-info | head -n 1)") $DB $applied"
    if [ "$(cat "$RUN/migrated.stamp" 2>/dev/null)" != "$want_stamp" ] || [ ! -d "$NETBOX_ROOT/static" ]; then
        if ! "$NB" migrate --check >/dev/null 2>&1; then
            log "applying migrations (netbox upgrade): 3-5 minutes on an empty database"
            "$NB" upgrade --no-input >"$RUN/upgrade.log" 2>&1 || fail "$URL" "$RUN/upgrade.log" "netbox upgrade failed"
        elif [ ! -d "$NETBOX_ROOT/static" ]; then
            "$NB" collectstatic --no-input >"$RUN/collectstatic.log" 2>&1 \
                || fail "$URL" "$RUN/collectstatic.log" "collectstatic failed"
        fi
        applied="$(psql_pg -d "$DB" -c "select count(*) from django_migrations")"
        echo "${want_stamp% *} $applied" > "$RUN/migrated.stamp"
    fi
    step "schema and static files ready"

    # ---- gunicorn (--preload: NetBox is imported once, then the workers fork)
    if ! pid_alive "$RUN/gunicorn.pid"; then
        port_free_or_ours tcp "$PORT" "$RUN/gunicorn.pid"
        start_daemon "$RUN/gunicorn.pid" "$RUN/gunicorn.log" "$VENV/bin/gunicorn" \
            --bind "127.0.0.1:$PORT" --workers "$WORKERS" --threads 4 --timeout 120 --preload \
            --pythonpath "$HERE" wsgi:application
    fi
    for _ in $(seq 1 300); do
        code="$(curl -s -o /dev/null -w '%{http_code}' "$URL/api/status/" || true)"
        [ "$code" != 000 ] && break
        pid_alive "$RUN/gunicorn.pid" || break
        sleep 0.2
    done
    # ---- superuser and fixed tokens (only when the token is not accepted yet)
    if ! api_ok; then
        "$VENV/bin/python" "$HERE/bootstrap.py" >>"$RUN/bootstrap.log" 2>&1 \
            || fail "$URL" "$RUN/bootstrap.log" "bootstrap.py failed"
        step "superuser and tokens created"
    fi
    api_ok || fail "$URL" "$RUN/gunicorn.log" "GET /api/status/ with the v2 token does not give HTTP 200"
    step "gunicorn answering: NetBox $(sed -n 's/.*"netbox-version": *"\([^"]*\)".*/\1/p' "$RUN/status.json")"
fi

env_merge \
    "GT_NETBOX_URL=$URL" "GT_NETBOX_TOKEN=$TOKEN" "GT_NETBOX_AUTH_HEADER=Authorization: Bearer $TOKEN" \
    "GT_NETBOX_TOKEN_V1=$GT_NB_V1_TOKEN" "GT_NETBOX_USER=$GT_NB_USER" "GT_NETBOX_PASSWORD=$GT_NB_PASSWORD" \
    "GT_NETBOX_REDIS_ADDR=127.0.0.1:$REDIS_PORT" "GT_NETBOX_DB=postgresql://$DB_USER:$DB_PASS@127.0.0.1:$PG_PORT/$DB"
log "up on $URL (total $((SECONDS - T0)) s)"
