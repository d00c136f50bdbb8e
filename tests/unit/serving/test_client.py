"""ModelServerClient against the real app (in-process), and its import weight."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pandas as pd
import pytest

from conveyor.errors import PermanentError
from conveyor.serving.client import ModelServerClient, ModelServerError
from conveyor.serving.schemas import StageReport

pytestmark = pytest.mark.unit


@pytest.fixture
def client(app_client: Any, admin: dict[str, str]) -> ModelServerClient:
    out = ModelServerClient("http://testserver", token=admin["Authorization"].split()[1])
    out._http = app_client  # the TestClient is an httpx.Client bound to the in-process app
    return out


def test_predict_from_records_and_frames(client: ModelServerClient) -> None:
    records = [
        {"row_id": 1, "x1": 0.5, "x2": 1.0, "color": "red"},
        {"row_id": 2, "x1": -1, "x2": 0.0, "color": "blue"},
    ]
    from_records = client.predict("tiny", records)
    from_frame = client.predict("tiny", pd.DataFrame(records))
    assert from_records == from_frame
    assert [set(p) for p in from_records] == [{"probability", "prediction"}] * 2
    v2 = client.infer_v2("tiny", {k: [r[k] for r in records] for k in ("x1", "x2", "color")}, request_id="q")
    assert v2["id"] == "q"
    assert v2["outputs"][0]["data"] == [p["probability"] for p in from_records]


def test_errors_carry_status_and_the_server_message(client: ModelServerClient) -> None:
    with pytest.raises(ModelServerError) as excinfo:
        client.predict("tiny", [{"x1": "high", "x2": 1.0, "color": "red"}])
    assert excinfo.value.status == 422
    assert isinstance(excinfo.value, PermanentError)  # the same request fails the same way: no retry
    assert "column 'x1' row 0" in excinfo.value.message
    assert excinfo.value.body["detail"][0]["column"] == "x1"
    with pytest.raises(ModelServerError) as excinfo:
        client.predict("nope", [{"x1": 1.0}])
    assert excinfo.value.status == 404


def test_health_models_and_admin(client: ModelServerClient, store: Any) -> None:
    assert client.live() is True
    assert client.wait_ready(timeout=5)["ready"] is True
    assert {m.name: m.version for m in client.models()} == {"pending": None, "tiny": "1"}
    report = client.stage("tiny", int(store.versions["candidate"]))
    assert isinstance(report, StageReport) and report.passed
    result = client.promote("tiny", store.versions["candidate"])
    assert result.changed and result.previous_version == "1"
    assert "conveyor_model_swaps_total" in client.metrics()
    client.token = "wrong"
    with pytest.raises(ModelServerError) as excinfo:
        client.reload("tiny")
    assert excinfo.value.status == 401


def test_unreachable_server_is_a_model_server_error() -> None:
    client = ModelServerClient("http://127.0.0.1:9", timeout=1)
    assert client.live() is False
    with pytest.raises(ModelServerError) as excinfo:
        client.models()
    assert excinfo.value.status == 0 and "cannot reach" in str(excinfo.value)
    assert not isinstance(excinfo.value, PermanentError)  # worth a retry


def test_client_import_is_light() -> None:
    code = (
        "import sys, conveyor.serving.client\n"
        "heavy = ('mlflow', 'pandas', 'numpy', 'sklearn', 'fastapi', 'evidently')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
