"""Hysteresis: days of monitoring windows replayed through ``decide``, drift injected from a given day.

No alert or retrain before the N-of-M condition holds; then exactly one incident, one alert and one
retrain carrying its reason; a quality breach inside the bake window rolls back instead; windows
without traffic or labels never raise a false alarm and never close an incident.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.monitoring.decisions import Decision, Incident, WindowVerdict, decide

pytestmark = pytest.mark.unit

DAY0 = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)


@pytest.fixture
def hysteresis_spec(spec: Any) -> Any:
    """N=2 of M=3, K=2 clean windows to close, a 24 h bake window."""
    monitor = spec.monitor.model_copy(
        update={"retrain_breaches": 2, "retrain_windows": 3, "incident_clear_windows": 2, "bake_hours": 24}
    )
    return spec.model_copy(update={"monitor": monitor})


def window(day: int, drift: str = "clean", quality: str = "clean", service: str = "clean") -> WindowVerdict:
    reasons = tuple(
        f"{what} breached" for what, s in (("drift", drift), ("quality", quality)) if s == "breach"
    )
    return WindowVerdict(
        window_end=DAY0 + timedelta(days=day),
        served_version="3",
        drift=drift,  # type: ignore[arg-type]
        quality=quality,  # type: ignore[arg-type]
        service=service,  # type: ignore[arg-type]
        reasons=reasons,
    )


def replay(spec: Any, windows: list[WindowVerdict], deployed_at: datetime | None = None) -> list[Decision]:
    """Decide window after window as the monitoring DAG would, carrying the incident along."""
    decisions, incident = [], None
    for k in range(len(windows)):
        decision = decide(spec, windows[: k + 1], incident, champion_deployed_at=deployed_at)
        incident = decision.incident
        decisions.append(decision)
    return decisions


def test_drift_from_day_five_gives_one_incident_one_alert_one_retrain(hysteresis_spec: Any) -> None:
    windows = [window(d, drift="breach" if d >= 5 else "clean") for d in range(10)]
    decisions = replay(hysteresis_spec, windows)
    assert not any(d.alert or d.retrain or d.rollback for d in decisions[:5])  # before the breach
    assert decisions[5].alert and decisions[5].incident_event == "opened" and not decisions[5].retrain
    assert decisions[6].retrain and not decisions[6].alert  # 2 of the last 3, the latest included
    assert (
        decisions[6].reason is not None and "drift breached in 2 of the last 3 windows" in decisions[6].reason
    )
    assert sum(d.alert for d in decisions) == 1 and sum(d.retrain for d in decisions) == 1
    assert all(d.incident is not None for d in decisions[5:])  # still breaching: the incident stays open


def test_a_single_breach_opens_an_incident_but_never_retrains(hysteresis_spec: Any) -> None:
    windows = [window(0), window(1, drift="breach"), window(2), window(3), window(4)]
    decisions = replay(hysteresis_spec, windows)
    assert [d.incident_event for d in decisions] == ["none", "opened", "ongoing", "closed", "none"]
    assert sum(d.alert for d in decisions) == 1 and not any(d.retrain for d in decisions)


def test_the_latest_window_must_breach_too(hysteresis_spec: Any) -> None:
    windows = [window(0, drift="breach"), window(1, quality="breach"), window(2)]
    decisions = replay(hysteresis_spec, windows)
    # day 1 holds 2 of 3 and breaches: retrain there; day 2 is clean, so nothing new
    assert [d.retrain for d in decisions] == [False, True, False]


def test_empty_windows_are_no_alarm_and_do_not_close_an_incident(hysteresis_spec: Any) -> None:
    empty = [window(d, drift="no_data", quality="no_data", service="no_data") for d in range(4)]
    assert not any(d.alert or d.retrain or d.rollback for d in replay(hysteresis_spec, empty))
    windows = [
        window(0, drift="breach"),
        window(1, drift="no_data", quality="no_data", service="no_data"),
        window(2, drift="no_data", quality="no_data", service="no_data"),
        window(3),
    ]
    decisions = replay(hysteresis_spec, windows)
    assert [d.incident_event for d in decisions] == ["opened", "ongoing", "ongoing", "ongoing"]
    assert decisions[-1].incident is not None and decisions[-1].incident.clean_windows == 1


def test_a_quality_breach_inside_the_bake_window_rolls_back_instead(hysteresis_spec: Any) -> None:
    deployed = DAY0 + timedelta(days=2, hours=-3)
    windows = [window(0), window(1), window(2, quality="breach"), window(3, quality="breach")]
    decisions = replay(hysteresis_spec, windows, deployed_at=deployed)
    assert decisions[2].rollback and not decisions[2].retrain and decisions[2].alert
    assert decisions[2].reason is not None and "v3 breached within 24 h of its deploy" in decisions[2].reason
    # one rollback per incident; the next window (outside the bake window) may retrain instead
    assert not decisions[3].rollback and decisions[3].retrain


def test_drift_alone_inside_the_bake_window_is_not_the_new_version_s_fault(hysteresis_spec: Any) -> None:
    deployed = DAY0 + timedelta(days=1)
    windows = [window(1, drift="breach"), window(2, drift="breach")]
    decisions = replay(hysteresis_spec, windows, deployed_at=deployed)
    assert not any(d.rollback for d in decisions) and decisions[1].retrain


def test_an_open_incident_survives_between_runs_as_data() -> None:
    incident = Incident(opened_at=DAY0, reason="drift breached", clean_windows=1, retrain_requested=True)
    assert Incident.model_validate_json(incident.model_dump_json()) == incident


def test_retrain_needs_at_most_as_many_breaches_as_windows(spec: Any) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"cannot exceed monitor\.retrain_windows"):
        spec.monitor.model_validate({"retrain_breaches": 4, "retrain_windows": 3})


def test_a_report_becomes_a_verdict_per_concern(spec: Any) -> None:
    from conveyor.monitoring.decisions import verdict_of
    from conveyor.monitoring.monitor import MonitorReport

    judged = spec.model_copy(update={"monitor": spec.monitor.model_copy(update={"min_live_accuracy": 0.8})})

    def report(n_labelled: int, accuracy: float | None, requests: int, errors: int) -> MonitorReport:
        return MonitorReport(
            model=spec.name,
            registered_model_name=spec.registered_model_name,
            version="3",
            reference_version="3",
            window_start=DAY0,
            window_end=DAY0 + timedelta(days=1),
            n_predictions=requests,
            n_labelled=n_labelled,
            drift=None,
            live={
                "metrics": None if accuracy is None else {"accuracy": accuracy},
                "per_version": {"3": {"n_requests": requests, "n_server_errors": errors}} if requests else {},
            },
            alerts=(),
            retrain_recommended=False,
            message="",
        )

    bad = verdict_of(report(50, 0.6, 100, 10), judged)
    assert (bad.drift, bad.quality, bad.service) == ("no_data", "breach", "breach")
    assert any("accuracy 0.6 on 50 labelled is below the floor 0.8" in r for r in bad.reasons), bad.reasons
    few_labels = verdict_of(report(5, 0.1, 100, 0), judged)  # too few labels to judge
    assert (few_labels.quality, few_labels.service) == ("no_data", "clean")
    assert verdict_of(report(0, None, 0, 0), judged).empty  # no traffic: says nothing
