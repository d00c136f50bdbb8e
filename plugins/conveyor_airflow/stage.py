"""Run a domain stage inside an Airflow task with the right failure semantics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk.exceptions import AirflowFailException


def run_stage(stage: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call ``stage`` and turn a deterministic domain failure into ``AirflowFailException``.

    Deterministic failures (bad data, a rejected candidate, an alias conflict) fail the task at once
    with the domain's message; anything else propagates so Airflow's retries can deal with it.
    """
    from conveyor.errors import PermanentError

    try:
        return stage(*args, **kwargs)
    except PermanentError as exc:
        raise AirflowFailException(str(exc)) from exc
