#!/bin/sh
# Start the MLflow tracking server with basic auth. The auth configuration is rendered here from the
# environment on every start (it holds a database password, so it is never committed or baked into
# the image); the admin password itself stays in the environment (MLFLOW_AUTH_ADMIN_PASSWORD, which
# MLflow reads when it creates the admin user on an empty auth database).
set -eu

: "${MLFLOW_DB_HOST:?set MLFLOW_DB_HOST}"
: "${MLFLOW_DB_PORT:=5432}"
: "${MLFLOW_DB_USER:?set MLFLOW_DB_USER}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}"
: "${MLFLOW_DB_NAME:=mlflow}"
: "${MLFLOW_AUTH_DB_NAME:=mlflow_auth}"
: "${MLFLOW_AUTH_ADMIN_USERNAME:?set MLFLOW_AUTH_ADMIN_USERNAME}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY}"
: "${MLFLOW_AUTH_DEFAULT_PERMISSION:=READ}"
: "${MLFLOW_ARTIFACTS_DESTINATION:=/var/lib/mlflow/artifacts}"
: "${MLFLOW_WORKERS:=2}"

db_url="postgresql+psycopg2://${MLFLOW_DB_USER}:${MLFLOW_DB_PASSWORD}@${MLFLOW_DB_HOST}:${MLFLOW_DB_PORT}"

umask 077
auth_dir="$(mktemp -d)"
cat >"${auth_dir}/basic_auth.ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION}
database_uri = ${db_url}/${MLFLOW_AUTH_DB_NAME}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI

export MLFLOW_AUTH_CONFIG_PATH="${auth_dir}/basic_auth.ini"
export MLFLOW_BACKEND_STORE_URI="${db_url}/${MLFLOW_DB_NAME}"

exec mlflow server \
  --app-name basic-auth \
  --host 0.0.0.0 \
  --port 5000 \
  --workers "${MLFLOW_WORKERS}" \
  --serve-artifacts \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION}" \
  "$@"
