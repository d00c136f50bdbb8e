"""Version-pinned serving: ``CONVEYOR_SERVE_MODELS`` narrows the models, ``CONVEYOR_PINNED_VERSIONS``
loads a given version instead of ``@champion`` (what a Kubernetes Deployment of one version runs)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

pytestmark = pytest.mark.unit

ROW = {"dataframe_split": {"columns": ["x1", "x2", "color"], "data": [[0.3, -0.2, "green"]]}}


def _served_version(client: Any) -> str:
    response = client.post("/models/tiny/invocations", json=ROW)
    assert response.status_code == 200, response.text
    return str(response.headers["X-Model-Version"])


# -- settings ---------------------------------------------------------------------------------------


def test_settings_read_plain_comma_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.settings import Settings

    monkeypatch.setenv("CONVEYOR_SERVE_MODELS", " churn, breast_cancer ,")
    monkeypatch.setenv("CONVEYOR_PINNED_VERSIONS", "churn=7, breast_cancer = 12")
    settings = Settings()
    assert settings.serve_models == ("churn", "breast_cancer")
    assert settings.pinned_versions == {"churn": "7", "breast_cancer": "12"}


def test_settings_default_to_every_model_on_its_champion(monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.settings import Settings

    monkeypatch.delenv("CONVEYOR_SERVE_MODELS", raising=False)
    monkeypatch.delenv("CONVEYOR_PINNED_VERSIONS", raising=False)
    settings = Settings()
    assert settings.serve_models == ()
    assert settings.pinned_versions == {}
    assert Settings(pinned_versions={"churn": 7}).pinned_versions == {"churn": "7"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("churn", "is not <model>=<version>"),
        ("churn=", "is not <model>=<version>"),
        ("churn=7,churn=8", "pins 'churn' twice"),
        ("churn=champion", "a registry version is a positive integer"),
        ("churn=0", "a registry version is a positive integer"),
    ],
)
def test_malformed_pins_are_refused_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    from conveyor.settings import Settings

    monkeypatch.setenv("CONVEYOR_PINNED_VERSIONS", value)
    with pytest.raises(ValidationError, match="CONVEYOR_PINNED_VERSIONS") as raised:
        Settings()
    assert message in str(raised.value)


# -- which specs a server takes ---------------------------------------------------------------------


def _specs(tmp_path: Any, support_module: Any, *names: str) -> list[Any]:
    from conveyor.serving.state import read_specs

    for name in names:
        support_module.write_spec(tmp_path, name)
    return read_specs(tmp_path)


def test_select_specs_serves_all_by_default_and_only_the_named_ones_otherwise(
    tmp_path: Any, support_module: Any
) -> None:
    from conveyor.serving.state import select_specs

    specs = _specs(tmp_path, support_module, "alpha", "beta", "gamma")
    assert [s.name for s in select_specs(specs)] == ["alpha", "beta", "gamma"]
    assert [s.name for s in select_specs(specs, ("gamma", "alpha"))] == ["gamma", "alpha"]
    assert [s.name for s in select_specs(specs, (), {"beta": "3"})] == ["alpha", "beta", "gamma"]


def test_select_specs_refuses_unknown_and_unserved_models(tmp_path: Any, support_module: Any) -> None:
    from conveyor.serving.state import select_specs

    specs = _specs(tmp_path, support_module, "alpha", "beta")
    with pytest.raises(
        ValueError, match=r"CONVEYOR_SERVE_MODELS names \['nope'\].*known: \['alpha', 'beta'\]"
    ):
        select_specs(specs, ("alpha", "nope"))
    with pytest.raises(ValueError, match=r"CONVEYOR_PINNED_VERSIONS pins \['beta'\], which this server"):
        select_specs(specs, ("alpha",), {"beta": "2"})


def test_the_app_refuses_to_start_on_a_model_it_has_no_spec_for(make_settings: Any) -> None:
    from conveyor.serving.app import create_app

    with pytest.raises(ValueError, match="CONVEYOR_SERVE_MODELS"):
        create_app(make_settings(serve_models=("tiny", "churn")))


# -- a pinned server --------------------------------------------------------------------------------


def test_a_pinned_server_serves_that_version_not_the_champion(
    store: Any, make_settings: Any, start_app: Any, admin: Any
) -> None:
    pinned = store.versions["candidate"]
    assert pinned != store.versions["good"], "the champion must differ for this test to mean anything"
    client = start_app(make_settings(serve_models=("tiny",), pinned_versions={"tiny": pinned}))

    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["models"]) == {"tiny"}, "'pending' is not served by this process"
    assert ready.json()["models"]["tiny"]["version"] == pinned
    assert f"pinned version {pinned} loaded" in ready.json()["models"]["tiny"]["detail"]
    status = client.get("/models").json()
    assert [(m["name"], m["version"], m["alias"]) for m in status] == [("tiny", pinned, None)]
    assert _served_version(client) == pinned

    reload = client.post("/admin/models/tiny/reload", headers=admin)
    assert reload.status_code == 200, reload.text
    assert reload.json()["version"] == pinned and reload.json()["changed"] is False
    assert f"pinned version {pinned}" in reload.json()["message"]
    assert _served_version(client) == pinned


def test_unpinned_models_of_a_pinned_server_still_follow_their_champion(
    store: Any, make_settings: Any, start_app: Any, tmp_path: Any, support_module: Any
) -> None:
    specs = tmp_path / "specs"
    support_module.write_spec(specs, "tiny", "conveyor-test-tiny")
    support_module.write_spec(specs, "twin", "conveyor-test-tiny")
    client = start_app(make_settings(specs_dir=specs, pinned_versions={"twin": store.versions["candidate"]}))
    models = {m["name"]: (m["version"], m["alias"]) for m in client.get("/models").json()}
    assert models == {
        "tiny": (store.versions["good"], "champion"),
        "twin": (store.versions["candidate"], None),
    }


def test_a_pinned_version_that_fails_its_golden_rows_never_gets_ready(
    store: Any, make_settings: Any, start_app: Any
) -> None:
    client = start_app(
        make_settings(serve_models=("tiny",), pinned_versions={"tiny": store.versions["bad_golden"]})
    )
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert "golden rows differ" in response.json()["models"]["tiny"]["detail"]


def test_a_missing_pinned_version_is_an_error_without_retries(store: Any, make_settings: Any) -> None:
    from conveyor.serving.metrics import ServerMetrics
    from conveyor.serving.state import ERROR, ModelServer, read_specs

    settings = make_settings(serve_models=("tiny",), pinned_versions={"tiny": "999"})
    # Long pauses between tries: a retried load would take at least 10 s here.
    server = ModelServer(
        settings, read_specs(settings.specs_dir), ServerMetrics(), load_attempts=3, retry_delay_s=10.0
    )
    started = time.monotonic()
    server.load_all()
    assert time.monotonic() - started < 10.0, "a missing pinned version must not be retried"
    slot = server.slot("tiny")
    assert slot.state == ERROR and slot.serving is None
    assert "version 999 of 'conveyor-test-tiny' is pinned by CONVEYOR_PINNED_VERSIONS" in str(slot.error)
    ready, detail = server.readiness()
    assert ready is False and detail["tiny"]["state"] == ERROR
