"""Test support for the pipeline tests: every stage chained in one process.

Imported as ``unit.pipeline.support`` (``tests/`` is on ``sys.path``), never by production code.
"""

from __future__ import annotations

from datetime import date
from typing import Any

END = date(2026, 11, 23)


def run_context(model: str, dag_run_id: str, **params: Any) -> Any:
    """The :class:`~conveyor.stages.RunContext` of a DAG run of ``model`` over the window ending ``END``."""
    from conveyor.stages import RunContext

    return RunContext(
        model=model,
        dag_id=f"conveyor_train_{model}",
        dag_run_id=dag_run_id,
        window_end=END.isoformat(),
        **params,
    )


def run_stages(model: str, dag_run_id: str, tracking_uri: str, **params: Any) -> dict[str, Any]:
    """Every stage in order, as far as the domain lets it go: ``promote`` decides, not this helper.

    ``params`` are the run's (``gate_mode``, ``force``, ``justification``, ...; see ``RunContext``).
    Runs retrain on the same landed window (``force_retrain``), as a person re-running a day would,
    and are triggered by ``alice``. Each stage is handed the XCom JSON of the ones before it, as in the
    DAG; the results are the stages' models.
    """
    from conveyor import pipeline
    from conveyor.evaluation.promotion import RegistrationRefused

    run = run_context(model, dag_run_id, triggered_by="alice", force_retrain=True, **params)
    v = pipeline.validate_data(run, tracking_uri=tracking_uri)
    t = pipeline.train(run, validated=v.xcom(), tracking_uri=tracking_uri)
    g = pipeline.evaluate_gate(run, validated=v.xcom(), trained=t.xcom(), tracking_uri=tracking_uri)
    out: dict[str, Any] = {"run": run, "validated": v, "trained": t, "decision": g}
    try:
        out["promoted"] = pipeline.promote(run, decision=g.xcom())
    except RegistrationRefused as exc:
        out["refused"] = str(exc)
        return out
    c = pipeline.compress(run, validated=v.xcom(), trained=t.xcom(), tracking_uri=tracking_uri)
    out["registered"] = pipeline.register(
        run,
        validated=v.xcom(),
        trained=t.xcom(),
        decision=g.xcom(),
        compressed=c.xcom(),
        tracking_uri=tracking_uri,
        promotion=out["promoted"].xcom(),
    )
    out["compressed"] = c
    return out
