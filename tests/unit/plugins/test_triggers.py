"""MlflowAliasChangedTrigger: serialisation, normalisation and what Airflow does with its kwargs."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import BaseEventTrigger

from conveyor_airflow.triggers.mlflow_alias import MlflowAliasChangedTrigger

pytestmark = pytest.mark.unit

CLASSPATH = "conveyor_airflow.triggers.mlflow_alias.MlflowAliasChangedTrigger"


def test_serialize_round_trips_to_the_same_kwargs() -> None:
    trigger = MlflowAliasChangedTrigger(
        tracking_uri="http://mlflow:5000/",
        aliases=["challenger", "canary"],
        registered_models=["churn", "breast_cancer"],
        poll_interval=2,
        mlflow_conn_id="mlflow_default",
        settled_alias="prod",
        settled_tag="x.status",
        max_backoff=60,
        request_timeout=5,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs == {
        "tracking_uri": "http://mlflow:5000",
        "aliases": ["canary", "challenger"],
        "registered_models": ["breast_cancer", "churn"],
        "poll_interval": 2.0,
        "mlflow_conn_id": "mlflow_default",
        "settled_alias": "prod",
        "settled_tag": "x.status",
        "max_backoff": 60.0,
        "request_timeout": 5.0,
    }
    rebuilt = MlflowAliasChangedTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    json.dumps(kwargs)  # primitives only: what the metadata DB stores


def test_defaults_watch_challenger_on_every_model() -> None:
    _, kwargs = MlflowAliasChangedTrigger(tracking_uri="http://mlflow:5000").serialize()
    assert kwargs["aliases"] == ["challenger"]
    assert kwargs["registered_models"] is None
    assert kwargs["settled_alias"] == "champion"
    assert kwargs["settled_tag"] == "conveyor.deploy_status"
    assert MlflowAliasChangedTrigger(**kwargs).serialize()[1] == kwargs


def test_equal_configurations_hash_equal_so_the_triggerer_runs_one_trigger() -> None:
    # The DAG processor dedupes asset-watcher triggers by BaseEventTrigger.hash(classpath, kwargs).
    a = MlflowAliasChangedTrigger(
        tracking_uri="http://m:5000", aliases=["b", "a", "a"], registered_models=["y", "x"]
    )
    b = MlflowAliasChangedTrigger(
        tracking_uri="http://m:5000/", aliases=["a", "b"], registered_models=["x", "y"]
    )
    c = MlflowAliasChangedTrigger(tracking_uri="http://m:5000", aliases=["a"], registered_models=["x", "y"])
    assert BaseEventTrigger.hash(*a.serialize()) == BaseEventTrigger.hash(*b.serialize())
    assert BaseEventTrigger.hash(*a.serialize()) != BaseEventTrigger.hash(*c.serialize())


def test_usable_as_an_asset_watcher_and_encodable_by_airflow() -> None:
    from airflow.serialization.encoders import encode_trigger

    trigger = MlflowAliasChangedTrigger(mlflow_conn_id="mlflow_default")
    asset = Asset("conveyor-registry-aliases", watchers=[AssetWatcher(name="challenger", trigger=trigger)])
    encoded = encode_trigger(asset.watchers[0].trigger)
    assert encoded["classpath"] == CLASSPATH
    assert isinstance(trigger, BaseEventTrigger)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "tracking_uri or mlflow_conn_id"),
        ({"tracking_uri": "http://m", "aliases": []}, "at least one alias"),
        ({"tracking_uri": "http://m", "poll_interval": 0}, "must be positive"),
        ({"tracking_uri": "http://m", "max_backoff": -1}, "must be positive"),
    ],
)
def test_invalid_configuration_fails_at_parse_time(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MlflowAliasChangedTrigger(**kwargs)  # type: ignore[arg-type]


def test_construction_does_no_io() -> None:
    # A URL nobody listens on: building (as the DAG processor does) must not touch it.
    trigger = MlflowAliasChangedTrigger(tracking_uri="http://127.0.0.1:1")
    assert trigger.tracking_uri == "http://127.0.0.1:1"
