#!/bin/sh
# initdb at first start (from POSTGRES_* like the official image, POSTGRES_INITDB_ARGS included),
# then exec postgres.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA
case "${1:-}" in
    ""|-*) set -- postgres "$@" ;;
esac
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    auth="${POSTGRES_HOST_AUTH_METHOD:-}"
    if [ -z "$auth" ]; then
        if [ -n "${POSTGRES_PASSWORD:-}" ]; then auth=scram-sha-256; else auth=trust; fi
    fi
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then pwopt="--pwfile=$pwfile"; else pwopt=""; fi
    # shellcheck disable=SC2086
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --encoding=UTF8 --locale=C --auth-local=trust \
        --auth-host="$auth" $pwopt ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\"" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    echo "entrypoint: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB, host auth $auth)"
fi
exec "$@"
