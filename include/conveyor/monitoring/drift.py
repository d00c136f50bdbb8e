"""Feature drift between a model's training reference and what it sees live, with Evidently.

Evidently picks the test per column from the data (Kolmogorov-Smirnov / chi-square p-values on
small samples, Wasserstein / Jensen-Shannon distances on large ones); ``spec.monitor.drift_threshold``
is applied to whichever it picks, as the spec documents. A feature drifts when Evidently's own
per-column test fails; the dataset drifts when the share of drifted features reaches
``spec.monitor.drift_share_alert``.

:func:`output_drift` runs the same test on the model's output: the served ``prediction`` (binary and
multiclass: the predicted class, a categorical test; regression: the predicted value, a numeric
test) against the training target in the same reference (``reference.parquet`` carries it). It
compares what the model says with what the training data said, so it reads the predicted class mix
(or the predicted value distribution) moving away from the training labels; it is reported, not
part of the dataset verdict.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from conveyor.errors import PermanentError

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec

log = logging.getLogger(__name__)


class DriftError(PermanentError, ValueError):
    """Drift cannot be computed on these frames (missing feature columns, no rows)."""


class FeatureDrift(BaseModel):
    """One feature's drift test."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["numeric", "categorical"]
    method: str
    score: float | None
    threshold: float | None
    drifted: bool
    note: str | None = None


class DriftReport(BaseModel):
    """Per-feature drift plus the dataset verdict."""

    model_config = ConfigDict(frozen=True)

    model: str
    n_reference: int
    n_current: int
    features: tuple[FeatureDrift, ...]
    n_drifted: int
    drift_share: float
    drift_share_alert: float
    dataset_drift: bool
    html_uri: str | None = None

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def summary(self) -> str:
        """One sentence for alerts and logs."""
        verdict = "dataset drift" if self.dataset_drift else "no dataset drift"
        names = f": {', '.join(self.drifted_features)}" if self.drifted_features else ""
        return (
            f"{verdict}: {self.n_drifted} of {len(self.features)} features drifted "
            f"(share {self.drift_share:.2f}, alert at {self.drift_share_alert:.2f}){names}"
        )


def feature_drift(
    spec: ModelSpec,
    reference_df: pd.DataFrame,
    current_df: pd.DataFrame,
    *,
    html_path: str | Path | None = None,
    method: str | None = None,
) -> DriftReport:
    """Test every feature of ``spec`` for drift from ``reference_df`` to ``current_df``.

    Args:
        spec: the model spec (features, thresholds).
        reference_df: training rows (the model's ``artifacts/reference.parquet``); extra columns ignored.
        current_df: live rows (features from the prediction log); extra columns ignored.
        html_path: where to save Evidently's HTML report: a local path or a data-root URI.
        method: force one Evidently stat test for every column (e.g. ``"psi"``); auto by default.

    Raises:
        DriftError: a frame lacks feature columns or has no rows.
    """
    numeric = [f.name for f in spec.numeric_features]
    categorical = [f.name for f in spec.categorical_features]
    features = numeric + categorical
    for label, frame in (("reference", reference_df), ("current", current_df)):
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise DriftError(f"{spec.name}: the {label} frame lacks feature columns {missing}")
        if len(frame) == 0:
            raise DriftError(f"{spec.name}: the {label} frame has no rows; drift needs both windows")

    reference = _typed(reference_df[features], numeric, categorical)
    current = _typed(current_df[features], numeric, categorical)
    # A column with no values on one side cannot be tested; say so instead of crashing Evidently.
    empty = [c for c in features if reference[c].notna().sum() == 0 or current[c].notna().sum() == 0]
    tested = [c for c in features if c not in empty]

    results: dict[str, FeatureDrift] = {}
    html: str | None = None
    if tested:
        results, html = _evidently(
            spec,
            reference,
            current,
            [c for c in numeric if c in tested],
            [c for c in categorical if c in tested],
            method=method,
            want_html=html_path is not None,
        )
    for column in empty:
        results[column] = FeatureDrift(
            name=column,
            kind="numeric" if column in numeric else "categorical",
            method="unavailable",
            score=None,
            threshold=None,
            drifted=False,
            note="no non-null values in one of the windows",
        )

    ordered = tuple(results[c] for c in features if c in results)
    n_drifted = sum(f.drifted for f in ordered)
    share = n_drifted / len(ordered) if ordered else 0.0
    html_uri = _save_html(html, html_path) if html is not None and html_path is not None else None
    return DriftReport(
        model=spec.name,
        n_reference=len(reference_df),
        n_current=len(current_df),
        features=ordered,
        n_drifted=n_drifted,
        drift_share=share,
        drift_share_alert=spec.monitor.drift_share_alert,
        dataset_drift=share >= spec.monitor.drift_share_alert,
        html_uri=html_uri,
    )


#: The column name :func:`output_drift` reports its test under.
OUTPUT_COLUMN = "prediction"


def output_drift(
    spec: ModelSpec, reference_df: pd.DataFrame, predictions: pd.DataFrame, *, method: str | None = None
) -> FeatureDrift | None:
    """Drift of the served predictions from the training target (see the module docstring).

    Both sides are put in the same space first: classification targets and predicted labels as the
    class (binary 0/1, multiclass the label), compared as categories; regression targets and
    predicted values as floats. ``spec.monitor.drift_threshold`` applies as for features.

    Args:
        spec: the model spec.
        reference_df: the training reference; it must hold ``spec.data.target``.
        predictions: prediction-log rows (``read_prediction_log``) with their ``prediction`` column.

    Returns:
        The test as a :class:`FeatureDrift` named ``prediction``; ``None`` when the reference has no
        target column or either side has no usable value.
    """
    import pandas as pd

    from conveyor import tasks

    target = spec.data.target
    if target not in reference_df.columns or OUTPUT_COLUMN not in predictions.columns:
        return None
    truth = reference_df[target].dropna()
    served = predictions[OUTPUT_COLUMN].dropna()
    if len(truth) == 0 or len(served) == 0:
        return None
    try:
        if spec.task == "regression":
            ref = pd.Series(tasks.encode_target(spec, truth), dtype="float64")
            cur = pd.to_numeric(served, errors="coerce").dropna().astype("float64")
        else:  # the same codes for both: binary 0/1, multiclass the class index, then as text
            ref = pd.Series(tasks.encode_target(spec, truth)).map(str)
            cur = pd.Series(tasks.encode_target(spec, served)).map(str)
    except tasks.TargetError as exc:
        log.warning("%s: output drift not measured: %s", spec.name, exc)
        return None
    if len(cur) == 0:
        return None
    numeric, categorical = ([OUTPUT_COLUMN], []) if spec.task == "regression" else ([], [OUTPUT_COLUMN])
    results, _ = _evidently(
        spec,
        pd.DataFrame({OUTPUT_COLUMN: ref.reset_index(drop=True)}),
        pd.DataFrame({OUTPUT_COLUMN: cur.reset_index(drop=True)}),
        numeric,
        categorical,
        method=method,
        want_html=False,
    )
    found = results.get(OUTPUT_COLUMN)
    if found is None:
        return None
    what = (
        "predicted value vs training target"
        if spec.task == "regression"
        else "predicted class vs training label"
    )
    return found.model_copy(update={"note": what})


def _evidently(
    spec: ModelSpec,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    *,
    method: str | None,
    want_html: bool,
) -> tuple[dict[str, FeatureDrift], str | None]:
    """Evidently's per-column drift tests of ``numeric`` and ``categorical`` columns (and its HTML)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    tested = [*numeric, *categorical]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report(
        [
            DataDriftPreset(
                columns=tested,
                drift_share=spec.monitor.drift_share_alert,
                threshold=spec.monitor.drift_threshold,
                method=method,
            )
        ],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(current[tested], data_definition=definition),
        Dataset.from_pandas(reference[tested], data_definition=definition),
    )
    html = snapshot.get_html_str(as_iframe=False) if want_html else None
    return _parse(snapshot.dict(), set(numeric)), html


def _typed(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    import pandas as pd

    out = frame.copy()
    for c in numeric:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    for c in categorical:
        out[c] = out[c].astype("object").where(out[c].notna(), None)
    return out.reset_index(drop=True)


def _parse(snapshot: dict[str, Any], numeric: set[str]) -> dict[str, FeatureDrift]:
    """Per-column method, score and verdict from an Evidently 0.7 snapshot dict."""
    verdicts: dict[str, bool] = {}
    for test in snapshot.get("tests", []):
        config = test.get("metric_config", {}).get("params", {})
        if config.get("type", "").endswith("ValueDrift") and "column" in config:
            verdicts[config["column"]] = test.get("status") == "FAIL"
    out: dict[str, FeatureDrift] = {}
    for metric in snapshot.get("metrics", []):
        config = metric.get("config", {})
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        column = config["column"]
        method = str(config.get("method") or "auto")
        score = float(metric["value"])
        threshold = config.get("threshold")
        drifted = verdicts.get(column)
        if drifted is None:  # no test result: Evidently's convention (p-values below, distances at/above)
            drifted = threshold is not None and (
                score < threshold if "p_value" in method else score >= threshold
            )
        out[column] = FeatureDrift(
            name=column,
            kind="numeric" if column in numeric else "categorical",
            method=method,
            score=score,
            threshold=float(threshold) if threshold is not None else None,
            drifted=bool(drifted),
        )
    return out


def _save_html(html: str, target: str | Path) -> str:
    from conveyor.data.storage import write_text

    if isinstance(target, Path) or "://" not in str(target):
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
        return str(path)
    return write_text(html, str(target))
