"""Live quality from the model server's prediction log and the labels that land later.

The server writes ``predictions/<model>/date=YYYY-MM-DD/<writer>.jsonl`` (see
``conveyor.serving.predlog``); labels arrive with later landing batches
(``landing/<model>/date=.../*.parquet`` carry the target per id). Joining the two on the spec's id
column gives the live quality with the task's metrics (``conveyor.tasks.metrics``: binary ROC AUC,
accuracy, precision, recall, F1, log loss; multiclass accuracy, macro/weighted F1, ...; regression
RMSE, MAE, R², MAPE); the log alone gives latency and error counts per served version.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor import tasks
from conveyor.data.storage import filesystem, join_uri, list_uris, read_parquet
from conveyor.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec

log = logging.getLogger(__name__)

LOG_COLUMNS = (
    "ts",
    "event",
    "model",
    "version",
    "request_id",
    "route",
    "id",
    "probability",
    "prediction",
    "latency_ms",
    "status",
    "error",
    "out_of_contract",
)
LABEL_COLUMN = "label"


def read_prediction_log(
    spec: ModelSpec,
    start: datetime,
    end: datetime,
    *,
    data_root: str | None = None,
    events: tuple[str, ...] = ("prediction",),
) -> pd.DataFrame:
    """Prediction-log events of ``spec`` with ``start <= ts < end``, features as columns.

    Args:
        spec: the model.
        start: window start (naive datetimes are taken as UTC).
        end: window end, exclusive.
        data_root: defaults to the configured data root.
        events: which events to keep: ``"prediction"`` and/or ``"error"``.

    Returns:
        One row per event with :data:`LOG_COLUMNS`, the task's output columns and one column per
        feature; ``ts`` is UTC. ``prediction`` is the logged value (binary 0/1, multiclass label,
        regression float; ``probability`` is binary only); a multiclass line's ``probabilities``
        object becomes the contract's ``probability_<label>`` columns, so
        ``conveyor.tasks.scores_of`` reads the frame like a model's output. Empty (with those
        columns) when nothing was logged in the window.
    """
    import pandas as pd

    start, end = _utc(start), _utc(end)
    root = data_root or get_settings().data_root
    rows: list[dict[str, Any]] = []
    bad_lines = 0
    # Multiclass lines log {"<label>": p}; the frame gets the contract's probability_<label> columns.
    probability_columns = (
        {str(c): tasks.probability_column(c) for c in spec.classes} if spec.task == "multiclass" else {}
    )
    for day in _days(start.date(), end.date()):
        pattern = join_uri(root, "predictions", spec.name, f"date={day.isoformat()}", "*.jsonl")
        for uri in list_uris(pattern):
            fs, path = filesystem(uri)
            with fs.open(path, "r") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        bad_lines += 1  # a line cut by a crash mid-write; the rest of the file is fine
                        continue
                    if event.get("event", "prediction") not in events:
                        continue
                    features = event.pop("features", None) or {}
                    row = {k: event.get(k) for k in LOG_COLUMNS}
                    if probability_columns:
                        given = event.get("probabilities") or {}
                        row.update({column: given.get(key) for key, column in probability_columns.items()})
                    row.update({f: features.get(f) for f in spec.feature_names})
                    rows.append(row)
    if bad_lines:
        log.warning("%s: skipped %d unreadable prediction-log line(s)", spec.name, bad_lines)
    columns = [*LOG_COLUMNS, *probability_columns.values(), *spec.feature_names]
    frame = pd.DataFrame(rows, columns=columns)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    frame = frame[(frame["ts"] >= pd.Timestamp(start)) & (frame["ts"] < pd.Timestamp(end))]
    numeric = [
        "probability",
        *probability_columns.values(),
        "latency_ms",
        *(f.name for f in spec.numeric_features),
    ]
    if spec.task == "regression":
        numeric.append("prediction")
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["version"] = frame["version"].astype("object")
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def load_labels(
    spec: ModelSpec, since: datetime, *, until: datetime | None = None, data_root: str | None = None
) -> pd.DataFrame:
    """Labels (id, target) from landing partitions dated ``since`` onwards (labels arrive late).

    Returns:
        Columns ``[spec.data.id_column, "label"]``, one row per id (the latest landed label wins);
        ``label`` holds the target as landed (:func:`join_labels` encodes it per the task).
    """
    import pandas as pd

    root = data_root or get_settings().data_root
    id_col, target = spec.data.id_column, spec.data.target
    first = _utc(since).date()
    last = _utc(until).date() if until is not None else None
    frames = []
    for uri in list_uris(join_uri(root, "landing", spec.name, "date=*", "*.parquet")):
        day = _partition_date(uri)
        if day is None or day < first or (last is not None and day > last):
            continue
        batch = read_parquet(uri)
        if id_col in batch.columns and target in batch.columns:
            frames.append(batch[[id_col, target]].dropna(subset=[target]))
    if not frames:
        return pd.DataFrame({id_col: pd.Series(dtype="object"), LABEL_COLUMN: pd.Series(dtype="object")})
    labels = pd.concat(frames, ignore_index=True).rename(columns={target: LABEL_COLUMN})
    return labels.drop_duplicates(subset=[id_col], keep="last").reset_index(drop=True)


def join_labels(spec: ModelSpec, predictions: pd.DataFrame, labelled_df: pd.DataFrame) -> pd.DataFrame:
    """Predictions that carried an id, each with the label that landed for that id.

    Args:
        spec: the model (its id column and target).
        predictions: prediction events (``read_prediction_log``); the ``id`` column is the id the
            client sent.
        labelled_df: rows with ``spec.data.id_column`` and either ``"label"`` or ``spec.data.target``
            (a landing batch works as is).

    Returns:
        The matching prediction rows plus a ``label`` column: the target encoded per the task
        (``conveyor.tasks.encode_target``: binary 0/1, multiclass the class index, regression the
        float value). Ids compare as strings, so an id sent as ``7`` matches a landed ``"7"``. A
        landed label the spec does not allow (outside ``data.classes``, non-numeric) is dropped
        with a warning rather than failing the whole window.
    """
    id_col = spec.data.id_column
    labels = labelled_df
    if LABEL_COLUMN not in labels.columns:
        if spec.data.target not in labels.columns:
            raise ValueError(f"{spec.name}: labelled frame has neither 'label' nor {spec.data.target!r}")
        labels = labels.rename(columns={spec.data.target: LABEL_COLUMN})
    if id_col not in labels.columns:
        raise ValueError(f"{spec.name}: labelled frame lacks the id column {id_col!r}")
    labels = labels[[id_col, LABEL_COLUMN]].dropna().copy()
    labels[LABEL_COLUMN], valid = _encoded(spec, labels[LABEL_COLUMN])
    labels = labels[valid]
    labels["_key"] = labels[id_col].map(_key)
    labels = labels.drop_duplicates(subset=["_key"], keep="last")

    preds = predictions[predictions["id"].notna()].copy()
    if "event" in preds.columns:
        preds = preds[preds["event"].fillna("prediction") == "prediction"]
    preds["_key"] = preds["id"].map(_key)
    joined = preds.merge(labels[["_key", LABEL_COLUMN]], on="_key", how="inner")
    joined[LABEL_COLUMN] = joined[LABEL_COLUMN].astype("float64" if spec.task == "regression" else "int64")
    return joined.drop(columns=["_key"]).reset_index(drop=True)


def _encoded(spec: ModelSpec, values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``values`` encoded per the task, and which of them could be (the rest are logged and dropped)."""
    import numpy as np
    import pandas as pd

    try:
        encoded = tasks.encode_target(spec, values)
        return pd.Series(encoded, index=values.index), pd.Series(True, index=values.index)
    except tasks.TargetError:
        pass
    codes: list[Any] = []
    for value in values.tolist():  # the slow path, only for a window holding bad labels
        try:
            codes.append(tasks.encode_target(spec, [value])[0])
        except tasks.TargetError:
            codes.append(np.nan)
    encoded_series = pd.Series(codes, index=values.index, dtype="float64")
    valid = encoded_series.notna()
    log.warning(
        "%s: dropped %d landed label(s) the %s spec does not allow, e.g. %s",
        spec.name,
        int((~valid).sum()),
        spec.task,
        sorted(map(str, values[~valid].unique()))[:5],
    )
    return encoded_series, valid


def live_quality(
    spec: ModelSpec, log_df: pd.DataFrame, labelled_df: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Quality, latency and errors of the served model(s) over a log window.

    Args:
        spec: the model.
        log_df: events from ``read_prediction_log(..., events=("prediction", "error"))``.
        labelled_df: labels (``load_labels``); without them only counts and latency are computed.

    Returns:
        ``{"n_predictions", "n_requests", "n_errors", "n_labelled", "metrics", "per_version"}`` where
        ``metrics`` is :func:`conveyor.tasks.metrics` (the task's metric set, NaN as ``None``) on the
        labelled predictions (``None`` when none are labelled) and ``per_version`` holds, per served version,
        n_predictions, n_requests, p50/p95 request latency, client (4xx) and server (5xx) error
        counts, the server error rate and, when labelled, that version's metrics.
    """
    event = log_df["event"].fillna("prediction") if "event" in log_df.columns else None
    predictions = log_df[event == "prediction"] if event is not None else log_df
    errors = log_df[event == "error"] if event is not None else log_df.iloc[0:0]
    joined = join_labels(spec, predictions, labelled_df) if labelled_df is not None else None

    versions = sorted({str(v) for v in log_df["version"].dropna()}, key=_version_order)
    per_version: dict[str, dict[str, Any]] = {}
    for version in versions:
        v_pred = predictions[predictions["version"].astype(str) == version]
        v_err = errors[errors["version"].astype(str) == version]
        entry = _traffic(v_pred, v_err)
        if joined is not None:
            v_joined = joined[joined["version"].astype(str) == version]
            entry["n_labelled"] = len(v_joined)
            entry["metrics"] = _metrics(spec, v_joined)
        per_version[version] = entry

    out: dict[str, Any] = _traffic(predictions, errors)
    out["n_labelled"] = len(joined) if joined is not None else 0
    out["metrics"] = _metrics(spec, joined) if joined is not None else None
    out["per_version"] = per_version
    return out


def _traffic(predictions: pd.DataFrame, errors: pd.DataFrame) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    requests = predictions.drop_duplicates(subset=["request_id"])
    latencies = pd.to_numeric(requests["latency_ms"], errors="coerce").dropna().to_numpy(dtype=float)
    status = pd.to_numeric(errors["status"], errors="coerce") if "status" in errors.columns else pd.Series([])
    n_client = int(((status >= 400) & (status < 500)).sum())
    n_server = int((status >= 500).sum())
    n_requests = len(requests) + len(errors)
    flagged: dict[str, int] = {}
    if "out_of_contract" in predictions.columns:
        for columns in predictions["out_of_contract"].dropna():
            for column in columns:
                flagged[column] = flagged.get(column, 0) + 1
    n_flagged = int(predictions["out_of_contract"].notna().sum()) if "out_of_contract" in predictions else 0
    return {
        # rows served with values outside the data contract (deploy.out_of_contract: flag), per column
        "n_out_of_contract": n_flagged,
        "out_of_contract_columns": flagged,
        "n_predictions": len(predictions),
        "n_requests": n_requests,
        "n_errors": len(errors),
        "n_client_errors": n_client,
        "n_server_errors": n_server,
        "server_error_rate": n_server / n_requests if n_requests else 0.0,
        "p50_latency_ms": float(np.percentile(latencies, 50)) if latencies.size else None,
        "p95_latency_ms": float(np.percentile(latencies, 95)) if latencies.size else None,
    }


def _metrics(spec: ModelSpec, joined: pd.DataFrame | None) -> dict[str, float | None] | None:
    """The task's metrics of labelled predictions; rows whose logged output is unreadable are skipped."""
    import numpy as np

    if joined is None or len(joined) == 0:
        return None
    scores = tasks.scores_of(spec, joined)
    finite = np.isfinite(scores) if scores.ndim == 1 else np.isfinite(scores).all(axis=1)
    if not finite.any():
        return None
    y = joined[LABEL_COLUMN].to_numpy()[finite]
    scored = tasks.metrics(spec, y, scores[finite])
    return {k: (None if math.isnan(v) else v) for k, v in scored.items()}


def _key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _partition_date(uri: str) -> date | None:
    for part in uri.split("/"):
        if part.startswith("date="):
            try:
                return date.fromisoformat(part[len("date=") :])
            except ValueError:
                return None
    return None
