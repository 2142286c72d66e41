#!/usr/bin/env bash
# Ensure a PostgreSQL server answers on 127.0.0.1:${PGPORT:-5432} with the `adflux` role the
# tests use: install Debian's postgresql when absent, start its cluster when stopped.
# Prints the database URL for ADFLUX_TEST_DATABASE_URL. Only ever touches a local cluster.
set -euo pipefail
port="${PGPORT:-5432}"
url="postgresql+psycopg://adflux:adflux@127.0.0.1:${port}/postgres"

answers() { pg_isready -q -h 127.0.0.1 -p "$port" 2>/dev/null; }

if ! answers; then
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "postgres: installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
  fi
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  if ! pg_lsclusters -h | awk '{print $1"/"$2}' | grep -q "^${version}/main$"; then
    pg_createcluster "$version" main -p "$port" >&2
  fi
  pg_ctlcluster "$version" main start >&2 || true
  for _ in $(seq 1 60); do answers && break; sleep 0.5; done
  answers || { echo "postgres: server did not start" >&2; exit 1; }
fi

if ! PGPASSWORD=adflux psql -h 127.0.0.1 -p "$port" -U adflux -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  su postgres -c "psql -p $port -qc \"DO \\\$\\\$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'adflux') THEN
      CREATE ROLE adflux LOGIN SUPERUSER PASSWORD 'adflux';
    ELSE
      ALTER ROLE adflux LOGIN SUPERUSER PASSWORD 'adflux';
    END IF; END \\\$\\\$;\"" >&2
fi
echo "$url"
