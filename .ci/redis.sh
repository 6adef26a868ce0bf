#!/usr/bin/env bash
# Starts a throwaway Redis server on 127.0.0.1 for the tests that talk to a
# real Redis, installing it from Debian packages when it is missing.
#
#   eval "$(.ci/redis.sh)"     # start; exports REDIS_URL and REDIS_PORT
#   .ci/redis.sh stop          # stop it and remove its directory
#
# Everything but the `export` line goes to stderr. The server lives in its own
# directory on its own port, with no persistence, so it never touches a system
# server. Tests that stop and restart Redis use REDIS_PORT and `redis-server`
# themselves (see tests/support).
set -euo pipefail

REDIS_DIR="${SPILLWAY_REDIS_DIR:-${TMPDIR:-/tmp}/spillway-redis}"
REDIS_PORT="${SPILLWAY_REDIS_PORT:-56379}"

log() { printf '%s\n' "$*" >&2; }

if [ "${1:-start}" = stop ]; then
    if command -v redis-cli >/dev/null; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
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
echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/ REDIS_PORT=$REDIS_PORT"
