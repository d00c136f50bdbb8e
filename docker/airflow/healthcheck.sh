#!/usr/bin/env bash
# Health check of the Conveyor Airflow image. One image runs every Airflow component, so the check
# follows the command PID 1 (dumb-init -> /entrypoint <command>) was started with.
set -euo pipefail

cmdline="$(tr '\0' ' ' </proc/1/cmdline)"
case "${cmdline}" in
  *api-server*)
    curl --fail --silent --show-error --max-time 8 "http://localhost:8080/api/v2/monitor/health" >/dev/null ;;
  *scheduler*)
    # AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=true serves this on the scheduler's own port.
    curl --fail --silent --show-error --max-time 8 "http://localhost:8974/health" >/dev/null ;;
  *dag-processor*)
    airflow jobs check --job-type DagProcessorJob --hostname "${HOSTNAME}" ;;
  *triggerer*)
    airflow jobs check --job-type TriggererJob --hostname "${HOSTNAME}" ;;
  *"celery worker"*)
    celery --app airflow.providers.celery.executors.celery_executor.app inspect ping -d "celery@${HOSTNAME}" ;;
  *)
    # One-off commands (init, CLI) have nothing to serve.
    exit 0 ;;
esac
