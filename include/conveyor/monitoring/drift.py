"""Feature drift between a model's training reference and what it sees live, with Evidently.

Evidently picks the test per column from the data (Kolmogorov-Smirnov / chi-square p-values on
small samples, Wasserstein / Jensen-Shannon distances on large ones); ``spec.monitor.drift_threshold``
is applied to whichever it picks, as the spec documents. A feature drifts when Evidently's own
per-column test fails; the dataset drifts when the share of drifted features reaches
``spec.monitor.drift_share_alert``.
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
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

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
    threshold = spec.monitor.drift_threshold

    results: dict[str, FeatureDrift] = {}
    html: str | None = None
    if tested:
        definition = DataDefinition(
            numerical_columns=[c for c in numeric if c in tested],
            categorical_columns=[c for c in categorical if c in tested],
        )
        report = Report(
            [
                DataDriftPreset(
                    columns=tested,
                    drift_share=spec.monitor.drift_share_alert,
                    threshold=threshold,
                    method=method,
                )
            ],
            include_tests=True,
        )
        snapshot = report.run(
            Dataset.from_pandas(current[tested], data_definition=definition),
            Dataset.from_pandas(reference[tested], data_definition=definition),
        )
        results = _parse(snapshot.dict(), set(numeric))
        if html_path is not None:
            html = snapshot.get_html_str(as_iframe=False)
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
