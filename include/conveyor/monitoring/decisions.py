"""What monitoring does about its windows: retrain, roll back, open or close an incident (hysteresis).

A monitoring pass ends in a :class:`~conveyor.monitoring.monitor.MonitorReport`; :func:`verdict_of`
reduces it to a :class:`WindowVerdict` per concern (drift, live quality, service health), each
``breach``, ``clean`` or ``no_data``. :func:`decide` then takes the latest windows and the open
incident (if any) and answers, following the spec's ``monitor`` section:

* **Retrain** when drift or live quality breached in ``retrain_breaches`` of the last
  ``retrain_windows`` windows *and* in the latest one, at most once per incident, with the reason
  in words (it becomes the payload of the training DAG's asset event).
* **Roll back** instead, when the latest window's live quality or service health breached while the
  champion is inside its bake window (``bake_hours`` after it was deployed): the new version is the
  suspect, not the data.
* **Incidents**: one opens on the first breach (the only alert of the incident) and closes after
  ``incident_clear_windows`` clean windows in a row.

A window with no traffic or no labels says nothing: it is neither a breach nor clean, never opens
an incident and never advances one towards closing. Everything here is a pure function of its
inputs, so re-running a window gives the same decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from conveyor.config import ModelSpec
    from conveyor.monitoring.monitor import MonitorReport

Status = Literal["breach", "clean", "no_data"]


class WindowVerdict(BaseModel):
    """One monitoring window, judged per concern."""

    model_config = ConfigDict(frozen=True)

    window_end: datetime
    served_version: str | None = None
    drift: Status = "no_data"
    quality: Status = "no_data"
    service: Status = "no_data"
    #: Why each breach is one, in words (the report's alert sentences).
    reasons: tuple[str, ...] = ()

    @property
    def breached(self) -> bool:
        return "breach" in (self.drift, self.quality, self.service)

    @property
    def retrain_breach(self) -> bool:
        """A breach that new data can fix: the inputs moved, or the answers got worse."""
        return "breach" in (self.drift, self.quality)

    @property
    def empty(self) -> bool:
        return (self.drift, self.quality, self.service) == ("no_data", "no_data", "no_data")

    @property
    def clean(self) -> bool:
        return not self.breached and not self.empty


class Incident(BaseModel):
    """An open incident of one model: persisted between monitoring runs."""

    model_config = ConfigDict(frozen=True)

    opened_at: datetime
    reason: str
    clean_windows: int = 0
    retrain_requested: bool = False
    rolled_back: bool = False


class Decision(BaseModel):
    """What to do after the latest window (at most one of retrain and rollback)."""

    model_config = ConfigDict(frozen=True)

    retrain: bool = False
    rollback: bool = False
    #: Why, in words (the training run's reason, or the ledger reason of the rollback).
    reason: str | None = None
    #: ``opened`` sends the incident's one alert; ``closed`` after enough clean windows.
    incident_event: Literal["none", "opened", "ongoing", "closed"] = "none"
    alert: bool = False
    #: The incident to keep for the next window (``None``: none open).
    incident: Incident | None = None


def verdict_of(
    report: MonitorReport,
    spec: ModelSpec,
    *,
    max_server_error_rate: float | None = None,
    min_labelled: int | None = None,
) -> WindowVerdict:
    """The window's verdict per concern, from a monitoring report.

    Drift: ``no_data`` without predictions or a reference, else the dataset-drift verdict. Quality:
    ``no_data`` until enough labels joined (``monitor.min_live_accuracy`` / ``max_live_rmse`` unset
    also means no judgement), else breach below the floor / above the ceiling. Service: the share
    of server errors of the served versions against ``max_server_error_rate``.
    """
    from conveyor.monitoring.monitor import DEFAULT_MAX_SERVER_ERROR_RATE, DEFAULT_MIN_LABELLED, judge_quality

    max_error_rate = DEFAULT_MAX_SERVER_ERROR_RATE if max_server_error_rate is None else max_server_error_rate
    min_labels = DEFAULT_MIN_LABELLED if min_labelled is None else min_labelled
    reasons: list[str] = []
    drift: Status = "no_data"
    if report.drift is not None:
        drift = "breach" if report.drift.dataset_drift else "clean"
        if report.drift.dataset_drift:
            reasons.append(report.drift.summary())
    quality, _, _ = judge_quality(spec, {**report.live, "n_labelled": report.n_labelled}, min_labels)
    if quality == "breach":
        metric = "rmse" if spec.task == "regression" else "accuracy"
        limit = spec.monitor.max_live_rmse if spec.task == "regression" else spec.monitor.min_live_accuracy
        side = "above the ceiling" if spec.task == "regression" else "below the floor"
        value = report.live["metrics"][metric]
        reasons.append(f"live {metric} {value:.4g} on {report.n_labelled} labelled is {side} {limit:.4g}")
    service: Status = "no_data"
    per_version = report.live.get("per_version") or {}
    requests = sum(int(s.get("n_requests", 0)) for s in per_version.values())
    if requests:
        errors = sum(int(s.get("n_server_errors", 0)) for s in per_version.values())
        service = "breach" if errors / requests > max_error_rate else "clean"
        if service == "breach":
            reasons.append(f"{errors} of {requests} requests failed with a server error")
    return WindowVerdict(
        window_end=report.window_end,
        served_version=report.version,
        drift=drift,
        quality=quality,
        service=service,
        reasons=tuple(reasons),
    )


def decide(
    spec: ModelSpec,
    windows: Sequence[WindowVerdict],
    incident: Incident | None,
    *,
    champion_deployed_at: datetime | None,
) -> Decision:
    """The decision after the newest of ``windows`` (oldest first; the last ``retrain_windows`` count).

    Args:
        spec: The model spec (its ``monitor`` section holds N, M, K and the bake window).
        windows: Recent window verdicts, oldest first; the last one is the window just judged.
        incident: The incident open before this window, if any.
        champion_deployed_at: When the served champion became champion (its bake window starts).

    Returns:
        The decision, with the incident to keep for the next window.
    """
    if not windows:
        return Decision(incident=incident, incident_event="ongoing" if incident else "none")
    monitor = spec.monitor
    latest = windows[-1]
    if latest.empty:  # no traffic, no labels: nothing to say, nothing changes
        return Decision(incident=incident, incident_event="ongoing" if incident else "none")

    event: Literal["none", "opened", "ongoing", "closed"] = "none"
    alert = False
    if latest.breached:
        if incident is None:
            incident = Incident(opened_at=latest.window_end, reason="; ".join(latest.reasons) or "breach")
            event, alert = "opened", True
        else:
            incident = incident.model_copy(update={"clean_windows": 0})
            event = "ongoing"
    elif incident is not None:
        clean = incident.clean_windows + 1
        if clean >= monitor.incident_clear_windows:
            return Decision(incident=None, incident_event="closed")
        incident = incident.model_copy(update={"clean_windows": clean})
        event = "ongoing"

    in_bake = (
        champion_deployed_at is not None
        and latest.window_end - champion_deployed_at <= timedelta(hours=monitor.bake_hours)
        and latest.window_end >= champion_deployed_at
    )
    suspect = latest.quality == "breach" or latest.service == "breach"
    if in_bake and suspect and incident is not None and not incident.rolled_back:
        reason = (
            f"v{latest.served_version} breached within {monitor.bake_hours:g} h of its deploy "
            f"(window ending {latest.window_end:%Y-%m-%d %H:%M} UTC): {'; '.join(latest.reasons)}"
        )
        incident = incident.model_copy(update={"rolled_back": True})
        return Decision(rollback=True, reason=reason, incident_event=event, alert=alert, incident=incident)

    recent = list(windows)[-monitor.retrain_windows :]
    breaches = sum(w.retrain_breach for w in recent)
    if (
        latest.retrain_breach
        and breaches >= monitor.retrain_breaches
        and incident is not None
        and not incident.retrain_requested
    ):
        reason = (
            f"{'drift' if latest.drift == 'breach' else 'live quality'} breached in {breaches} of the last "
            f"{len(recent)} windows, the latest ending {latest.window_end:%Y-%m-%d %H:%M} UTC: "
            f"{'; '.join(latest.reasons)}"
        )
        incident = incident.model_copy(update={"retrain_requested": True})
        return Decision(retrain=True, reason=reason, incident_event=event, alert=alert, incident=incident)
    return Decision(incident_event=event, alert=alert, incident=incident)
