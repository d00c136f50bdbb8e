#!/usr/bin/env bash
# Create the roles and databases of the Conveyor stack when they are missing, and set the roles'
# passwords from the environment (so rotating a password in .env takes effect on the next `up`).
# Idempotent; run by the postgres-init service on every `docker compose up`.
#   airflow       -> database airflow      (Airflow metadata and Celery results)
#   mlflow        -> databases mlflow      (tracking and model registry)
#                    and mlflow_auth       (MLflow basic-auth users and permissions)
set -euo pipefail

: "${PGHOST:?set PGHOST}"
: "${PGUSER:?set PGUSER}"
: "${PGPASSWORD:?set PGPASSWORD}"
: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}"

psql --dbname postgres --no-psqlrc --set ON_ERROR_STOP=1 --quiet \
  --set airflow_pw="${AIRFLOW_DB_PASSWORD}" \
  --set mlflow_pw="${MLFLOW_DB_PASSWORD}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY['airflow', 'mlflow']) AS r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r)
\gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', 'airflow', :'airflow_pw')
\gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', 'mlflow', :'mlflow_pw')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', d.name, d.owner)
  FROM (VALUES ('airflow', 'airflow'), ('mlflow', 'mlflow'), ('mlflow_auth', 'mlflow')) AS d(name, owner)
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d.name)
\gexec
SQL
echo "postgres-init: roles airflow, mlflow and databases airflow, mlflow, mlflow_auth are in place"
