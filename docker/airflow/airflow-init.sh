#!/usr/bin/env bash
# One-shot initialisation of the Airflow side of docker-compose.yaml; safe to run on every `up`:
#   1. migrate the metadata database (Airflow's tables and the FAB auth manager's),
#   2. create the FAB admin user and set its password to the one in .env,
#   3. create or resize the pools the Conveyor DAGs use (see airflow_settings.yaml).
# The databases and roles themselves are created by the postgres-init service before this runs.
set -euo pipefail

: "${AIRFLOW_ADMIN_USERNAME:?set AIRFLOW_ADMIN_USERNAME}"
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD}"
: "${AIRFLOW_ADMIN_EMAIL:?set AIRFLOW_ADMIN_EMAIL}"

echo "airflow-init: migrating the metadata database"
airflow db migrate

# `users create` leaves an existing user alone; the reset makes .env the source of the password.
echo "airflow-init: admin user ${AIRFLOW_ADMIN_USERNAME}"
airflow users create \
  --role Admin \
  --username "${AIRFLOW_ADMIN_USERNAME}" \
  --password "${AIRFLOW_ADMIN_PASSWORD}" \
  --email "${AIRFLOW_ADMIN_EMAIL}" \
  --firstname Conveyor \
  --lastname Admin
airflow users reset-password --username "${AIRFLOW_ADMIN_USERNAME}" --password "${AIRFLOW_ADMIN_PASSWORD}"

echo "airflow-init: pools"
airflow pools set conveyor_training "${CONVEYOR_TRAINING_POOL_SLOTS:-2}" \
  "CPU-bound model work (validate, train, compress)"
airflow pools set conveyor_serving "${CONVEYOR_SERVING_POOL_SLOTS:-2}" \
  "Candidate model-server processes started by the deploy DAG"

echo "airflow-init: done"
