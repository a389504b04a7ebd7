#!/bin/bash
# Entry point of flocker/postgres:local: makes the cluster in an empty data directory, then
# execs the server as user postgres. Any other command (pgbench, psql, pg_amcheck, bash) is
# exec'd as given, so the image also serves as a throw-away client.
#
#   POSTGRES_DB  a database to create on first start besides "postgres" (optional)
set -euo pipefail

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA

# `docker run IMAGE -c work_mem=64MB` means the server with those options.
if [ "${1:-}" != postgres ] && [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi
[ "${1:-}" = postgres ] || exec "$@"

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

if [ "$(id -u)" = 0 ]; then
  # Docker makes the volume's mountpoint as root; initdb and the server refuse a data
  # directory they do not own, or one that others can read.
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "$(ls -A "$PGDATA")" ]; then
    echo "postgres-entrypoint: $PGDATA is neither empty nor a PostgreSQL data directory" >&2
    ls -lA "$PGDATA" >&2
    exit 1
  fi
  # trust for every connection, local and over the network: this image is for the local
  # test cluster only, whose addresses exist only inside one machine. Never publish it.
  as_postgres initdb --pgdata="$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=trust >/dev/null
  printf '%s\n' \
    'host all all 0.0.0.0/0 trust' \
    'host all all ::/0 trust' >>"$PGDATA/pg_hba.conf"
  # In the data directory rather than on the command line: the settings travel with the
  # volume when it moves, and ALTER SYSTEM can still change them.
  cat >>"$PGDATA/postgresql.conf" <<'CONF'

# flocker/postgres:local
listen_addresses = '*'
port = 5432
# The default 128MB, said out loud: the cluster's nodes share one small machine.
shared_buffers = 128MB
# The default 1GB lets WAL grow to 1 GB between checkpoints, all of which a move would copy;
# 256MB checkpoints more often and keeps the volume small.
max_wal_size = 256MB
# Durability is what the move tests check (every acknowledged commit must survive), so
# these stay at their safe defaults, written here so that nobody "tunes" them away.
fsync = on
synchronous_commit = on
full_page_writes = on
# JIT only pays for long analytic queries; the image leaves LLVM out (scripts/build-images.sh).
jit = off
CONF
  if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
    # Single-user mode: no server listening yet, so no client can see a half-made cluster.
    printf 'CREATE DATABASE "%s";\n' "${POSTGRES_DB//\"/\"\"}" |
      as_postgres postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "postgres-entrypoint: made a new cluster in $PGDATA" >&2
fi

# exec: the postmaster replaces this shell as PID 1, so docker stop's SIGINT reaches it.
if [ "$(id -u)" = 0 ]; then
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
fi
exec "$@"
