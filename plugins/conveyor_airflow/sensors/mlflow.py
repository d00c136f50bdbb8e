"""Sensors on the MLflow model registry."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

if TYPE_CHECKING:
    from airflow.sdk import Context

    from conveyor_airflow.hooks.mlflow import MlflowHook


class MlflowModelAliasSensor(BaseSensorOperator):
    """Wait until ``registered_model_name@alias`` exists, or names ``version`` when one is given.

    Use ``mode="reschedule"`` for long waits so the sensor does not hold a worker slot between pokes.

    Args:
        registered_model_name: Registered model (templated).
        alias: The alias to watch (templated).
        version: The version the alias must name (templated); ``None`` waits for any version.
        mlflow_conn_id: Airflow connection of the MLflow server.
        **kwargs: Passed to ``BaseSensorOperator`` (``poke_interval``, ``timeout``, ``mode``, ...).

    Returns (XCom):
        The version the alias names when the sensor succeeds (a string).
    """

    template_fields: Sequence[str] = ("registered_model_name", "alias", "version")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        registered_model_name: str,
        alias: str,
        version: str | int | None = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.registered_model_name = registered_model_name
        self.alias = alias
        self.version = version
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        """The MLflow hook (built on first use)."""
        from conveyor_airflow.hooks.mlflow import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def poke(self, context: Context) -> PokeReturnValue:
        """Read the alias once; done when it exists (and names ``version`` if one is given)."""
        from conveyor.registry.aliases import get_alias_version

        current = get_alias_version(self.hook.get_conn(), str(self.registered_model_name), str(self.alias))
        wanted = None if self.version in (None, "") else str(self.version)
        done = current is not None and (wanted is None or current == wanted)
        self.log.info(
            "%s@%s names %s (waiting for %s)",
            self.registered_model_name,
            self.alias,
            f"v{current}" if current else "nothing",
            f"v{wanted}" if wanted else "any version",
        )
        return PokeReturnValue(is_done=done, xcom_value=current if done else None)
