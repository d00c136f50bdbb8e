"""Test support for the pipeline tests: every stage chained in one process.

Imported as ``unit.pipeline.support`` (``tests/`` is on ``sys.path``), never by production code.
"""

from __future__ import annotations

from datetime import date

END = date(2026, 11, 23)


def run_stages(model: str, dag_run_id: str, tracking_uri: str, **gate: object) -> dict:
    """Every stage in order, as far as the domain lets it go: ``promote`` decides, not this helper.

    Runs retrain on the same landed window (``force_retrain``), as a person re-running a day would.
    """
    from conveyor import pipeline
    from conveyor.evaluation.promotion import RegistrationRefused

    v = pipeline.validate_data(
        model,
        dag_id=f"conveyor_train_{model}",
        dag_run_id=dag_run_id,
        tracking_uri=tracking_uri,
        window_end=END.isoformat(),
        force_retrain=True,
    )
    t = pipeline.train(model, validated=v, tracking_uri=tracking_uri)
    g = pipeline.evaluate_gate(model, validated=v, trained=t, tracking_uri=tracking_uri, **gate)  # type: ignore[arg-type]
    out = {"validated": v, "trained": t, "decision": g}
    try:
        out["promoted"] = pipeline.promote(model, decision=g, triggered_by="alice")
    except RegistrationRefused as exc:
        out["refused"] = str(exc)
        return out
    c = pipeline.compress(model, validated=v, trained=t, tracking_uri=tracking_uri)
    out["registered"] = pipeline.register(
        model,
        validated=v,
        trained=t,
        decision=g,
        compressed=c,
        tracking_uri=tracking_uri,
        dag_id=f"conveyor_train_{model}",
        dag_run_id=dag_run_id,
        params={},
        promotion=out["promoted"],
    )
    out["compressed"] = c
    return out
