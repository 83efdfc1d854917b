#!/usr/bin/env bash
# The stand-in's entrypoint: the part of the official postgres image's docker-entrypoint.sh that compose.yaml
# relies on. First start (no PG_VERSION in PGDATA): initdb with POSTGRES_PASSWORD for POSTGRES_USER, scram for
# TCP clients, POSTGRES_DB, then /docker-entrypoint-initdb.d (executable *.sh run, other *.sh sourced, *.sql
# fed to psql) against a temporary server listening on its socket only. Then the real server, as postgres.
set -Eeuo pipefail

if [[ ${1:0:1} == - ]]; then
    set -- postgres "$@"
fi

if [[ $1 == postgres && $(id -u) == 0 ]]; then
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ $1 == postgres && ! -s $PGDATA/PG_VERSION ]]; then
    : "${POSTGRES_PASSWORD:?the postgres image needs POSTGRES_PASSWORD on its first start}"
    export POSTGRES_USER=${POSTGRES_USER:-postgres}
    export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 -D "$PGDATA"
    rm -f "$pwfile"
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start
    # As the official image: scripts connect over the socket, and PGPASSWORD defaults to the superuser's.
    export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
    if [[ $POSTGRES_DB != postgres ]]; then
        psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
            --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    for file in /docker-entrypoint-initdb.d/*; do
        case $file in
            *.sh)
                echo "entrypoint: running $file"
                if [[ -x $file ]]; then "$file"; else . "$file"; fi
                ;;
            *.sql)
                echo "entrypoint: running $file"
                psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$file"
                ;;
            *) ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "entrypoint: PostgreSQL init process complete; ready for start up"
fi

exec "$@"
