# Shared helpers for groundtruth's test-peer scripts (sourced, never executed).
#
# Every peer binds 127.0.0.1 only. Runtime state (PID files, logs, generated
# configs, TLS cert, ptys) lives in $GT_PEERS_RUN, Python virtualenvs in
# $GT_PEERS_VENV; neither is in git. Connection details for the tests are merged
# into $GT_PEERS_RUN/peers.env by each peer's start script.

GT_PEERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GT_REPO_ROOT="$(cd "$GT_PEERS_DIR/../.." && pwd)"
GT_PEERS_RUN="${GT_PEERS_RUN:-/tmp/gt-peers}"
GT_PEERS_VENV="${GT_PEERS_VENV:-/opt/gt-peers}"
# ../shared/peers beside the repo: recordings/mockups served IN PLACE, never copied.
GT_SHARED_PEERS="${GT_SHARED_PEERS:-$GT_REPO_ROOT/../shared/peers}"
# physical path: two checkouts (say /work/main and a CI clone whose ../shared is a symlink) must
# name the same data the same way, or each would restart the other's servers
if [ -d "$GT_SHARED_PEERS" ]; then GT_SHARED_PEERS="$(cd "$GT_SHARED_PEERS" && pwd -P)"; fi
# Debian's interpreter for the venvs: snmpsim drops to 'nobody', which cannot
# read a pyenv interpreter under /root (mode 700).
GT_PYTHON="${GT_PYTHON:-/usr/bin/python3}"
GT_ENV_FILE="$GT_PEERS_RUN/peers.env"
export GT_PEERS_RUN GT_PEERS_VENV

mkdir -p "$GT_PEERS_RUN"
chmod 755 "$GT_PEERS_RUN"

log()  { echo "[$(date +%H:%M:%S)] ${GT_PEER:-peers}: $*" >&2; }
warn() { echo "[$(date +%H:%M:%S)] ${GT_PEER:-peers}: WARNING: $*" >&2; }

# fail PORT LOGFILE MESSAGE : report a peer that did not come up, then exit 1.
fail() {
    local port="$1" logf="$2"; shift 2
    {
        echo "!!!! peer '${GT_PEER:-?}' FAILED (port/address: $port): $*"
        if [ -n "$logf" ] && [ -f "$logf" ]; then
            echo "---- last 20 lines of $logf"
            tail -n 20 "$logf"
            echo "----"
        fi
    } >&2
    exit 1
}

# shared_present : true when ../shared/peers exists next to the repo.
shared_present() { [ -d "$GT_SHARED_PEERS" ]; }
skip_shared_msg() {
    echo "######## SKIP: ../shared not present ($GT_SHARED_PEERS), serving only our own fixtures ########" >&2
}

# ------------------------------------------------------------------ installs
_pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}
# need_apt PKG... : install the Debian packages that are missing (apt-get update once).
need_apt() {
    local missing=() p
    for p in "$@"; do _pkg_installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "${GT_APT_UPDATED:-0}" != 1 ]; then
        log "apt-get update"
        apt-get update -qq >/dev/null || warn "apt-get update failed (trying the install anyway)"
        export GT_APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
}

# need_venv NAME PYTHON PKG... : venv $GT_PEERS_VENV/venv-NAME with PKGs, built once.
# The marker file holds the package list, so changing the list rebuilds.
need_venv() {
    local name="$1" py="$2"; shift 2
    local v="$GT_PEERS_VENV/venv-$name" want="$*"
    if [ -f "$v/.gt-peers-installed" ] && [ "$(cat "$v/.gt-peers-installed")" = "$want" ]; then
        return 0
    fi
    log "building venv $v: pip install $want"
    mkdir -p "$GT_PEERS_VENV"; chmod 755 "$GT_PEERS_VENV"
    [ -x "$v/bin/python" ] || "$py" -m venv "$v"
    "$v/bin/pip" install -q --disable-pip-version-check "$@" || return 1
    echo "$want" > "$v/.gt-peers-installed"
}

# ------------------------------------------------------------------ processes
# proc_alive PID : live and not a zombie (detached daemons are reaped late by PID 1).
proc_alive() {
    local st
    st="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [ -n "$st" ] && [ "${st#Z}" = "$st" ]
}
pid_alive() {   # pid_alive PIDFILE
    [ -f "$1" ] || return 1
    local pid; pid="$(cat "$1" 2>/dev/null)"
    [ -n "$pid" ] && proc_alive "$pid"
}

# start_daemon PIDFILE LOGFILE CMD... : start CMD detached (own session), record its PID.
# Does nothing (idempotent) if the PID in PIDFILE is already alive.
start_daemon() {
    local pidf="$1" logf="$2"; shift 2
    if pid_alive "$pidf"; then
        log "already running (pid $(cat "$pidf")): $(basename "$pidf" .pid)"
        return 0
    fi
    : >> "$logf"
    nohup setsid "$@" >>"$logf" 2>&1 </dev/null &
    echo $! > "$pidf"
    log "started pid $!: $*"
    return 0
}

# stop_pidfile PIDFILE : TERM the recorded PID (only that one), wait up to 5 s, then KILL.
stop_pidfile() {
    local f="$1" pid
    if ! pid_alive "$f"; then rm -f "$f"; return 0; fi
    pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do proc_alive "$pid" || break; sleep 0.1; done
    if proc_alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; sleep 0.1; fi
    rm -f "$f"
    log "stopped pid $pid ($(basename "$f" .pid))"
}

# ------------------------------------------------------------------ ports
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
udp_bound() { ss -Hlun "sport = :$1" 2>/dev/null | grep -q .; }
tcp_bound() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
# wait_tcp PORT [SECONDS] / wait_udp PORT [SECONDS]
wait_tcp() {
    local i n=$(( ${2:-20} * 5 ))
    for ((i = 0; i < n; i++)); do tcp_open "$1" && return 0; sleep 0.2; done
    return 1
}
wait_udp() {
    local i n=$(( ${2:-20} * 5 ))
    for ((i = 0; i < n; i++)); do udp_bound "$1" && return 0; sleep 0.2; done
    return 1
}
# port_free_or_ours PROTO PORT PIDFILE : fail early if a foreign process holds the port.
port_free_or_ours() {
    local proto="$1" port="$2" pidf="$3"
    pid_alive "$pidf" && return 0
    if { [ "$proto" = udp ] && udp_bound "$port"; } || { [ "$proto" = tcp ] && tcp_bound "$port"; }; then
        fail "$proto 127.0.0.1:$port" "" "port already in use by another process: $(ss -Hlnp${proto:0:1} "sport = :$port" | head -1)"
    fi
}

# ------------------------------------------------------------------ peers.env
# _env_quote VALUE : bare when safe, else single-quoted (shell-sourceable either way).
_env_quote() {
    case "$1" in
        *[!A-Za-z0-9_./:@%+,=-]*|'') printf "'%s'" "${1//\'/\'\\\'\'}" ;;
        *) printf '%s' "$1" ;;
    esac
}
# env_merge KEY=VALUE... : replace those keys in peers.env, keep everybody else's.
env_merge() {
    local kv keys=() tmp
    (
        flock 9
        tmp="$(mktemp "$GT_PEERS_RUN/.peers.env.XXXXXX")"
        [ -f "$GT_ENV_FILE" ] || printf '# groundtruth test peers (written by tests/peers/*/start.sh; source it)\nGT_PEERS_RUN=%s\n' \
            "$(_env_quote "$GT_PEERS_RUN")" > "$GT_ENV_FILE"
        for kv in "$@"; do keys+=("${kv%%=*}"); done
        grep -v -E "^($(IFS='|'; echo "${keys[*]}"))=" "$GT_ENV_FILE" > "$tmp" || true
        for kv in "$@"; do
            printf '%s=%s\n' "${kv%%=*}" "$(_env_quote "${kv#*=}")" >> "$tmp"
        done
        chmod 644 "$tmp"; mv "$tmp" "$GT_ENV_FILE"
    ) 9>"$GT_PEERS_RUN/.peers.env.lock"
}
# env_drop PREFIX : remove every KEY starting with PREFIX (a stopped peer's keys).
env_drop() {
    [ -f "$GT_ENV_FILE" ] || return 0
    (
        flock 9
        local tmp; tmp="$(mktemp "$GT_PEERS_RUN/.peers.env.XXXXXX")"
        grep -v "^$1" "$GT_ENV_FILE" > "$tmp" || true
        chmod 644 "$tmp"; mv "$tmp" "$GT_ENV_FILE"
    ) 9>"$GT_PEERS_RUN/.peers.env.lock"
}
