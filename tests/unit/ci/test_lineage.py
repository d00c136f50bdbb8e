"""The commit ``conveyor ci`` sends is what the registered version's lineage records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unit.pipeline.support import END, run_context, run_stages

pytestmark = pytest.mark.unit

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def tracking_uri(conveyor_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(conveyor_home)  # MLflow resolves a SQLite store's artifact root from here
    return f"sqlite:///{conveyor_home}/mlflow.db"


def test_register_records_the_runs_commit_as_git_commit(tracking_uri: str) -> None:
    from conveyor.config import load_spec
    from conveyor.data.generate import land_demo_data
    from conveyor.registry.tracking import client_for

    spec = load_spec("breast_cancer")
    land_demo_data(spec, days=spec.data.window_days, end_day=END, seed=0)
    out = run_stages("breast_cancer", "manual__ci", tracking_uri, commit=SHA)
    version = out["registered"].version
    tags = client_for(tracking_uri).get_model_version(spec.registered_model_name, version).tags
    assert tags["conveyor.git_commit"] == SHA
    assert "commit" not in json.loads(tags["conveyor.params"])  # recorded once, as git_commit


def test_without_a_commit_the_workers_checkout_is_recorded(caplog: pytest.LogCaptureFixture) -> None:
    from conveyor import pipeline

    local = pipeline._git_commit()  # this checkout's HEAD ("unknown" without git)
    assert pipeline._source_commit(run_context("churn", "manual__1")) == local
    assert pipeline._source_commit(run_context("churn", "manual__1", commit=SHA)) == SHA
    if local != "unknown":  # a worker running other code than the commit asked for says so
        assert f"triggered for commit {SHA} but this worker runs {local}" in caplog.text
