"""run_stage: how a domain step's errors reach Airflow (deterministic ones fail once, without retry)."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "error",
    [
        "conveyor.training.base:FeatureSchemaError",
        "conveyor.training.base:PredictionContractError",
        "conveyor.compression.tflite:CompressionError",
        "conveyor.monitoring.drift:DriftError",
        "conveyor.evaluation.promotion:RegistrationRefused",
        "conveyor.pipeline:RunParamsError",
    ],
)
def test_deterministic_domain_errors_fail_the_task_without_retry(error: str) -> None:
    import importlib

    from conveyor_airflow.stage import run_stage

    module, name = error.split(":")
    cls = getattr(importlib.import_module(module), name)

    def stage() -> dict:
        raise cls("the same input fails the same way")

    with pytest.raises(AirflowFailException, match="the same input fails the same way"):
        run_stage(stage)
