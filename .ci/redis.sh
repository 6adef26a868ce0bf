#!/usr/bin/env bash
# Starts a throwaway Redis server, and a Redis Cluster of three primaries, on
# 127.0.0.1 for the tests that talk to a real Redis, installing Redis from
# Debian packages when it is missing.
#
#   eval "$(.ci/redis.sh)"     # start; exports REDIS_URL, REDIS_PORT and
#                              # REDIS_CLUSTER_URLS (space-separated)
#   .ci/redis.sh stop          # stop them and remove their directory
#
# Everything but the `export` line goes to stderr. Every server is one this
# script started, in its own directory with no persistence: a port something
# else already holds (another Redis, a cluster node left over from a killed
# run, any other listener) is skipped for the next free one, and a server is
# only used again when its process is the one recorded in our directory. So
# it never touches, nor is confused by, a server it does not own. Tests that
# stop and restart Redis start servers of their own (see tests/support).
set -euo pipefail

REDIS_DIR="${SPILLWAY_REDIS_DIR:-${TMPDIR:-/tmp}/spillway-redis}"
REDIS_PORT="${SPILLWAY_REDIS_PORT:-56379}"
# A cluster node's bus listens on its port + 10000, so these stay below 55536.
CLUSTER_FIRST_PORT="${SPILLWAY_REDIS_CLUSTER_PORT:-46001}"
CLUSTER_NODES=3

log() { printf '%s\n' "$*" >&2; }

stop_all() {
    local pidfile pids=()
    for pidfile in "$REDIS_DIR"/*/server.pid; do
        pids+=("$(cat "$pidfile" 2>/dev/null)") || true
    done
    for pid in "${pids[@]}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    # Wait for them to go, so a following start finds the ports free.
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do
            [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    done
    rm -rf "$REDIS_DIR"
}

if [ "${1:-start}" = stop ]; then
    stop_all
    exit 0
fi

if ! command -v redis-server >/dev/null; then
    log "==> installing Redis from Debian packages"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends redis-server >&2
fi
log "==> $(redis-server --version)"

# Whether the server recorded in directory $1 runs and answers on port $2.
owned() {
    local dir="$1" port="$2" pid info
    [ -f "$dir/server.pid" ] && [ -f "$dir/port" ] && [ "$(cat "$dir/port")" = "$port" ] || return 1
    pid="$(cat "$dir/server.pid")"
    kill -0 "$pid" 2>/dev/null || return 1
    # Read whole before matching: with pipefail, `grep -q` quitting early
    # could fail the pipe it reads.
    info="$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null | tr -d '\r')" || return 1
    grep -qx "process_id:$pid" <<<"$info"
}

# Whether anything listens on 127.0.0.1:$1.
listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts a server of ours named $1, with the remaining arguments, on the first
# port from $2 that is free and whose port + 10000 (a cluster node's bus) is
# free too; or keeps the one already recorded under that name. Prints its
# port.
start_owned() {
    local name="$1" port="$2" dir="$REDIS_DIR/$1" attempt
    shift 2
    if [ -f "$dir/port" ] && owned "$dir" "$(cat "$dir/port")"; then
        cat "$dir/port"
        return 0
    fi
    for attempt in $(seq 1 50); do
        if ! listening "$port" && ! listening $((port + 10000)); then
            rm -rf "$dir"
            mkdir -p "$dir"
            echo "$port" >"$dir/port"
            redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
                --save "" --appendonly no --daemonize yes \
                --logfile "$dir/server.log" --pidfile "$dir/server.pid" "$@" >&2 || true
            for _ in $(seq 1 50); do
                owned "$dir" "$port" && { echo "$port"; return 0; }
                sleep 0.1
            done
            log "redis-server on port $port did not start (attempt $attempt):"
            tail -n 5 "$dir/server.log" >&2 2>/dev/null || true
            # Gone already, most likely; `|| true`, or set -e ends the script.
            [ -f "$dir/server.pid" ] && kill "$(cat "$dir/server.pid")" 2>/dev/null || true
        fi
        port=$((port + 1))
    done
    log "no free port for redis-server $name"
    return 1
}

mkdir -p "$REDIS_DIR"
port="$(start_owned server "$REDIS_PORT")"
log "==> Redis listening on 127.0.0.1:$port"

# The cluster: three primaries, every slot assigned, no replicas.
cluster_ok() {
    local p info
    for p in "$@"; do
        info="$(redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null)" || return 1
        grep -q 'cluster_state:ok' <<<"$info" || return 1
    done
}
cluster_ports=()
next="$CLUSTER_FIRST_PORT"
for node in $(seq 1 "$CLUSTER_NODES"); do
    p="$(start_owned "cluster-$node" "$next" --cluster-enabled yes --cluster-config-file nodes.conf)"
    cluster_ports+=("$p")
    next=$((p + 1))
done
if ! cluster_ok "${cluster_ports[@]}"; then
    nodes=()
    for p in "${cluster_ports[@]}"; do
        # Ours, so safe to empty: a node that half-joined an earlier attempt
        # would make `--cluster create` refuse it as not empty.
        redis-cli -h 127.0.0.1 -p "$p" flushall >/dev/null
        redis-cli -h 127.0.0.1 -p "$p" cluster reset hard >/dev/null
        nodes+=("127.0.0.1:$p")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >&2
fi
for _ in $(seq 1 100); do
    cluster_ok "${cluster_ports[@]}" && break
    sleep 0.1
done
cluster_ok "${cluster_ports[@]}" || { log "the Redis Cluster did not come up"; exit 1; }
log "==> Redis Cluster on 127.0.0.1 ports ${cluster_ports[*]}"

cluster_urls=""
for p in "${cluster_ports[@]}"; do cluster_urls="$cluster_urls redis://127.0.0.1:$p/"; done
echo "export REDIS_URL=redis://127.0.0.1:$port/ REDIS_PORT=$port REDIS_CLUSTER_URLS='${cluster_urls# }'"
