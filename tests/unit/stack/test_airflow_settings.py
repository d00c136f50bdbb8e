"""airflow_settings.yaml: placeholders, shape, and how it is applied through the REST API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conveyor import stack
from conveyor.airflow_api import AirflowClient
from conveyor.settings import REPO_ROOT

from .fake_airflow import FakeAirflow

pytestmark = pytest.mark.unit

PLACEHOLDER_ONLY = re.compile(r"^\$\{[A-Z_]+\}$")


@pytest.fixture
def values(tmp_path: Path) -> dict[str, str]:
    settings = stack.isolated_settings(tmp_path)
    state = stack._new_state(settings, None)
    return stack.settings_values(settings, state)


def test_repository_file_has_no_secrets_only_placeholders() -> None:
    raw = yaml.safe_load(stack.AIRFLOW_SETTINGS_FILE.read_text())
    assert stack.AIRFLOW_SETTINGS_FILE == REPO_ROOT / "airflow_settings.yaml"
    passwords = [c.get("conn_password") for c in raw["airflow"]["connections"] if c.get("conn_password")]
    assert passwords, "model_server_default carries the token through a placeholder"
    assert all(PLACEHOLDER_ONLY.match(p) for p in passwords)
    # no port is hard-coded either: the stack's ports are configurable
    assert all(PLACEHOLDER_ONLY.match(str(c["conn_port"])) for c in raw["airflow"]["connections"])


def test_repository_file_fills_in_from_the_stack_state(values: dict[str, str]) -> None:
    spec = stack.load_airflow_settings(stack.AIRFLOW_SETTINGS_FILE, values)
    conns = {c.conn_id: c for c in spec.airflow.connections}
    assert conns["mlflow_default"].conn_type == "http"
    assert conns["mlflow_default"].conn_host == "127.0.0.1"
    assert conns["mlflow_default"].conn_port == int(values["CONVEYOR_MLFLOW_PORT"])
    server = conns["model_server_default"]
    assert server.conn_port == int(values["CONVEYOR_MODEL_SERVER_PORT"])
    assert server.conn_password == values["CONVEYOR_MODEL_SERVER_TOKEN"]
    pools = {p.pool_name: p.pool_slot for p in spec.airflow.pools}
    assert pools == {"conveyor_training": 1, "conveyor_serving": 2}
    variables = {v.variable_name: v.variable_value for v in spec.airflow.variables}
    assert variables["conveyor_data_root"] == values["CONVEYOR_DATA_ROOT"]


def test_substitution_walks_nested_values_and_names_unknown_placeholders() -> None:
    filled = stack.substitute_placeholders(
        {"a": ["x ${ONE}/${TWO}", 3], "b": {"c": "${ONE}"}}, {"ONE": "1", "TWO": "2"}
    )
    assert filled == {"a": ["x 1/2", 3], "b": {"c": "1"}}
    with pytest.raises(stack.StackError, match=r"no value for placeholder \$\{THREE\}; known: ONE, TWO"):
        stack.substitute_placeholders({"a": "${THREE}"}, {"ONE": "1", "TWO": "2"})


def test_wrong_shape_is_reported_with_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "airflow_settings.yaml"
    bad.write_text("airflow:\n  pools:\n    - pool_name: p\n      pool_slots: 1\n")
    with pytest.raises(stack.StackError, match=r"airflow\.pools\.0\.pool_slot"):
        stack.load_airflow_settings(bad, {})
    bad.write_text("airflow: [unclosed\n")
    with pytest.raises(stack.StackError, match="not valid YAML"):
        stack.load_airflow_settings(bad, {})


def test_apply_creates_then_updates_through_the_api(values: dict[str, str]) -> None:
    fake = FakeAirflow()
    client = AirflowClient("http://airflow", "admin", "pw", transport=fake.transport())

    first = stack.apply_airflow_settings(client, stack.AIRFLOW_SETTINGS_FILE, values)
    assert set(first.connections.values()) == {"created"}
    assert first.pools == {"conveyor_training": "created", "conveyor_serving": "created"}
    assert fake.pools["conveyor_training"]["slots"] == 1
    conn = fake.connections["model_server_default"]
    assert conn["password"] == values["CONVEYOR_MODEL_SERVER_TOKEN"]
    assert conn["port"] == int(values["CONVEYOR_MODEL_SERVER_PORT"])
    assert fake.variables["conveyor_data_root"]["value"] == values["CONVEYOR_DATA_ROOT"]

    # A second start (new ports, same objects): POST answers 409, PATCH updates in place.
    moved = {**values, "CONVEYOR_MLFLOW_PORT": "15999"}
    second = stack.apply_airflow_settings(client, stack.AIRFLOW_SETTINGS_FILE, moved)
    assert set(second.connections.values()) == set(second.pools.values()) == {"updated"}
    assert fake.connections["mlflow_default"]["port"] == 15999
    assert ("PATCH", "/api/v2/pools/conveyor_training") in fake.calls
