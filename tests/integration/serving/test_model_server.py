"""The model server as a real uvicorn process against a real MLflow tracking server.

Ready after load → predict → stage and promote v2 while a client hammers ``/invocations`` (no
failed request) → metrics moved → a spec added to the running server deploys and serves without a
restart → a graceful shutdown flushes the prediction log. The module shares
one server pair; the shutdown test runs last.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from unit.serving import support

from conveyor.serving.client import ModelServerClient, ModelServerError
from integration.serving.conftest import REGISTERED

pytestmark = pytest.mark.integration

FEATURES = ["x1", "x2", "color"]
MAX_HAMMER_REQUESTS = 2000
HAMMERS = 4  # concurrent clients, so requests are in flight at the moment of the swap


@pytest.fixture
def client(stack: Any) -> Iterator[ModelServerClient]:
    with ModelServerClient(stack.server_url, token=stack.token, timeout=30) as out:
        yield out


def _sample(stack: Any, n: int = 4, start: int = 40) -> Any:
    return stack.train[["row_id", *FEATURES]].iloc[start : start + n].reset_index(drop=True)


def _sample_value(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus sample over the series whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_part, value = line[len(name) + 1 :].rsplit("} ", 1)
        pairs = dict(pair.split("=", 1) for pair in label_part.split(","))
        if all(pairs.get(k) == f'"{v}"' for k, v in labels.items()):
            total += float(value)
    return total


def test_ready_after_load_and_predicts_like_offline(stack: Any, client: ModelServerClient) -> None:
    ready = client.wait_ready(timeout=180)
    assert ready["models"]["tiny"]["version"] == stack.versions["v1"]
    status = {m.name: m for m in client.models()}["tiny"]
    assert status.ready and status.alias == "champion" and status.golden_passed
    assert status.model_uri == f"models:/conveyor-it-tiny/{stack.versions['v1']}"

    rows = _sample(stack)
    expected = support.offline_predict(stack.weights["v1"], rows[FEATURES])
    predictions = client.predict("tiny", rows)
    np.testing.assert_allclose([p["probability"] for p in predictions], expected["probability"], atol=1e-9)
    assert [p["prediction"] for p in predictions] == expected["prediction"].tolist()
    v2 = client.infer_v2("tiny", {c: rows[c].tolist() for c in FEATURES})
    assert v2["model_version"] == stack.versions["v1"]
    np.testing.assert_allclose(v2["outputs"][0]["data"], expected["probability"], atol=1e-9)

    with pytest.raises(ModelServerError) as excinfo:
        client.predict("tiny", [{"x1": "oops", "x2": 1.0, "color": "red"}])
    assert excinfo.value.status == 422 and "column 'x1' row 0" in excinfo.value.message


def test_stage_and_promote_under_load_without_a_failed_request(stack: Any, client: ModelServerClient) -> None:
    client.wait_ready(timeout=180)
    rows = _sample(stack, n=3)
    body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}
    seen: dict[int, list[str]] = {i: [] for i in range(HAMMERS)}
    failures: list[str] = []
    promoted = threading.Event()

    def hammer(index: int) -> None:
        after_promote = 0
        with ModelServerClient(stack.server_url, timeout=30) as hammer_client:
            for _ in range(MAX_HAMMER_REQUESTS // HAMMERS):
                try:
                    response = hammer_client._http.post("/invocations", params={"model": "tiny"}, json=body)
                except Exception as exc:  # a dropped connection is a failed request too
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                else:
                    seen[index].append(response.headers["X-Model-Version"])
                if promoted.is_set():
                    after_promote += 1
                    if after_promote >= 25:
                        return

    threads = [threading.Thread(target=hammer, args=(i,), name=f"hammer-{i}") for i in range(HAMMERS)]
    for thread in threads:
        thread.start()
    try:
        while sum(map(len, seen.values())) < 40 and any(t.is_alive() for t in threads):
            time.sleep(0.01)
        report = client.stage("tiny", stack.versions["v2"])
        assert report.passed, report
        assert report.n_golden == 8 and report.max_abs_diff is not None and report.max_abs_diff <= 1e-6
        result = client.promote("tiny", stack.versions["v2"])
        assert result.changed and result.previous_version == stack.versions["v1"]
    finally:
        promoted.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a hammer did not finish"

    assert failures == [], failures[:5]
    v1, v2 = stack.versions["v1"], stack.versions["v2"]
    for versions in seen.values():
        assert versions[0] == v1 and versions[-1] == v2
        switch = versions.index(v2)
        assert set(versions[:switch]) == {v1} and set(versions[switch:]) == {v2}, (
            "one clean switch, never back"
        )
    assert sum(map(len, seen.values())) <= MAX_HAMMER_REQUESTS
    expected = support.offline_predict(stack.weights["v2"], rows[FEATURES])
    np.testing.assert_allclose(
        [p["probability"] for p in client.predict("tiny", rows)], expected["probability"], atol=1e-9
    )
    assert client.ready()["models"]["tiny"] == {
        "state": "loaded",
        "ready": True,
        "version": v2,
        "detail": "loaded, golden rows answered within tolerance",
    }


def test_metrics_counters_move(stack: Any, client: ModelServerClient) -> None:
    client.wait_ready(timeout=180)
    version = {m.name: m for m in client.models()}["tiny"].version
    assert version is not None
    before = client.metrics()
    client.predict("tiny", _sample(stack, n=5))
    with pytest.raises(ModelServerError):
        client.predict("tiny", [{"x1": 1.0}])
    after = client.metrics()

    def delta(name: str, **labels: str) -> float:
        return _sample_value(after, name, **labels) - _sample_value(before, name, **labels)

    assert delta("conveyor_requests_total", model="tiny", version=version, status="200") == 1
    assert delta("conveyor_requests_total", model="tiny", version=version, status="422") == 1
    assert delta("conveyor_predictions_total", model="tiny", version=version) == 5
    assert delta("conveyor_request_latency_seconds_count", model="tiny", version=version) == 2
    assert _sample_value(after, "conveyor_model_loaded_version", model="tiny", version=version) == 1
    assert (
        _sample_value(after, "conveyor_golden_check_passed", model="tiny", version=version, slot="serving")
        == 1
    )


def test_a_tampered_artifact_is_refused_and_the_champion_keeps_serving(
    stack: Any, client: ModelServerClient
) -> None:
    """One byte changed in a stored artifact: staging names the version and the hash, serving is untouched."""
    from conveyor.registry.tracking import client_for
    from conveyor.registry.versions import ARTIFACT_SHA256_TAG, model_artifact_sha256

    client.wait_ready(timeout=180)
    mlflow = client_for(stack.mlflow_uri)
    uri, _ = support.log_tiny_model(stack.mlflow_uri, stack.train, artifact_root=None, offset=0.8)
    version = support.register(stack.mlflow_uri, REGISTERED, uri, alias=None)
    sha = model_artifact_sha256(mlflow, f"models:/{REGISTERED}/{version}")
    mlflow.set_model_version_tag(REGISTERED, version, ARTIFACT_SHA256_TAG, sha)  # as register_version does
    stored = mlflow.get_model_version_download_uri(REGISTERED, version).split(":", 1)[1].lstrip("/")
    files = [p for p in (stack.data_root.parent / "artifacts" / stored).rglob("*") if p.is_file()]
    victim = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))

    serving = client.ready()["models"]["tiny"]["version"]
    rows = _sample(stack, n=2)
    answer = client.predict("tiny", rows)
    report = client.stage("tiny", version)
    assert not report.passed and not report.loaded
    assert f"{REGISTERED} v{version}" in str(report.error) and "sha256" in str(report.error), report.error
    assert client.ready()["models"]["tiny"]["version"] == serving
    assert client.predict("tiny", rows) == answer
    with pytest.raises(ModelServerError):
        client.promote("tiny", version)
    assert client.ready()["models"]["tiny"]["version"] == serving


def test_a_spec_added_to_the_running_server_deploys_without_a_restart(
    stack: Any, client: ModelServerClient
) -> None:
    """The bug: a model trained after the stack started got 404 on its deploy until a restart."""
    client.wait_ready(timeout=180)
    pid = stack.server.pid
    registered = "conveyor-it-added"
    uri, weights = support.log_tiny_model(stack.mlflow_uri, stack.train, artifact_root=None, offset=0.2)
    version = support.register(stack.mlflow_uri, registered, uri, alias=None)
    support.write_spec(stack.specs_dir, "added", registered)

    report = client.stage("added", version)  # what the deploy DAG does first
    assert report.passed, report
    result = client.promote("added", version)
    assert result.changed and result.previous_version is None and result.version == version

    rows = _sample(stack)
    expected = support.offline_predict(weights, rows[FEATURES])
    predictions = client.predict("added", rows)
    np.testing.assert_allclose([p["probability"] for p in predictions], expected["probability"], atol=1e-9)
    ready = client.ready()
    assert ready["ready"] is True and ready["models"]["added"]["version"] == version
    assert {m.name for m in client.models()} == {"tiny", "added"}
    assert stack.server.poll() is None and stack.server.pid == pid, "the server must not have restarted"


def test_graceful_shutdown_flushes_the_prediction_log(
    stack: Any, client: ModelServerClient, stop_server: Any
) -> None:
    client.wait_ready(timeout=180)
    rows = _sample(stack, n=7, start=100)
    client.predict("tiny", rows)
    # uvicorn re-raises SIGTERM after its graceful shutdown, hence -15; the log says it was graceful.
    assert stop_server(stack.server) in (0, -15), stack.server_log.read_text()[-3000:]
    assert "Application shutdown complete." in stack.server_log.read_text()

    files = sorted((stack.data_root / "predictions" / "tiny").glob("date=*/*.jsonl"))
    assert files, "no prediction log written"
    events = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    predictions = [e for e in events if e["event"] == "prediction"]
    assert {e["version"] for e in predictions} >= {stack.versions["v1"], stack.versions["v2"]}
    last = predictions[-7:]
    assert [e["id"] for e in last] == rows["row_id"].tolist()
    assert all(set(e["features"]) == set(FEATURES) for e in last)
    assert any(e["event"] == "error" and e["status"] == 422 for e in events)
    assert "Traceback" not in stack.server_log.read_text()
