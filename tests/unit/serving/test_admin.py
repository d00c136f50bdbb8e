"""Admin routes: token enforcement, stage, promote, reload; serving never breaks on a bad candidate."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.unit

ROW = {"dataframe_split": {"columns": ["x1", "x2", "color"], "data": [[0.3, -0.2, "green"]]}}


def _predict(client: Any) -> tuple[str, float]:
    response = client.post("/models/tiny/invocations", json=ROW)
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"], response.json()["predictions"][0]["probability"]


def test_admin_routes_refused_without_a_configured_token(make_settings: Any, start_app: Any) -> None:
    client = start_app(make_settings(model_server_token=""))
    for action in ("stage", "promote", "reload"):
        response = client.post(
            f"/admin/models/tiny/{action}", json={"version": "1"}, headers={"Authorization": "Bearer x"}
        )
        assert response.status_code == 403, response.text
        assert "CONVEYOR_MODEL_SERVER_TOKEN" in response.json()["error"]


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token", "Basic s3cret-admin-token", "s3cret-admin-token"]
)
def test_admin_routes_need_the_right_bearer_token(app_client: Any, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = app_client.post("/admin/models/tiny/reload", headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in response.json()["error"]
    assert {m["name"]: m["version"] for m in app_client.get("/models").json()}["tiny"] == "1"


def test_stage_with_bad_golden_rows_fails_and_keeps_serving(app_client: Any, store: Any, admin: Any) -> None:
    before = _predict(app_client)
    response = app_client.post(
        "/admin/models/tiny/stage", json={"version": store.versions["bad_golden"]}, headers=admin
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["loaded"] is True
    assert report["golden_passed"] is False
    assert report["max_abs_diff"] > 0.01
    assert "golden rows differ" in report["error"]

    promote = app_client.post(
        "/admin/models/tiny/promote", json={"version": store.versions["bad_golden"]}, headers=admin
    )
    assert promote.status_code == 409
    assert "failed its golden rows" in promote.json()["error"]
    assert _predict(app_client) == before
    bad = store.versions["bad_golden"]
    text = app_client.get("/metrics").text
    assert f'conveyor_golden_check_passed{{model="tiny",slot="staged",version="{bad}"}} 0.0' in text


def test_stage_of_a_missing_version_reports_not_loaded(app_client: Any, admin: Any) -> None:
    before = _predict(app_client)
    report = app_client.post("/admin/models/tiny/stage", json={"version": 999}, headers=admin).json()
    assert report["loaded"] is False and report["golden_passed"] is False
    assert report["version"] == "999"
    assert "could not load models:/conveyor-test-tiny/999" in report["error"]
    assert _predict(app_client) == before


def test_stage_then_promote_swaps_the_serving_version(app_client: Any, store: Any, admin: Any) -> None:
    candidate = store.versions["candidate"]
    version, old_probability = _predict(app_client)
    assert version == "1"

    report = app_client.post("/admin/models/tiny/stage", json={"version": candidate}, headers=admin).json()
    assert report["loaded"] and report["golden_passed"], report
    assert report["max_abs_diff"] <= 1e-6
    assert report["p50_latency_ms"] <= report["p95_latency_ms"]
    assert report["within_budget"] is True and report["latency_budget_ms"] == 250.0
    assert _predict(app_client)[0] == "1", "staging must not change what serves"
    assert app_client.get("/v2/models/tiny").json()["parameters"]["staged_version"] == candidate

    promoted = app_client.post("/admin/models/tiny/promote", json={"version": candidate}, headers=admin)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() | {"at": None} == {
        "model": "tiny",
        "version": candidate,
        "previous_version": "1",
        "changed": True,
        "at": None,
    }
    version, new_probability = _predict(app_client)
    assert version == candidate
    assert new_probability != old_probability  # the candidate's offset moves every probability
    models = {m["name"]: m for m in app_client.get("/models").json()}
    assert models["tiny"]["version"] == candidate and models["tiny"]["alias"] is None
    text = app_client.get("/metrics").text
    assert f'conveyor_model_loaded_version{{model="tiny",version="{candidate}"}} 1.0' in text
    assert 'conveyor_model_loaded_version{model="tiny",version="1"}' not in text

    again = app_client.post("/admin/models/tiny/promote", json={"version": candidate}, headers=admin)
    assert again.status_code == 200 and again.json()["changed"] is False


def test_promote_without_staging_is_409(app_client: Any, store: Any, admin: Any) -> None:
    response = app_client.post(
        "/admin/models/tiny/promote", json={"version": store.versions["candidate"]}, headers=admin
    )
    assert response.status_code == 409
    assert "/admin/models/tiny/stage first" in response.json()["error"]


def test_stage_by_model_uri(app_client: Any, store: Any, admin: Any) -> None:
    uri = f"models:/conveyor-test-tiny/{store.versions['candidate']}"
    report = app_client.post("/admin/models/tiny/stage", json={"model_uri": uri}, headers=admin).json()
    assert report["loaded"] and report["golden_passed"], report
    assert report["version"] == store.versions["candidate"]
    assert report["model_uri"] == uri


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"version": "1", "model_uri": "models:/x/1"}, 422),
        ({"versoin": "1"}, 422),
        ({"model_uri": "/"}, 422),  # a path on the server's disk is never copied into its cache
        ({"model_uri": "file:///etc"}, 422),
    ],
)
def test_stage_body_is_validated(app_client: Any, admin: Any, body: dict[str, Any], status: int) -> None:
    response = app_client.post("/admin/models/tiny/stage", json=body, headers=admin)
    assert response.status_code == status, response.text
    assert response.json()["error"].startswith("invalid request")
    malformed = app_client.post(
        "/admin/models/tiny/stage", content=b"{nope", headers={**admin, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed JSON body"


def test_latency_over_budget_is_reported(
    store: Any, make_settings: Any, start_app: Any, tmp_path: Any, support_module: Any, admin: Any
) -> None:
    specs = tmp_path / "specs"
    support_module.write_spec(specs, "tiny", "conveyor-test-tiny", latency_budget_ms=0.000001)
    client = start_app(make_settings(specs_dir=specs))
    assert client.post("/invocations", json=ROW).status_code == 200, "one model: ?model= is optional"
    report = client.post(
        "/admin/models/tiny/stage", json={"version": store.versions["candidate"]}, headers=admin
    )
    body = report.json()
    assert body["golden_passed"] is True and body["within_budget"] is False
    assert body["p95_latency_ms"] > body["latency_budget_ms"]


def test_reload_follows_the_champion_alias(
    store: Any, make_settings: Any, start_app: Any, tmp_path: Any, support_module: Any, admin: Any
) -> None:
    from mlflow import MlflowClient

    name = "conveyor-test-reload"
    first = support_module.register(store.tracking_uri, name, store.uris["good"])
    second = support_module.register(store.tracking_uri, name, store.uris["candidate"], alias=None)
    bad = support_module.register(store.tracking_uri, name, store.uris["bad_golden"], alias=None)
    specs = tmp_path / "specs"
    support_module.write_spec(specs, "tiny", name)
    client = start_app(make_settings(specs_dir=specs))
    assert _predict(client)[0] == first

    registry = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    registry.set_registered_model_alias(name, "champion", second)
    response = client.post("/admin/models/tiny/reload", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == second and response.json()["previous_version"] == first
    assert _predict(client)[0] == second

    registry.set_registered_model_alias(name, "champion", bad)
    refused = client.post("/admin/models/tiny/reload", headers=admin)
    assert refused.status_code == 409
    assert f"still serving version {second}" in refused.json()["error"]
    assert _predict(client)[0] == second
