"""Operators that change the MLflow model registry through Conveyor's compare-and-set path."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from conveyor_airflow.hooks.mlflow import MlflowHook

CURRENT = "__current__"
"""``expected_version`` placeholder: compare against what the alias names when the task starts."""


def actor_from_context(context: Context) -> tuple[str, str | None]:
    """Return ``("airflow:<dag_id>/<run_id>", run_id)`` for the running task.

    Args:
        context: The task's Airflow context (``ti`` or ``dag`` for the DAG id, ``run_id``).
    """
    ti = context.get("ti")
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None) or "unknown-dag"
    run_id = context.get("run_id") or getattr(ti, "run_id", None)
    return f"airflow:{dag_id}/{run_id or 'unknown-run'}", run_id


class MlflowSetModelAliasOperator(BaseOperator):
    """Point ``registered_model_name@alias`` at ``version`` via ``conveyor.registry.aliases.set_alias``.

    The move is a compare-and-set that writes a ledger entry (actor ``airflow:<dag_id>/<run_id>``).
    Re-running the task after the alias already names ``version`` is a no-op, so the operator is
    idempotent. A conflict (the alias names something other than ``expected_version``), a missing
    version or any other deterministic registry refusal fails the task without retries.

    Args:
        registered_model_name: Registered model (templated).
        alias: The alias to move, e.g. ``champion`` (templated).
        version: The version to point it at (templated).
        expected_version: What the alias must name before the move (templated): a version,
            ``None`` or ``""`` for "must be unset", or ``"__current__"`` (default) to read it when
            the task starts, which still guards against a concurrent move during the task.
        reason: Why, in words, kept in the ledger (templated).
        details: Small JSON kept with the ledger entry (templated), e.g. the deploy checks.
        mlflow_conn_id: Airflow connection of the MLflow server.
        **kwargs: Passed to ``BaseOperator``.

    Returns (XCom):
        The ledger entry as JSON (``ledger_run_id``, ``from_version``, ``to_version``, ``noop``, ...).
    """

    template_fields: Sequence[str] = (
        "registered_model_name",
        "alias",
        "version",
        "expected_version",
        "reason",
        "details",
    )
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        registered_model_name: str,
        alias: str,
        version: str | int,
        expected_version: str | int | None = CURRENT,
        reason: str,
        details: dict[str, Any] | None = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.registered_model_name = registered_model_name
        self.alias = alias
        self.version = version
        self.expected_version = expected_version
        self.reason = reason
        self.details = details
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        """The MLflow hook (built on first use, inside ``execute``)."""
        from conveyor_airflow.hooks.mlflow import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        """Move the alias; see the class docstring."""
        from airflow.sdk.exceptions import AirflowFailException
        from mlflow.exceptions import MlflowException

        from conveyor.errors import PermanentError
        from conveyor.registry.aliases import get_alias_version, set_alias

        actor, run_id = actor_from_context(context)
        client = self.hook.get_conn()
        name, alias, version = str(self.registered_model_name), str(self.alias), str(self.version)
        expected: str | None
        if self.expected_version == CURRENT:
            expected = get_alias_version(client, name, alias)
        elif self.expected_version in (None, ""):
            expected = None
        else:
            expected = str(self.expected_version)
        self.log.info(
            "Moving %s@%s to v%s (expected v%s) as %s: %s", name, alias, version, expected, actor, self.reason
        )
        try:
            entry = set_alias(
                client,
                name,
                alias,
                version,
                expected_version=expected,
                actor=actor,
                reason=str(self.reason),
                dag_run_id=run_id,
                details=self.details,
            )
        except PermanentError as err:  # AliasConflictError, VersionNotFoundError, ...
            raise AirflowFailException(str(err)) from err
        except MlflowException as err:
            if err.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED"):
                raise AirflowFailException(f"MLflow refused to move {name}@{alias}: {err.message}") from err
            raise
        if entry.noop:
            self.log.info("%s@%s already named v%s; nothing moved", name, alias, version)
        result: dict[str, Any] = entry.model_dump(mode="json")
        return result
