"""Specs found at run time: a spec added to a running server's folder is staged, promoted and served
with no restart; a broken spec file never stops the others; a removed spec keeps serving what it loaded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

ROW = {"dataframe_split": {"columns": ["x1", "x2", "color"], "data": [[0.3, -0.2, "green"]]}}


def _specs(tmp_path: Path, support_module: Any, **models: str) -> Path:
    """A fresh specs folder with one spec per ``name=registered_model_name``."""
    specs = tmp_path / "specs"
    for name, registered in models.items():
        support_module.write_spec(specs, name, registered)
    return specs


def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_a_spec_added_to_a_running_server_is_staged_promoted_and_served(
    store: Any, make_settings: Any, start_app: Any, admin: Any, tmp_path: Path, support_module: Any
) -> None:
    specs = _specs(tmp_path, support_module, tiny="conveyor-test-tiny")
    client = start_app(make_settings(specs_dir=specs))
    assert client.get("/v2").json()["models"] == ["tiny"]

    # Trained and registered after the server started; the deploy moves @champion only after promote.
    registered = "conveyor-test-discovered"
    version = support_module.register(store.tracking_uri, registered, store.uris["good"], alias=None)
    support_module.write_spec(specs, "discovered", registered)

    report = client.post("/admin/models/discovered/stage", json={"version": version}, headers=admin)
    assert report.status_code == 200, report.text
    assert report.json()["loaded"] and report.json()["golden_passed"], report.json()
    promoted = client.post("/admin/models/discovered/promote", json={"version": version}, headers=admin)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["changed"] is True and promoted.json()["previous_version"] is None

    answer = client.post("/models/discovered/invocations", json=ROW)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Model-Version"] == version
    assert answer.json() == client.post("/models/tiny/invocations", json=ROW).json(), (
        "same model, same answer"
    )
    models = {m["name"]: m for m in client.get("/models").json()}
    assert models["discovered"]["version"] == version and models["discovered"]["ready"] is True
    assert models["discovered"]["state"] == "loaded", "the background champion look must not undo the promote"
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["models"]["discovered"]["version"] == version
    assert client.get("/v2").json()["models"] == ["discovered", "tiny"]
    assert client.get("/v2/models/discovered").json()["parameters"]["serving_version"] == version


def test_a_discovered_model_without_champion_is_503_until_its_champion_is_set(
    store: Any, make_settings: Any, start_app: Any, tmp_path: Path, support_module: Any
) -> None:
    specs = _specs(tmp_path, support_module, tiny="conveyor-test-tiny")
    client = start_app(make_settings(specs_dir=specs), champion_recheck_s=0.0)
    registered = "conveyor-test-later"
    support_module.write_spec(specs, "later", registered)

    first = client.post("/models/later/invocations", json=ROW)
    assert first.status_code == 503, first.text
    assert first.json()["error"].startswith("model 'later' cannot answer yet")
    _wait_for(lambda: client.get("/v2/models/later").json()["parameters"]["state"] == "no_champion")
    no_champion = client.post("/models/later/invocations", json=ROW)
    assert no_champion.status_code == 503
    assert f"{registered!r} has no @champion version yet" in no_champion.json()["error"]
    ready = client.get("/health/ready")
    assert ready.status_code == 200, "a model without champion never blocks readiness"
    assert ready.json()["models"]["later"]["state"] == "no_champion"

    # @champion set in the registry behind the server's back: the next requests find it.
    version = support_module.register(store.tracking_uri, registered, store.uris["good"], alias="champion")

    def served() -> bool:
        return client.post("/models/later/invocations", json=ROW).status_code == 200

    _wait_for(served)
    answer = client.post("/models/later/invocations", json=ROW)
    assert answer.headers["X-Model-Version"] == version
    status = {m["name"]: m for m in client.get("/models").json()}["later"]
    assert status["alias"] == "champion" and status["state"] == "loaded"


def test_a_name_with_no_spec_after_the_rescan_is_still_404_with_the_served_list(
    make_settings: Any, start_app: Any, admin: Any, tmp_path: Path, support_module: Any
) -> None:
    specs = _specs(tmp_path, support_module, tiny="conveyor-test-tiny")
    client = start_app(make_settings(specs_dir=specs))
    support_module.write_spec(specs, "other", "conveyor-test-other")  # the folder changed, not for 'nope'
    for response in (
        client.post("/models/nope/invocations", json=ROW),
        client.post("/admin/models/nope/stage", json={"version": "1"}, headers=admin),
        client.post("/admin/models/nope/promote", json={"version": "1"}, headers=admin),
        client.post("/admin/models/nope/reload", headers=admin),
        client.get("/v2/models/nope"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "unknown model 'nope'; this server serves ['other', 'tiny']"


def test_a_broken_spec_file_at_startup_does_not_stop_the_others_and_is_reported(
    store: Any, make_settings: Any, start_app: Any, tmp_path: Path, support_module: Any
) -> None:
    specs = _specs(tmp_path, support_module, tiny="conveyor-test-tiny")
    (specs / "broken.yaml").write_text("name: broken\nnumeric_features: [unclosed\n")
    (specs / "halfway.yaml").write_text("name: halfway\nregistered_model_name: x\n")

    client = start_app(make_settings(specs_dir=specs))
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["models"]) == {"tiny"}
    errors = ready.json()["spec_errors"]
    assert set(errors) == {"broken.yaml", "halfway.yaml"}
    assert "ScannerError" in errors["broken.yaml"] or "ParserError" in errors["broken.yaml"]
    assert "ValidationError" in errors["halfway.yaml"]
    assert client.get("/v2").json()["spec_errors"] == errors
    assert client.post("/models/tiny/invocations", json=ROW).status_code == 200

    refused = client.post("/models/broken/invocations", json=ROW)
    assert refused.status_code == 404
    assert refused.json()["error"].startswith(
        "unknown model 'broken'; this server serves ['tiny']; its spec file broken.yaml does not parse:"
    )

    # Fixed in place: found at run time, and its champion (the tiny one's) loads.
    support_module.write_spec(specs, "broken", "conveyor-test-tiny")
    _wait_for(lambda: client.post("/models/broken/invocations", json=ROW).status_code == 200)
    assert set(client.get("/health/ready").json()["spec_errors"]) == {"halfway.yaml"}


def test_a_served_model_named_by_serve_models_with_a_broken_spec_is_reported_not_a_crash(
    make_settings: Any, start_app: Any, tmp_path: Path, support_module: Any
) -> None:
    specs = _specs(tmp_path, support_module, tiny="conveyor-test-tiny")
    (specs / "broken.yaml").write_text("name: broken\n")
    client = start_app(make_settings(specs_dir=specs, serve_models=("tiny", "broken")))
    ready = client.get("/health/ready")
    assert ready.status_code == 503, "a pinned rollout to a broken spec must never replace serving pods"
    detail = ready.json()["models"]["broken"]
    assert detail["state"] == "error" and detail["detail"].startswith("spec file broken.yaml is invalid:")
    assert ready.json()["models"]["tiny"]["ready"] is True
    assert client.post("/models/tiny/invocations", json=ROW).status_code == 200


def test_a_server_pinned_to_some_models_does_not_take_new_specs(
    make_settings: Any, start_app: Any, admin: Any, tmp_path: Path, support_module: Any
) -> None:
    specs = _specs(tmp_path, support_module, tiny="conveyor-test-tiny")
    client = start_app(make_settings(specs_dir=specs, serve_models=("tiny",)))
    support_module.write_spec(specs, "extra", "conveyor-test-tiny")
    response = client.post("/admin/models/extra/stage", json={"version": "1"}, headers=admin)
    assert response.status_code == 404
    assert response.json()["error"] == "unknown model 'extra'; this server serves ['tiny']"


def test_a_spec_removed_while_served_keeps_serving_and_is_flagged(
    make_settings: Any, start_app: Any, tmp_path: Path, support_module: Any
) -> None:
    specs = _specs(tmp_path, support_module, tiny="conveyor-test-tiny", twin="conveyor-test-tiny")
    client = start_app(make_settings(specs_dir=specs))
    (specs / "twin.yaml").unlink()

    models = {m["name"]: m for m in client.get("/models").json()}
    assert models["twin"]["spec_removed"] is True and models["tiny"]["spec_removed"] is False
    answer = client.post("/models/twin/invocations", json=ROW)
    assert answer.status_code == 200, answer.text
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert "its spec left" in ready.json()["models"]["twin"]["detail"]


def test_scan_specs_reports_each_bad_file_and_keeps_the_good_ones(
    tmp_path: Path, support_module: Any
) -> None:
    from conveyor.serving.state import read_specs, scan_specs

    support_module.write_spec(tmp_path, "alpha")
    support_module.write_spec(tmp_path, "beta")
    (tmp_path / "copy-of-alpha.yaml").write_text((tmp_path / "alpha.yaml").read_text())
    (tmp_path / "empty.yaml").write_text("")
    specs, errors = scan_specs(tmp_path)
    assert [s.name for s in specs] == ["alpha", "beta"]
    assert (
        errors["copy-of-alpha.yaml"] == "declares model 'alpha', which alpha.yaml already declares; ignored"
    )
    assert set(errors) == {"copy-of-alpha.yaml", "empty.yaml"}
    with pytest.raises(ValueError, match=r"model spec .*copy-of-alpha.yaml is invalid"):
        read_specs(tmp_path)
