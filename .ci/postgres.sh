#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on 127.0.0.1 for the tests that write
# into a real database, installing it from Debian packages when it is missing.
#
#   eval "$(.ci/postgres.sh)"     # start; exports DATABASE_URL
#   .ci/postgres.sh stop          # stop and remove the cluster
#
# Everything but the `export` line goes to stderr. The cluster lives in its own
# directory on its own port (the next free one from 55432), so it never
# touches a system cluster.
set -euo pipefail

PG_DIR="${SPILLWAY_PG_DIR:-${TMPDIR:-/tmp}/spillway-postgres}"
PG_PORT="${SPILLWAY_PG_PORT:-55432}"
# Tests need no durability; the spill benches' figures do (SPILLWAY_PG_FSYNC=on).
PG_FSYNC="${SPILLWAY_PG_FSYNC:-off}"
PG_USER=spillway
PG_DB=spillway

log() { printf '%s\n' "$*" >&2; }

as_owner() {
    # initdb and postgres refuse to run as root: use the `postgres` account.
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

find_bindir() {
    local pg_config
    for pg_config in /usr/lib/postgresql/*/bin/pg_config; do
        [ -x "$pg_config" ] && dirname "$pg_config"
    done | sort -V | tail -n 1
}

BINDIR="$(find_bindir || true)"

if [ "${1:-start}" = stop ]; then
    if [ -n "$BINDIR" ] && [ -f "$PG_DIR/data/PG_VERSION" ]; then
        as_owner "$BINDIR/pg_ctl" -D "$PG_DIR/data" -m fast stop >&2 || true
    fi
    rm -rf "$PG_DIR"
    exit 0
fi

if [ -z "$BINDIR" ]; then
    log "==> installing PostgreSQL from Debian packages"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends postgresql >&2
    BINDIR="$(find_bindir)"
fi
log "==> PostgreSQL binaries: $BINDIR"

if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    rm -rf "$PG_DIR"
    mkdir -p "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
    as_owner "$BINDIR/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >&2
fi

# Whether anything listens on 127.0.0.1:$1.
listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if as_owner "$BINDIR/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1 && [ -f "$PG_DIR/port" ]; then
    # Ours, started earlier: on the port it was given then.
    PG_PORT="$(cat "$PG_DIR/port")"
else
    # A port something else holds (a system cluster, a leftover of a killed
    # run) is skipped for the next free one.
    for _ in $(seq 1 50); do
        listening "$PG_PORT" || break
        PG_PORT=$((PG_PORT + 1))
    done
    echo "$PG_PORT" >"$PG_DIR/port"
    as_owner "$BINDIR/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=$PG_FSYNC" start >&2
fi

psql_admin() {
    as_owner "$BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"
}
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" ]; then
    psql_admin -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_USER'" >&2
fi
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" ]; then
    psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >&2
fi

log "==> PostgreSQL listening on 127.0.0.1:$PG_PORT"
echo "export DATABASE_URL=postgres://$PG_USER:$PG_USER@127.0.0.1:$PG_PORT/$PG_DB"
