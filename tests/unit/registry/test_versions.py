from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import PermanentError
from conveyor.registry.tracking import get_or_create_run
from conveyor.registry.versions import (
    ARTIFACT_SHA256_TAG,
    ModelUriError,
    VersionLineageError,
    artifact_sha256,
    find_version_by_run,
    model_artifact_sha256,
    register_version,
)
from unit.registry import support
from unit.training.support import use_tracking_uri

pytestmark = pytest.mark.unit

DAG_RUN = "scheduled__2026-11-23T02:00:00+00:00"
LINEAGE = {
    "dag_id": "conveyor_training__toy",
    "data_fingerprint": "fp-123",
    "validation": "passed (12 checks on 400 rows)",
    "gate": "register",
    "compression": "none",
    "parent_model_uri": "models:/m-parent",
    "git_commit": "abc1234",
    "params": {"C": 1.0, "max_iter": 500},
}


@pytest.fixture
def logged(client: Any, spec: Any) -> tuple[str, str]:
    """(run_id, model_uri) of a tiny model logged in the DAG run's MLflow run."""
    run_id = get_or_create_run(client, spec, DAG_RUN, "conveyor_training__toy")
    return run_id, support.log_tiny_model(client, run_id, support.GOOD_WEIGHTS)


def _versions(client: Any, name: str) -> list[str]:
    return sorted(str(mv.version) for mv in client.search_model_versions(f"name = '{name}'"))


def test_register_creates_one_version_with_lineage(client: Any, spec: Any, logged: tuple[str, str]) -> None:
    run_id, model_uri = logged
    result = register_version(client, spec, model_uri, run_id, DAG_RUN, LINEAGE)
    assert result.created is True
    assert (result.name, result.version) == ("conveyor-toy", "1")
    assert result.model_uri == "models:/conveyor-toy/1"
    mv = client.get_model_version("conveyor-toy", "1")
    assert mv.source == model_uri  # registered from the logged model, as mlflow.register_model does
    assert mv.run_id == run_id
    tags = mv.tags
    assert tags["conveyor.dag_run_id"] == DAG_RUN
    assert tags["conveyor.dag_id"] == "conveyor_training__toy"
    assert tags["conveyor.data_fingerprint"] == "fp-123"
    assert tags["conveyor.git_commit"] == "abc1234"
    assert json.loads(tags["conveyor.params"]) == {"C": 1.0, "max_iter": 500}
    assert tags["conveyor.model_id"] == model_uri.removeprefix("models:/")
    assert len(tags[ARTIFACT_SHA256_TAG]) == 64
    assert result.artifact_sha256 == tags[ARTIFACT_SHA256_TAG]
    # the registered files are the logged files: same hash through the registry URI
    assert model_artifact_sha256(client, result.model_uri) == tags[ARTIFACT_SHA256_TAG]
    # the logged model knows its version (MLflow UI lineage), as after mlflow.register_model
    logged_model = client.get_logged_model(tags["conveyor.model_id"])
    assert {"name": "conveyor-toy", "version": 1} in json.loads(logged_model.tags["mlflow.modelVersions"])


def test_register_twice_for_the_same_dag_run_gives_one_version(
    client: Any, spec: Any, logged: tuple[str, str]
) -> None:
    run_id, model_uri = logged
    first = register_version(client, spec, model_uri, run_id, DAG_RUN, LINEAGE)
    again = register_version(client, spec, model_uri, run_id, DAG_RUN, LINEAGE)
    assert again.created is False
    assert again.version == first.version
    assert _versions(client, "conveyor-toy") == ["1"]
    found = find_version_by_run(client, spec, DAG_RUN)
    assert found is not None and found.version == "1"
    assert find_version_by_run(client, spec, "manual__other") is None


def test_another_dag_run_gets_the_next_version(client: Any, spec: Any, logged: tuple[str, str]) -> None:
    run_id, model_uri = logged
    register_version(client, spec, model_uri, run_id, DAG_RUN, LINEAGE)
    other_run = get_or_create_run(client, spec, "manual__2", "conveyor_training__toy")
    other_uri = support.log_tiny_model(client, other_run, support.WEAK_WEIGHTS)
    result = register_version(client, spec, other_uri, other_run, "manual__2", LINEAGE)
    assert (result.version, result.created) == ("2", True)
    assert _versions(client, "conveyor-toy") == ["1", "2"]


def test_a_racing_attempt_drops_its_duplicate(
    client: Any, spec: Any, logged: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, model_uri = logged
    first = register_version(client, spec, model_uri, run_id, DAG_RUN, LINEAGE)
    real = client.search_model_versions
    calls = {"n": 0}

    def blind_first_search(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return [] if calls["n"] == 1 else real(*args, **kwargs)  # the other attempt's version not yet seen

    monkeypatch.setattr(client, "search_model_versions", blind_first_search)
    raced = register_version(client, spec, model_uri, run_id, DAG_RUN, LINEAGE)
    monkeypatch.setattr(client, "search_model_versions", real)
    assert (raced.version, raced.created) == (first.version, False)
    assert _versions(client, "conveyor-toy") == ["1"]


def test_runs_uri_resolves_to_the_logged_model(client: Any, spec: Any, logged: tuple[str, str]) -> None:
    run_id, model_uri = logged
    result = register_version(client, spec, f"runs:/{run_id}/model", run_id, DAG_RUN, LINEAGE)
    assert client.get_model_version(result.name, result.version).source == model_uri


def test_lineage_with_another_dag_run_id_is_refused(client: Any, spec: Any, logged: tuple[str, str]) -> None:
    run_id, model_uri = logged
    with pytest.raises(VersionLineageError, match="manual__elsewhere"):
        register_version(
            client, spec, model_uri, run_id, DAG_RUN, {**LINEAGE, "dag_run_id": "manual__elsewhere"}
        )
    assert _versions(client, "conveyor-toy") == []


@pytest.mark.parametrize(
    "uri", ["models:/m-doesnotexist", "runs:/0123456789abcdef/model", "s3://bucket/model"]
)
def test_unknown_model_uri_is_refused(client: Any, spec: Any, logged: tuple[str, str], uri: str) -> None:
    run_id, _ = logged
    with pytest.raises(ModelUriError):
        register_version(client, spec, uri, run_id, DAG_RUN, LINEAGE)
    assert _versions(client, "conveyor-toy") == []


def test_register_uses_no_global_mlflow_state(
    client: Any, spec: Any, logged: tuple[str, str], tmp_path: Path
) -> None:
    import mlflow

    before = mlflow.get_tracking_uri()
    assert before != client.tracking_uri  # the code must not rely on the process-wide URI
    run_id, model_uri = logged
    register_version(client, spec, model_uri, run_id, DAG_RUN, LINEAGE)
    assert mlflow.get_tracking_uri() == before
    assert not (tmp_path / "mlflow.db").exists()  # no stray default store was opened


def _write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def test_artifact_sha256_is_stable_and_sensitive(tmp_path: Path) -> None:
    files = {"MLmodel": b"flavors: {}\n", "artifacts/weights.json": b'{"a": 1}', "code/model.py": b"x = 1\n"}
    a = artifact_sha256(_write_tree(tmp_path / "a", files))
    b = artifact_sha256(_write_tree(tmp_path / "b", dict(reversed(list(files.items())))))
    assert a == b == artifact_sha256(tmp_path / "a")  # creation order and location do not matter
    changed = artifact_sha256(_write_tree(tmp_path / "c", {**files, "artifacts/weights.json": b'{"a": 2}'}))
    renamed = artifact_sha256(
        _write_tree(
            tmp_path / "d",
            {"MLmodel": files["MLmodel"], "artifacts/w.json": b'{"a": 1}', "code/model.py": b"x = 1\n"},
        )
    )
    added = artifact_sha256(_write_tree(tmp_path / "e", {**files, "extra.txt": b""}))
    # moving bytes across a file boundary changes the hash (lengths are part of the digest)
    split = artifact_sha256(_write_tree(tmp_path / "f", {"a": b"xy", "b": b""}))
    assert split != artifact_sha256(_write_tree(tmp_path / "g", {"a": b"x", "b": b"y"}))
    assert len({a, changed, renamed, added}) == 4


def test_sha_of_a_logged_model_matches_its_files(
    client: Any, spec: Any, logged: tuple[str, str], tmp_path: Path
) -> None:
    import mlflow.artifacts

    _, model_uri = logged
    location = client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    copy = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp_path / "copy"))
    assert Path(copy) != Path(location.removeprefix("file://"))
    assert (Path(copy) / "MLmodel").exists()
    assert model_artifact_sha256(client, model_uri) == artifact_sha256(copy)


def test_reading_a_version_through_mlflow_does_not_change_its_hash(
    client: Any, spec: Any, logged: tuple[str, str]
) -> None:
    """MLflow writes ``registered_model_meta`` into a local store when a version is read in place
    (``mlflow models serve -m models:/name/1``, ``pyfunc.load_model``), and Python may leave
    ``__pycache__`` beside a model's code: neither is the model, so neither may make it unservable."""
    import mlflow.artifacts

    run_id, model_uri = logged
    result = register_version(client, spec, model_uri, run_id, DAG_RUN, LINEAGE)
    with use_tracking_uri(client.tracking_uri):  # models:/ resolves through the global registry URI
        in_place = Path(mlflow.artifacts.download_artifacts(artifact_uri=result.model_uri))
    assert (in_place / "registered_model_meta").exists()  # MLflow wrote into the store itself
    (in_place / "code" / "__pycache__").mkdir(parents=True, exist_ok=True)
    (in_place / "code" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\x00" * 16)
    assert model_artifact_sha256(client, result.model_uri) == result.artifact_sha256
    (in_place / "MLmodel").write_text((in_place / "MLmodel").read_text() + "\n")
    assert model_artifact_sha256(client, result.model_uri) != result.artifact_sha256


def test_verify_artifact_refuses_one_changed_byte(tmp_path: Path) -> None:
    from conveyor.registry.versions import ArtifactIntegrityError, artifact_sha256, verify_artifact

    model = tmp_path / "model"
    (model / "data").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "data" / "weights.bin").write_bytes(bytes(range(256)) * 4)
    sha = artifact_sha256(model)
    assert verify_artifact(model, sha, what="conveyor-toy v3") == sha
    assert verify_artifact(model, None, what="conveyor-toy v3") is None  # nothing recorded: unverified
    data = bytearray((model / "data" / "weights.bin").read_bytes())
    data[500] ^= 0x01
    (model / "data" / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="refusing to load conveyor-toy v3") as caught:
        verify_artifact(model, sha, what="conveyor-toy v3")
    assert isinstance(caught.value, PermanentError) and sha[:16] in str(caught.value)
