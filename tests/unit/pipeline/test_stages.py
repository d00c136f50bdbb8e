"""The pipeline's stages chained in one process on a real MLflow store (breast-cancer, scikit-learn)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unit.pipeline.support import END, run_context, run_stages

pytestmark = pytest.mark.unit


def test_stages_register_once_per_run_and_gate_against_the_champion(tracking_uri: str) -> None:
    from conveyor import pipeline
    from conveyor.config import load_spec
    from conveyor.data.generate import land_demo_data
    from conveyor.pipeline import register
    from conveyor.registry.aliases import ANY, get_alias_version, set_alias
    from conveyor.registry.tracking import client_for

    spec = load_spec("breast_cancer")
    land_demo_data(spec, days=spec.data.window_days, end_day=END, seed=0)
    first = run_stages("breast_cancer", "manual__1", tracking_uri)
    assert first["decision"].cold_start is True and first["decision"].registers is True
    assert first["compressed"].chosen == "none"
    client = client_for(tracking_uri)
    version = first["registered"].version
    assert first["registered"].alias == "challenger" and first["registered"].created is True
    assert get_alias_version(client, spec.registered_model_name, "challenger") == version

    again = register(  # a retry of the task, with the models themselves this time
        first["run"],
        validated=first["validated"],
        trained=first["trained"],
        decision=first["decision"],
        compressed=first["compressed"],
        tracking_uri=tracking_uri,
        promotion=first["promoted"],
    )
    assert again.version == version and again.created is False
    mv = client.get_model_version(spec.registered_model_name, version)
    assert mv.tags["conveyor.promotion"] == "gate" and mv.tags["conveyor.promoted_by"] == "alice"
    assert json.loads(mv.tags["conveyor.params"]) == {
        "window_end": END.isoformat(),
        "window_days": None,
        "gate_mode": "spec",
        "compression": None,
        "force": False,
        "justification": None,
        "force_retrain": True,
    }
    assert len(client.search_model_versions(f"name='{spec.registered_model_name}'")) == 1

    set_alias(
        client,
        spec.registered_model_name,
        "champion",
        version,
        expected_version=ANY,
        actor="test",
        reason="t",
    )
    # the same window again: the champion was trained on exactly these rows, so nothing is trained
    unchanged = pipeline.validate_data(
        run_context("breast_cancer", "manual__same"), tracking_uri=tracking_uri
    )
    assert unchanged.unchanged is True and unchanged.champion_version == version
    assert unchanged.snapshot is None and unchanged.fingerprint == first["validated"].fingerprint
    assert unchanged.xcom()["unchanged"] is True  # what the DAG's data_changed short circuit reads
    run = client.get_run(unchanged.run_id)
    assert run.data.tags["conveyor.outcome"] == "unchanged_data"
    # a window one day shorter holds other rows: new data
    moved = pipeline.validate_data(
        run_context("breast_cancer", "manual__next", window_days=spec.data.window_days - 1),
        tracking_uri=tracking_uri,
    )
    assert moved.unchanged is False and moved.snapshot is not None
    dry = run_stages("breast_cancer", "manual__2", tracking_uri, gate_mode="dry_run")
    assert dry["decision"].cold_start is False
    assert dry["decision"].champion_version == version
    assert dry["decision"].action == "dry_run" and dry["decision"].registers is False
    assert "dry run registers nothing" in dry["refused"]
    assert len(client.search_model_versions(f"name='{spec.registered_model_name}'")) == 1


@pytest.mark.parametrize(
    ("gate", "refusal"),
    [
        ({"gate_mode": "dry_run"}, "dry run registers nothing"),
        ({"gate_mode": "dry_run", "force": True, "justification": "ship it"}, "dry run registers nothing"),
        ({"gate_mode": "require_approval"}, "nobody approved"),
    ],
)
def test_register_refuses_what_the_gate_did_not_let_through(
    tracking_uri: str, gate: dict, refusal: str
) -> None:
    """Defence in depth: handed a decision that does not allow it, ``register`` registers nothing."""
    from conveyor import pipeline
    from conveyor.config import load_spec
    from conveyor.evaluation.promotion import RegistrationRefused
    from conveyor.registry.tracking import client_for

    spec = load_spec("breast_cancer")
    land_demo_data_once(spec)
    out = run_stages("breast_cancer", "manual__x", tracking_uri, **gate)
    assert refusal in out["refused"]
    c = pipeline.compress(
        out["run"], validated=out["validated"], trained=out["trained"], tracking_uri=tracking_uri
    )
    with pytest.raises(RegistrationRefused, match=refusal):
        pipeline.register(
            out["run"],
            validated=out["validated"],
            trained=out["trained"],
            decision=out["decision"],
            compressed=c,
            tracking_uri=tracking_uri,
        )
    client = client_for(tracking_uri)
    assert client.search_registered_models() == []
    assert client.search_model_versions(f"name='{spec.registered_model_name}'") == []


def land_demo_data_once(spec: object) -> None:
    from conveyor.data.generate import land_demo_data

    land_demo_data(spec, days=spec.data.window_days, end_day=END, seed=0)  # type: ignore[attr-defined]


def test_bad_batch_fails_validation_naming_checks_and_rows(tracking_uri: str) -> None:
    from conveyor import pipeline
    from conveyor.config import load_spec
    from conveyor.data.generate import land_demo_data
    from conveyor.errors import PermanentError
    from conveyor.registry.tracking import client_for

    spec = load_spec("churn")
    uris = land_demo_data(
        spec, days=2, end_day=END, rows_per_day=400, seed=3, corruption=["nulls", "wrong_types"]
    )
    with pytest.raises(PermanentError) as err:
        pipeline.validate_data(run_context("churn", "manual__bad", window_days=2), tracking_uri=tracking_uri)
    message = str(err.value)
    assert "expect_column_values_to" in message.lower() or "ExpectColumnValues" in message
    from conveyor.data.storage import read_parquet

    bad_ids = set(read_parquet(uris[-1])[spec.data.id_column].astype(str))
    assert any(i in message for i in bad_ids), message  # the failing rows are named by id
    client = client_for(tracking_uri)
    assert client.search_registered_models() == []
    runs = client.search_runs([client.get_experiment_by_name("conveyor/churn").experiment_id])
    assert runs[0].data.tags["conveyor.validation"] == "failed"


def test_an_unreadable_parquet_file_fails_once_naming_it(tracking_uri: str) -> None:
    import json as _json

    from conveyor import pipeline
    from conveyor.config import load_spec
    from conveyor.data.generate import land_demo_data
    from conveyor.data.landing import UnreadableBatchError
    from conveyor.errors import PermanentError
    from conveyor.registry.tracking import client_for

    spec = load_spec("churn")
    uris = land_demo_data(spec, days=2, end_day=END, rows_per_day=400, seed=3)
    broken = uris[-1]
    path = Path(broken.removeprefix("file://"))
    path.write_bytes(path.read_bytes()[:-40])  # a broken footer
    with pytest.raises(UnreadableBatchError) as err:
        pipeline.validate_data(
            run_context("churn", "manual__broken", window_days=2), tracking_uri=tracking_uri
        )
    assert isinstance(err.value, PermanentError)  # deterministic: no retry
    assert broken in str(err.value) and "not readable Parquet" in str(err.value)
    assert "<Buffer>" not in str(err.value).split(":", 1)[0]
    client = client_for(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("conveyor/churn").experiment_id])
    assert run.data.tags["conveyor.validation"] == "failed"
    local = client.download_artifacts(run.info.run_id, "validation/report.json")
    report = _json.loads(Path(local).read_text())
    assert report["success"] is False and report["sources"] == [broken]
    assert report["failed"][0]["expectation"] == "readable_parquet"
    assert client.search_registered_models() == []


def test_the_gate_report_url_is_the_mlflow_run_page_without_credentials() -> None:
    from conveyor.pipeline import mlflow_run_url

    assert (
        mlflow_run_url("http://ci:s3cret@127.0.0.1:5000/", "7", "abc123")
        == "http://127.0.0.1:5000/#/experiments/7/runs/abc123"
    )
    assert mlflow_run_url("sqlite:///tmp/mlflow.db", "7", "abc123") == "runs:/abc123"
