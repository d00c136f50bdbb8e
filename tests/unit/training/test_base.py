"""The shared trainer helpers: feature casting, target checks, signature, pins, artifact files."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conveyor.config import load_spec
from conveyor.training.base import (
    FeatureSchemaError,
    PredictionContractError,
    TrainingDivergedError,
    TrainingError,
    feature_frame,
    pinned_requirements,
    prediction_frame,
    signature_for,
    target_vector,
    tracking_scope,
    tracking_uri,
    write_golden_rows,
    write_reference,
)

from .support import churn_frame

pytestmark = pytest.mark.unit


def test_feature_frame_casts_keeps_missing_and_drops_extras() -> None:
    spec = load_spec("churn")
    raw = churn_frame(6, seed=1)
    raw["tenure_months"] = raw["tenure_months"].astype(int)
    raw.loc[0, "contract"] = None
    raw.loc[1, "payment_method"] = np.nan
    raw.loc[2, "age"] = None
    frame = feature_frame(spec, raw)
    assert list(frame.columns) == spec.feature_names
    assert all(str(frame[f.name].dtype) == "float64" for f in spec.numeric_features)
    assert frame.loc[0, "contract"] is None and frame.loc[1, "payment_method"] is None
    assert np.isnan(frame.loc[2, "age"])
    assert all(isinstance(v, str) for v in frame["internet_service"])


def test_feature_frame_names_the_missing_and_the_non_numeric_columns() -> None:
    spec = load_spec("churn")
    with pytest.raises(FeatureSchemaError, match="support_calls"):
        feature_frame(spec, churn_frame(3).drop(columns=["support_calls"]))
    bad = churn_frame(3)
    bad["age"] = ["old", "young", "x"]
    with pytest.raises(FeatureSchemaError, match="'age'"):
        feature_frame(spec, bad)


def test_target_vector_rejects_missing_and_non_binary_labels() -> None:
    spec = load_spec("churn")
    frame = churn_frame(5)
    assert target_vector(spec, frame).dtype == np.int64
    frame["churned"] = frame["churned"].astype(float)
    frame.loc[0, "churned"] = np.nan
    with pytest.raises(FeatureSchemaError, match="missing"):
        target_vector(spec, frame)
    frame.loc[0, "churned"] = 2.0
    frame.loc[1, "churned"] = 0.0
    frame.loc[2, "churned"] = 1.0
    with pytest.raises(FeatureSchemaError, match=r"labels \['2.0'\] outside data.classes \[0, 1\]"):
        target_vector(spec, frame)


def test_signature_follows_the_contract() -> None:
    spec = load_spec("churn")
    signature = signature_for(spec)
    assert [(c.name, c.type.name) for c in signature.inputs.inputs] == [
        *((f.name, "double") for f in spec.numeric_features),
        *((f.name, "string") for f in spec.categorical_features),
    ]
    assert all(c.required for c in signature.inputs.inputs)
    assert [(c.name, c.type.name) for c in signature.outputs.inputs] == [
        ("probability", "double"),
        ("prediction", "long"),
    ]


def test_pinned_requirements_pin_installed_versions() -> None:
    pins = pinned_requirements("scikit-learn", "numpy")
    assert pins[0] == f"mlflow-skinny=={metadata.version('mlflow-skinny')}"
    assert f"scikit-learn=={metadata.version('scikit-learn')}" in pins
    assert len(pins) == len(set(pins)) == 4
    with pytest.raises(TrainingError, match="not installed"):
        pinned_requirements("surely-not-an-installed-distribution")


def test_golden_rows_keep_missing_values_as_null(tmp_path: Path) -> None:
    spec = load_spec("churn")
    eval_df = churn_frame(20, seed=3)
    eval_df.loc[0, "total_charges"] = np.nan
    eval_df.loc[1, "contract"] = None
    path = write_golden_rows(
        spec, lambda rows: prediction_frame(spec, np.linspace(0, 1, len(rows))), eval_df, tmp_path / "g.json"
    )
    golden = json.loads(path.read_text())
    assert len(golden["inputs"]) == spec.deploy.golden_rows
    assert golden["inputs"][0]["total_charges"] is None
    assert golden["inputs"][1]["contract"] is None
    assert golden["outputs"]["prediction"] == [int(p >= 0.5) for p in golden["outputs"]["probability"]]


def test_golden_rows_refuse_predictions_that_break_the_contract(tmp_path: Path) -> None:
    spec = load_spec("churn")
    wrong = lambda rows: pd.DataFrame({"probability": np.zeros(len(rows))})  # noqa: E731
    with pytest.raises(PredictionContractError, match="columns"):
        write_golden_rows(spec, wrong, churn_frame(10), tmp_path / "g.json")


def test_reference_keeps_features_and_target_and_caps_rows(tmp_path: Path) -> None:
    spec = load_spec("churn")
    path = write_reference(spec, churn_frame(5100, seed=2), tmp_path / "reference.parquet")
    reference = pd.read_parquet(path)
    assert len(reference) == 5000
    assert list(reference.columns) == [*spec.feature_names, "churned"]
    again = pd.read_parquet(write_reference(spec, churn_frame(5100, seed=2), tmp_path / "again.parquet"))
    pd.testing.assert_frame_equal(reference, again)


def test_diverged_error_names_the_epoch_and_the_fix() -> None:
    message = str(TrainingDivergedError("churn", 3, 0.5))
    assert "epoch 3" in message and "learning_rate" in message and "Lower" in message


def test_tracking_scope_uses_settings_and_leaves_mlflow_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    from conveyor.settings import get_settings

    from .support import use_tracking_uri

    uri = f"sqlite:///{tmp_path}/settings.db"
    monkeypatch.setenv("CONVEYOR_MLFLOW_TRACKING_URI", uri)
    get_settings.cache_clear()
    with use_tracking_uri("sqlite:///elsewhere.db"):
        assert tracking_uri() == "sqlite:///elsewhere.db"  # the process's choice wins
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert tracking_uri() == uri
        with tracking_scope():
            assert mlflow.get_tracking_uri() == uri
        assert not is_tracking_uri_set()
