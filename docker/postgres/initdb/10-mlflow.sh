#!/usr/bin/env bash
# First start of the postgres service (docker-entrypoint-initdb.d; skipped once the data volume exists):
# create the server's role and its two databases. The role and database names come from the URIs in mlflow.env
# and the password from PGPASSWORD in the same file, so nothing is written twice. The password reaches psql
# through the environment (\getenv), never a command line.
set -Eeuo pipefail

fail() {
    echo "mlflow init: $*" >&2
    exit 1
}

# The image exports PGPASSWORD=POSTGRES_PASSWORD when mlflow.env has none: never give the superuser's
# password to the server's role.
if [[ -z ${PGPASSWORD:-} || ${PGPASSWORD} == "${POSTGRES_PASSWORD:-}" ]]; then
    fail "set PGPASSWORD in mlflow.env (the mlflow role's password, different from POSTGRES_PASSWORD)"
fi

uri_re='^postgresql\+psycopg2://([a-z_][a-z0-9_]*)@[^/]+/([a-z_][a-z0-9_]*)([?].*)?$'

[[ ${MLFLOW_BACKEND_STORE_URI:-} =~ $uri_re ]] ||
    fail "MLFLOW_BACKEND_STORE_URI in mlflow.env must look like postgresql+psycopg2://mlflow@postgres:5432/mlflow"
role=${BASH_REMATCH[1]}
databases=("${BASH_REMATCH[2]}")

if [[ -n ${MLFLOW_EXT_AUTH_DATABASE_URI:-} ]]; then
    [[ ${MLFLOW_EXT_AUTH_DATABASE_URI} =~ $uri_re ]] ||
        fail "MLFLOW_EXT_AUTH_DATABASE_URI in mlflow.env must look like postgresql+psycopg2://mlflow@postgres:5432/mlflow_auth"
    [[ ${BASH_REMATCH[1]} == "$role" ]] ||
        fail "MLFLOW_BACKEND_STORE_URI and MLFLOW_EXT_AUTH_DATABASE_URI must name the same user"
    [[ ${BASH_REMATCH[2]} == "${databases[0]}" ]] || databases+=("${BASH_REMATCH[2]}")
fi

superuser=${POSTGRES_USER:-postgres}
export MLFLOW_INIT_ROLE=$role MLFLOW_INIT_PASSWORD=$PGPASSWORD
# psql connects as the superuser (the image trusts its local socket): PGPASSWORD is not that user's password.
unset PGPASSWORD
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$superuser" --dbname postgres <<'SQL'
\getenv mlflow_role MLFLOW_INIT_ROLE
\getenv mlflow_password MLFLOW_INIT_PASSWORD
CREATE ROLE :"mlflow_role" LOGIN PASSWORD :'mlflow_password';
SQL

for database in "${databases[@]}"; do
    MLFLOW_INIT_DATABASE=$database psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$superuser" --dbname postgres <<'SQL'
\getenv mlflow_role MLFLOW_INIT_ROLE
\getenv mlflow_database MLFLOW_INIT_DATABASE
CREATE DATABASE :"mlflow_database" OWNER :"mlflow_role";
REVOKE ALL ON DATABASE :"mlflow_database" FROM PUBLIC;
SQL
    echo "mlflow init: database ${database} owned by ${role}"
done
