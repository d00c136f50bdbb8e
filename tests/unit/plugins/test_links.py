"""The "MLflow gate report" extra link: which URLs become a button, and the link's real round trip
(worker pushes ``_link_MlflowGateReportLink``; the API server's deserialized link reads it back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, cast

import pytest

from conveyor_airflow.links import (
    GATE_REPORT_LINK_NAME,
    GateReportPythonOperator,
    MlflowGateReportLink,
    gate_report_task,
    report_url_from,
)

pytestmark = pytest.mark.unit

RUN_URL = "http://mlflow.local:5000/#/experiments/1/runs/abc"
HTTPS_URL = "https://mlflow.example.com/#/experiments/3/runs/f00"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"report_url": RUN_URL}, RUN_URL),
        ({"report_url": HTTPS_URL}, HTTPS_URL),
        ({"report_url": f"  {RUN_URL}\n"}, RUN_URL),  # stripped
        ({"report_url": "runs:/abc"}, ""),  # what pipeline.mlflow_run_url answers for a local store
        ({"report_url": "file:///tmp/mlruns"}, ""),
        ({"report_url": "sqlite:///mlflow.db"}, ""),
        ({"report_url": "javascript:alert(1)"}, ""),
        ({"report_url": "http://"}, ""),  # no host
        ({"report_url": "http://[::1"}, ""),  # urlsplit raises ValueError
        ({"report_url": ""}, ""),
        ({"report_url": None}, ""),
        ({"report_url": 42}, ""),
        ({"register": True}, ""),  # no report_url
        ({}, ""),
        (None, ""),
        (RUN_URL, ""),  # not the decision dict
        ([RUN_URL], ""),
    ],
)
def test_report_url_from(value: Any, expected: str) -> None:
    assert report_url_from(value) == expected


def test_operator_class_carries_the_link() -> None:
    from airflow.providers.standard.decorators.python import python_task

    links = GateReportPythonOperator.operator_extra_links
    assert [type(link) for link in links] == [MlflowGateReportLink]
    assert links[0].name == GATE_REPORT_LINK_NAME
    assert links[0].xcom_key == "_link_MlflowGateReportLink"
    # a subclass of exactly the operator class @task builds in this Airflow version
    assert GateReportPythonOperator.__mro__[1] is cast(Any, python_task(lambda: None)).operator_class


def test_decorator_builds_the_linked_operator_with_task_arguments() -> None:
    import pendulum
    from airflow.sdk import DAG

    with DAG("links_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:

        @gate_report_task
        def bare() -> dict:
            return {}

        @gate_report_task(pool="conveyor_training", retries=3, trigger_rule="all_done")
        def configured() -> dict:
            return {}

        bare()
        configured()

    plain, custom = dag.get_task("bare"), dag.get_task("configured")
    assert type(plain) is GateReportPythonOperator and type(custom) is GateReportPythonOperator
    assert plain.operator_name == "@task"
    assert (custom.pool, custom.retries, custom.trigger_rule) == ("conveyor_training", 3, "all_done")


def test_get_link_reads_the_tasks_return_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_link`` asks the XCom backend for this task instance's ``return_value``."""
    from airflow.sdk import BaseXCom
    from airflow.sdk.types import TaskInstanceKey

    asked: list[dict[str, Any]] = []

    def get_one(cls: type, **kwargs: Any) -> Any:
        asked.append(kwargs)
        return {"report_url": RUN_URL, "register": True}

    monkeypatch.setattr(BaseXCom, "get_one", classmethod(get_one))
    key = TaskInstanceKey(dag_id="d", task_id="evaluate_gate", run_id="r1", try_number=2, map_index=-1)
    assert MlflowGateReportLink().get_link(cast(Any, None), ti_key=key) == RUN_URL
    assert asked == [
        {"key": "return_value", "task_id": "evaluate_gate", "dag_id": "d", "run_id": "r1", "map_index": -1}
    ]


# A tiny DAG run with Airflow's own dag.test() (in-process supervisor, real task runner, real SQLite
# metadata DB) in a subprocess with its own AIRFLOW_HOME, so this session's Airflow config is untouched.
PROBE_DAG = """
import pendulum
from airflow.sdk import dag
from conveyor_airflow.links import gate_report_task


@dag(dag_id="gate_link_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def gate_link_probe():
    @gate_report_task(retries=0)
    def served():
        return {"report_url": "http://x/#/experiments/1/runs/abc", "register": False}

    @gate_report_task(retries=0)
    def local_store():
        return {"report_url": "runs:/abc", "register": False}

    @gate_report_task(retries=0)
    def fails():
        raise RuntimeError("the gate broke before reporting")

    served()
    local_store()
    fails()


gate_link_probe()
"""

PROBE_RUNNER = """
import importlib.util, json, sys
from airflow.utils import db
db.initdb()
spec = importlib.util.spec_from_file_location("probe_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
dr = module.gate_link_probe().test()

from sqlalchemy import select
from airflow.models.dagbag import DBDagBag
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

with create_session() as session:
    xcoms = {
        f"{task_id}/{key}": value
        for task_id, key, value in session.execute(
            select(XComModel.task_id, XComModel.key, XComModel.value).where(
                XComModel.dag_id == "gate_link_probe", XComModel.run_id == dr.run_id
            )
        )
    }
    # what GET .../taskInstances/{task_id}/links does on the API server
    api_dag = DBDagBag().get_latest_version_of_dag("gate_link_probe", session=session)
    api = {}
    for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == dr.run_id)):
        task = api_dag.get_task(ti.task_id)
        api[ti.task_id] = {
            "state": str(ti.state),
            "links": {name: task.get_extra_links(ti, name) or None for name in task.extra_links},
        }
print("RESULT " + json.dumps({"xcoms": xcoms, "api": api}, default=str))
"""


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow-link-probe")
    dags = home / "dags"
    dags.mkdir()
    dag_file = dags / "gate_link_probe.py"
    dag_file.write_text(textwrap.dedent(PROBE_DAG))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="True",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE_RUNNER, str(dag_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(home),
        timeout=300,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, (out.stdout + out.stderr)[-4000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def test_worker_pushes_the_link_xcom(probe_run: dict[str, Any]) -> None:
    xcoms = probe_run["xcoms"]
    assert xcoms["served/_link_MlflowGateReportLink"] == "http://x/#/experiments/1/runs/abc"
    # no http(s) URL, or no return value at all (the task failed): an empty link, i.e. no button
    assert xcoms["local_store/_link_MlflowGateReportLink"] == ""
    assert xcoms["fails/_link_MlflowGateReportLink"] == ""
    assert "fails/return_value" not in xcoms


def test_api_server_answers_the_link_from_the_serialized_dag(probe_run: dict[str, Any]) -> None:
    api = probe_run["api"]
    assert api["served"] == {
        "state": "success",
        "links": {GATE_REPORT_LINK_NAME: "http://x/#/experiments/1/runs/abc"},
    }
    assert api["local_store"] == {"state": "success", "links": {GATE_REPORT_LINK_NAME: None}}
    assert api["fails"] == {"state": "failed", "links": {GATE_REPORT_LINK_NAME: None}}
