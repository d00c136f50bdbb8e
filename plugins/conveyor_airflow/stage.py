"""Run a domain stage inside an Airflow task with the right failure semantics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from conveyor.stages import StageModel


def run_stage(stage: Callable[..., StageModel | dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call ``stage`` and return its result as XCom: plain JSON, a stage model as its ``.xcom()``.

    Deterministic failures (bad data, a rejected candidate, an alias conflict) fail the task at once
    with the domain's message (``AirflowFailException``); anything else propagates so Airflow's
    retries can deal with it.
    """
    from conveyor.errors import PermanentError
    from conveyor.stages import StageModel

    try:
        result = stage(*args, **kwargs)
    except PermanentError as exc:
        raise AirflowFailException(str(exc)) from exc
    return result.xcom() if isinstance(result, StageModel) else result
