"""compress(): variants measured in their serving runtime, the best within budget, else the original."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from conveyor.compression import compress
from conveyor.training import TrainResult

from ..training.support import assert_model_contract, tiny_keras_spec

pytestmark = pytest.mark.unit


def test_tflite_variant_is_smaller_within_budget_and_chosen(
    keras_trained: TrainResult,
    frames: tuple[pd.DataFrame, pd.DataFrame],
    new_run: Callable[[], str],
    tracking: dict[str, str],
    tmp_path: Path,
) -> None:
    import mlflow
    from mlflow import MlflowClient

    spec = tiny_keras_spec()
    run_id = new_run()
    result = compress(spec, keras_trained, *frames, run_id)

    assert result.chosen == "tflite_dynamic_range"
    assert result.model_uri != keras_trained.model_uri
    assert result.baseline is not None and result.baseline.model_uri == keras_trained.model_uri
    assert result.baseline.metric == pytest.approx(keras_trained.metrics["roc_auc"], abs=1e-9)
    (variant,) = result.variants
    assert variant.accepted and variant.model_uri == result.model_uri
    assert variant.size_bytes < keras_trained.model_size_bytes and variant.size_ratio < 1
    assert variant.metric_drop <= spec.compression.max_metric_drop
    assert variant.p50_latency_ms > 0 and result.baseline.p50_latency_ms > 0

    assert_model_contract(spec, result.model_uri, frames[1], tmp_path / "variant")
    original = Path(
        mlflow.artifacts.download_artifacts(keras_trained.model_uri, dst_path=str(tmp_path / "o"))
    )
    compressed = Path(mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(tmp_path / "c")))
    assert (compressed / "artifacts" / "reference.parquet").read_bytes() == (
        original / "artifacts" / "reference.parquet"
    ).read_bytes()
    assert sorted(p.name for p in (compressed / "artifacts").iterdir()) == [
        "golden_rows.json",
        "model.tflite",
        "preprocessing.json",
        "reference.parquet",
    ]

    client = MlflowClient(tracking["uri"])
    run = client.get_run(run_id)
    assert run.data.tags["conveyor.compression"] == "tflite_dynamic_range"
    assert run.data.metrics["compression.tflite_dynamic_range.size_ratio"] == pytest.approx(
        variant.size_ratio
    )
    assert run.data.metrics["compression.tflite_dynamic_range.accepted"] == 1.0
    report = json.loads(
        Path(client.download_artifacts(run_id, "compression/report.json", str(tmp_path))).read_text()
    )
    assert report["chosen"] == "tflite_dynamic_range"
    assert report["variants"][0]["size_bytes"] == variant.size_bytes
    logged = client.get_logged_model(result.model_uri.removeprefix("models:/"))
    assert logged.tags["conveyor.parent_model_uri"] == keras_trained.model_uri


def test_impossible_budget_ships_the_original_model(
    keras_trained: TrainResult, frames: tuple[pd.DataFrame, pd.DataFrame], new_run: Callable[[], str]
) -> None:
    spec = tiny_keras_spec()
    # The spec validator forbids a negative budget; model_copy skips validation on purpose.
    spec = spec.model_copy(
        update={"compression": spec.compression.model_copy(update={"max_metric_drop": -1.0})}
    )

    result = compress(spec, keras_trained, *frames, new_run())

    assert result.chosen == "none"
    assert result.model_uri == keras_trained.model_uri
    (variant,) = result.variants
    assert not variant.accepted and "over the budget" in variant.reason


def test_sklearn_models_and_method_none_ship_uncompressed(
    keras_trained: TrainResult, frames: tuple[pd.DataFrame, pd.DataFrame], new_run: Callable[[], str]
) -> None:
    spec = tiny_keras_spec()
    sklearn_result = keras_trained.model_copy(
        update={"trainer": "sklearn_pipeline", "model_uri": "models:/m-never-downloaded"}
    )
    result = compress(spec, sklearn_result, *frames, new_run())
    assert (result.chosen, result.model_uri, result.variants) == ("none", "models:/m-never-downloaded", [])
    assert "Keras" in result.reason and "ships uncompressed" in result.reason

    no_methods = spec.model_copy(
        update={"compression": spec.compression.model_copy(update={"methods": ("none",)})}
    )
    result = compress(no_methods, keras_trained, *frames, new_run())
    assert (result.chosen, result.model_uri, result.variants) == ("none", keras_trained.model_uri, [])


def test_a_user_keras_model_on_conveyors_preprocessing_compresses_like_the_built_in(
    frames: tuple[pd.DataFrame, pd.DataFrame], new_run: Callable[[], str]
) -> None:
    """``kind: python`` with a Keras model built on ``context.keras_preprocessing`` gets its
    ``preprocessing.json`` written at fit time, so its TFLite variant is built and chosen."""
    from conveyor.config import TrainerSpec
    from conveyor.training import train

    base = tiny_keras_spec()
    trainer = TrainerSpec(
        kind="python",
        entrypoint="conveyor_examples.keras_custom:train",
        seed=7,
        params={"epochs": 4, "units": 8},
    )
    spec = base.model_copy(update={"trainer": trainer})
    trained = train(spec, *frames, new_run())
    result = compress(spec, trained, *frames, new_run())
    assert result.chosen == "tflite_dynamic_range", result.reason
    assert result.model_uri != trained.model_uri
