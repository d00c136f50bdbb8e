"""DAG integrity: every file imports cleanly, fast, without heavy ML libraries, and follows house rules."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
APPROVED_TAGS = {
    "conveyor",
    "training",
    "deploy",
    "monitoring",
    "rollback",
    "churn",
    "breast_cancer",
    "digits",
    "diabetes",
}
HEAVY = ("tensorflow", "keras", "sklearn", "great_expectations", "mlflow", "evidently", "pandas")
# the button's label in the UI and its key in the REST API's extra_links (conveyor_airflow.links)
GATE_REPORT_LINK_NAME = "MLflow gate report"
EXPECTED_DAGS = {
    "conveyor_train_churn",
    "conveyor_train_breast_cancer",
    "conveyor_deploy",
    "conveyor_monitor",
    "conveyor_rollback",
}


def test_no_import_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}, dagbag.import_errors


def test_expected_dags_present(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert set(dagbag.dag_ids) >= EXPECTED_DAGS


def test_house_rules(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags and set(dag.tags) <= APPROVED_TAGS, f"{dag_id}: tags {dag.tags}"
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id}: needs a doc_md"
        assert dag.catchup is False, dag_id
        assert dag.start_date is not None and dag.start_date.tzinfo is not None, dag_id
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_pulls_in_no_heavy_library(path: Path) -> None:
    """Parsing a DAG file must not import ML libraries (the DAG processor parses every few seconds)."""
    code = (
        "import importlib.util, json, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "t0 = time.perf_counter(); spec.loader.exec_module(mod); dt = time.perf_counter() - t0\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))\n"
        "print(json.dumps({'heavy': heavy, 'seconds': dt}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"{path.name} imports {result['heavy']} at parse time"


def test_training_dag_structure(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["conveyor_train_churn"]
    ids = {t.task_id for t in dag.tasks}
    assert ids == {
        "validate_data",
        "data_changed",
        "train",
        "evaluate_gate",
        "gate",
        "promote",
        "await_approval",
        "not_promoted",
        "compress",
        "register",
    }
    down = {t.task_id: {d.task_id for d in t.downstream_list} for t in dag.tasks}
    up = {t.task_id: {u.task_id for u in t.upstream_list} for t in dag.tasks}
    rule = {t.task_id: getattr(t.trigger_rule, "value", t.trigger_rule) for t in dag.tasks}
    assert "train" in down["validate_data"]
    assert "evaluate_gate" in down["train"]
    # unchanged data ends the run: the short circuit gates train and skips everything after it
    # whatever their trigger rules (promote's would otherwise run on validate's success)
    assert up["train"] == {"validate_data", "data_changed"} and up["data_changed"] == {"validate_data"}
    assert dag.get_task("data_changed").ignore_downstream_trigger_rules is True
    assert down["gate"] == {"promote", "await_approval", "not_promoted"}
    # A rejection skips the approval's direct downstream only: that must be promote, and promote
    # the only way into compress and register.
    assert down["await_approval"] == {"promote"}
    assert up["promote"] == {"evaluate_gate", "gate", "await_approval"}
    assert rule["promote"] == "none_failed_min_one_success"  # one of gate/await_approval is skipped
    # compress takes XCom from validate_data and train, which always succeed: with any rule that
    # fires on "some upstream succeeded" it would run whatever the gate chose. all_success makes the
    # skipped promote skip it.
    assert up["compress"] == {"validate_data", "train", "promote"}
    assert rule["compress"] == "all_success"
    assert up["register"] == {"validate_data", "train", "evaluate_gate", "compress", "promote"}
    assert rule["register"] == "all_success"
    assert rule["not_promoted"] == "all_success" and up["not_promoted"] == {"gate", "evaluate_gate"}
    # Airflow 3.3 sends the timeout to the task supervisor, which encodes a plain timedelta only
    assert type(dag.get_task("await_approval").response_timeout) is timedelta
    assert set(dag.params.keys()) == {
        "window_end",
        "window_days",
        "gate_mode",
        "compression",
        "force",
        "justification",
        "force_retrain",
        "commit",
    }
    assert "0 2 * * *" in repr(dag.timetable) or "0 2 * * *" in str(dag.timetable.__dict__)

    # evaluate_gate carries the "MLflow gate report" button and is otherwise a plain @task
    gate_task = dag.get_task("evaluate_gate")
    assert [link.name for link in gate_task.operator_extra_links] == [GATE_REPORT_LINK_NAME]
    assert gate_task.operator_name == "@task"
    assert rule["evaluate_gate"] == "all_success"
    assert gate_task.pool == "default_pool" and gate_task.retries == 1
    assert up["evaluate_gate"] == {"validate_data", "train"}
    assert not any(t.operator_extra_links for t in dag.tasks if t.task_id != "evaluate_gate")


def test_gate_report_link_survives_serialization(dagbag) -> None:  # type: ignore[no-untyped-def]
    """Only {name: xcom_key} is serialized; the API server answers it from that XCom."""
    from airflow.serialization.definitions.operatorlink import XComOperatorLink
    from airflow.serialization.serialized_objects import DagSerialization

    encoded = DagSerialization.to_dict(dagbag.dags["conveyor_train_churn"])
    tasks = {t["__var"]["task_id"]: t["__var"] for t in encoded["dag"]["tasks"]}
    assert tasks["evaluate_gate"]["_operator_extra_links"] == {
        GATE_REPORT_LINK_NAME: "_link_MlflowGateReportLink"
    }
    assert tasks["evaluate_gate"]["task_type"] == "GateReportPythonOperator"
    assert [t for t, op in tasks.items() if "_operator_extra_links" in op] == ["evaluate_gate"]

    # what the API server works from: the deserialized DAG, whose link reads that XCom back
    scheduler_dag = DagSerialization.from_dict(json.loads(json.dumps(encoded)))
    links = scheduler_dag.get_task("evaluate_gate").operator_extra_link_dict
    assert list(links) == [GATE_REPORT_LINK_NAME]
    link = links[GATE_REPORT_LINK_NAME]
    assert isinstance(link, XComOperatorLink) and link.xcom_key == "_link_MlflowGateReportLink"


def test_deploy_dag_is_fed_by_the_registry_watcher(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["conveyor_deploy"]
    assets = list(dag.timetable.asset_condition.objects)
    from conveyor import registry_relay

    # the asset the webhook relay posts events to (the push path beside the watcher)
    assert [(a.name, a.uri) for a in assets] == [(registry_relay.ASSET_NAME, registry_relay.ASSET_URI)]
    assert assets[0].name == "mlflow_registry_aliases"
    watcher = assets[0].watchers[0]
    assert type(watcher.trigger).__name__ == "MlflowAliasChangedTrigger"


def test_rollback_dag_is_manual_with_typed_params(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["conveyor_rollback"]
    assert type(dag.timetable).__name__ == "NullTimetable" and dag.max_active_runs == 1
    assert [t.task_id for t in dag.tasks] == ["rollback"]
    assert dag.tasks[0].pool == "conveyor_serving"  # one switch of the model server at a time
    params = dag.params.dump()
    assert params["to_version"] == "previous" and not params["reason"]
    schema = {k: dag.params.get_param(k).schema for k in ("model", "to_version", "reason")}
    assert "churn" in schema["model"]["enum"]
    assert schema["to_version"]["pattern"] == r"^(previous|[0-9]+)$"
    assert schema["reason"]["minLength"] == 1  # the form refuses a rollback without a reason


_BROKEN_SPEC_PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
broken = bag.dags["conveyor_train_broken"]
try:
    broken.get_task("check_spec").python_callable()
    raised = None
except Exception as exc:
    raised = [type(exc).__name__, str(exc)]
monitored = bag.dags["conveyor_monitor"].get_task("monitor").op_kwargs_expand_input.value["model"]
print(json.dumps({"ids": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "description": broken.description, "raised": raised, "monitored": list(monitored)}))
"""


def test_a_broken_spec_file_gets_an_error_dag_and_the_others_still_load(tmp_path: Path) -> None:
    """A spec added broken to a running stack never takes the other training DAGs down."""
    import os

    specs = tmp_path / "specs"
    specs.mkdir()
    shipped = REPO / "include" / "specs"
    churn = (shipped / "churn.yaml").read_text()
    (specs / "churn.yaml").write_text(churn)
    (specs / "broken.yaml").write_text(churn.replace("mode: enforce", "mode: x"))
    env = {
        **os.environ,
        "CONVEYOR_SPECS_DIR": str(specs),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    }
    done = subprocess.run(
        [sys.executable, "-c", _BROKEN_SPEC_PROBE, str(REPO / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["errors"] == {}
    trained = ["conveyor_train_broken", "conveyor_train_churn"]
    assert got["ids"] == ["conveyor_deploy", "conveyor_monitor", "conveyor_rollback", *trained]
    assert got["monitored"] == ["churn"]  # the broken spec is not monitored; the valid one is
    assert got["description"].startswith("INVALID SPEC broken.yaml")
    kind, message = got["raised"]
    assert kind == "AirflowFailException"
    assert "model spec broken.yaml is invalid" in message and "gate.mode" in message
