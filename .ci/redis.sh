#!/usr/bin/env bash
# Starts a throwaway Redis server, and a Redis Cluster of three primaries, on
# 127.0.0.1 for the tests that talk to a real Redis, installing Redis from
# Debian packages when it is missing.
#
#   eval "$(.ci/redis.sh)"     # start; exports REDIS_URL, REDIS_PORT and
#                              # REDIS_CLUSTER_URLS (space-separated)
#   .ci/redis.sh stop          # stop them and remove their directories
#
# Everything but the `export` line goes to stderr. The servers live in their
# own directories on their own ports, with no persistence, so they never touch
# a system server. Tests that stop and restart Redis use REDIS_PORT and
# `redis-server` themselves (see tests/support). A cluster node's bus listens
# on its port + 10000, so the cluster's ports stay below 55536.
set -euo pipefail

REDIS_DIR="${SPILLWAY_REDIS_DIR:-${TMPDIR:-/tmp}/spillway-redis}"
REDIS_PORT="${SPILLWAY_REDIS_PORT:-56379}"
CLUSTER_PORTS="${SPILLWAY_REDIS_CLUSTER_PORTS:-46001 46002 46003}"

log() { printf '%s\n' "$*" >&2; }

if [ "${1:-start}" = stop ]; then
    if command -v redis-cli >/dev/null; then
        for port in $REDIS_PORT $CLUSTER_PORTS; do
            redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
        done
    fi
    rm -rf "$REDIS_DIR"
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

mkdir -p "$REDIS_DIR"
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" \
        --save "" --appendonly no --daemonize yes \
        --logfile "$REDIS_DIR/server.log" --pidfile "$REDIS_DIR/server.pid" >&2
    for _ in $(seq 1 50); do
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
fi
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null

log "==> Redis listening on 127.0.0.1:$REDIS_PORT"

# The cluster: three primaries, every slot assigned, no replicas.
cluster_urls=""
for port in $CLUSTER_PORTS; do
    cluster_urls="$cluster_urls redis://127.0.0.1:$port/"
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && continue
    mkdir -p "$REDIS_DIR/cluster-$port"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$REDIS_DIR/cluster-$port" \
        --cluster-enabled yes --cluster-config-file nodes.conf \
        --save "" --appendonly no --daemonize yes \
        --logfile "$REDIS_DIR/cluster-$port/server.log" \
        --pidfile "$REDIS_DIR/cluster-$port/server.pid" >&2
done
first="${CLUSTER_PORTS%% *}"
for port in $CLUSTER_PORTS; do
    for _ in $(seq 1 50); do
        redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
done
if ! redis-cli -h 127.0.0.1 -p "$first" cluster info | grep -q 'cluster_state:ok'; then
    nodes=""
    for port in $CLUSTER_PORTS; do nodes="$nodes 127.0.0.1:$port"; done
    # shellcheck disable=SC2086 # one argument per node
    redis-cli --cluster create $nodes --cluster-replicas 0 --cluster-yes >&2
fi
for _ in $(seq 1 100); do
    ok=1
    for port in $CLUSTER_PORTS; do
        redis-cli -h 127.0.0.1 -p "$port" cluster info | grep -q 'cluster_state:ok' || ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
done
[ "$ok" = 1 ] || { log "the Redis Cluster did not come up"; exit 1; }
log "==> Redis Cluster on 127.0.0.1 ports $CLUSTER_PORTS"

echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/ REDIS_PORT=$REDIS_PORT REDIS_CLUSTER_URLS='${cluster_urls# }'"
