"""Orchestration overhead: the training DAG under the real scheduler vs its stages in one Python process.

Both sides do the same work on the same landed data (7 days of churn demo data, the spec's window):
``validate_data → train → evaluate_gate → (gate) → compress → register``, each logging to an
``mlflow server`` of its own configured like the stack's (SQLite store, proxied artifacts, one worker).

* Conveyor: ``conveyor_train_churn`` in a throwaway embedded stack (``stack.up`` on free ports:
  Airflow standalone with LocalExecutor, MLflow, the model server), triggered through the REST API;
  the time is the DAG run's own ``queued_at → end_date``.
* The peer: one ``python`` process that calls the same ``conveyor.pipeline`` stage functions in
  order, timed from spawn to exit (interpreter start and imports included, once).

The peer runs first (before the stack starts, so no idle stack competes with it), after one
throwaway process has imported the heavy libraries so both sides find them in the page cache.

A fresh stack also runs the nightly slot it has just missed (``catchup=False`` still runs the latest
one). The data is landed for days well before today, so that run finds an empty window and fails at
once in ``validate_data``; the benchmark waits for it to end, pauses the other DAGs (and waits for
their tasks) so nothing runs beside the measured run, then triggers.

The per-task breakdown comes from the task instances (``scheduled_when``, ``queued_when``,
``start_date``, ``end_date``, ``duration``) and the phases of each task log: scheduler and queue
waits, then the duration split into start-up (task runner, DAG file parse), execute (the stage, with
the imports it pays again in its own process) and finish (XCom push), next to the same stage's time
in the plain process. It goes into the result's details, to stdout and to
``bench/results/orchestration_breakdown.md``.

Not run in quick mode (starting Airflow takes a minute or more on 2 cores): it returns no result there.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import BenchResult
from bench.support import (
    LOCALHOST,
    child_main,
    clean_env,
    conveyor_env,
    free_port,
    mlflow_server_cmd,
    run_child,
    running,
)

MODEL = "churn"
DAG_ID = f"conveyor_train_{MODEL}"
OTHER_DAGS = ("conveyor_train_breast_cancer", "conveyor_deploy", "conveyor_monitor")
WINDOW_DAYS = 7
TARGET = 1.25
PLAIN_RUN_ID = "bench__plain"
RUN_ID = "bench__airflow"
BREAKDOWN_FILE = Path(__file__).resolve().parent / "results" / "orchestration_breakdown.md"
#: Tasks in DAG order; the ones without a stage in the plain process cost nothing there.
TASKS = ("validate_data", "train", "evaluate_gate", "gate", "promote", "compress", "register")
_ACTIVE = ("queued", "running")

_WARM_IMPORTS = (
    "import great_expectations, mlflow, sklearn, tensorflow, ai_edge_litert, evidently, airflow.sdk; "
    "import conveyor.pipeline, conveyor.training, conveyor.compression"
)


def _window_end() -> dt.date:
    """Two weeks before today: tonight's (and the just-missed) nightly slot finds no data in its window."""
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=14)


def _params(window_end: str) -> dict[str, Any]:
    return {
        "window_end": window_end,
        "window_days": WINDOW_DAYS,
        "gate_mode": "spec",
        "compression": [],
        "force": False,
    }


# ------------------------------------------------------------------------------------------------
# The peer: the DAG's task bodies, called in one plain Python process
# ------------------------------------------------------------------------------------------------


def _call_stage(name: str, state: dict[str, Any], tracking_uri: str, window_end: str) -> Any:
    """What the DAG's task ``name`` calls, with the outputs of the tasks before it (their XComs).

    Returns what the task returns: a stage's result as its XCom JSON.
    """
    from conveyor import pipeline
    from conveyor.stages import RunContext

    params = _params(window_end)
    run = RunContext(
        model=MODEL,
        dag_id=DAG_ID,
        dag_run_id=PLAIN_RUN_ID,
        window_end=window_end,
        window_days=params["window_days"],
        gate_mode=params["gate_mode"],
        compression=params["compression"] or None,
        force=params["force"],
    )
    if name == "validate_data":
        return pipeline.validate_data(run, tracking_uri=tracking_uri).xcom()
    validated = state["validate_data"]
    if name == "train":
        return pipeline.train(run, validated=validated, tracking_uri=tracking_uri).xcom()
    if name == "evaluate_gate":
        return pipeline.evaluate_gate(
            run, validated=validated, trained=state["train"], tracking_uri=tracking_uri
        ).xcom()
    if name == "gate":
        decision = state["evaluate_gate"]
        return "promote" if decision["register"] else "not_promoted"
    if name == "not_promoted":
        pipeline.report_not_promoted(run, state["evaluate_gate"])
        return None
    if name == "compress":
        return pipeline.compress(
            run, validated=validated, trained=state["train"], tracking_uri=tracking_uri
        ).xcom()
    if name == "register":
        return pipeline.register(
            run,
            validated=validated,
            trained=state["train"],
            decision=state["evaluate_gate"],
            compressed=state["compress"],
            tracking_uri=tracking_uri,
        ).xcom()
    raise ValueError(f"unknown stage {name!r}")


def _next_stage(state: dict[str, Any]) -> str | None:
    """The DAG's order, with the gate's branch."""
    for name in ("validate_data", "train", "evaluate_gate", "gate"):
        if name not in state:
            return name
    for name in ("compress", "register") if state["gate"] == "promote" else ("not_promoted",):
        if name not in state:
            return name
    return None


def _plain(args: list[str]) -> dict[str, Any]:
    """Child: every stage in DAG order in this one process; seconds per stage."""
    tracking_uri, window_end = args
    t0 = time.perf_counter()
    state: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    while (name := _next_stage(state)) is not None:
        started = time.perf_counter()
        state[name] = _call_stage(name, state, tracking_uri, window_end)
        seconds[name] = time.perf_counter() - started
    return {
        "seconds": seconds,
        "in_process_s": time.perf_counter() - t0,
        "branch": state["gate"],
        "rows": state["validate_data"]["rows"],
    }


def _run_plain(home: Path, window_end: str) -> dict[str, Any]:
    """The plain process against an MLflow server of its own, timed from spawn to exit."""
    mlflow_root = home.parent / "plain-mlflow"
    mlflow_root.mkdir()
    port = free_port()
    url = f"http://{LOCALHOST}:{port}"
    with running(
        mlflow_server_cmd(mlflow_root, port),
        clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        cwd=mlflow_root,
        log_path=mlflow_root / "mlflow.log",
        ready_url=f"{url}/health",
    ):
        started = time.perf_counter()
        plain = run_child(
            "bench.orchestration", [url, window_end], conveyor_env(home, url), cwd=home, timeout=1200
        )
        plain["process_s"] = time.perf_counter() - started
    return plain


# ------------------------------------------------------------------------------------------------
# Conveyor: the DAG under the real scheduler
# ------------------------------------------------------------------------------------------------


def _settle(af: Any, timeout: float = 300.0) -> dict[str, Any]:
    """Pause the other DAGs and wait until nothing runs: the missed nightly slot created and ended."""
    started = time.monotonic()
    deadline = started + timeout
    paused: set[str] = set()
    seen_runs: set[str] = set()
    while True:
        for dag_id in OTHER_DAGS:
            if dag_id not in paused and af.get_dag(dag_id) is not None:
                af.set_paused(dag_id, True)
                paused.add(dag_id)
        dag = af.get_dag(DAG_ID) or {}
        next_run = _ts(dag.get("next_dagrun_run_after"))
        slot_created = next_run is None or next_run > dt.datetime.now(dt.UTC)
        runs = af.dag_runs(DAG_ID, limit=10)
        seen_runs.update(r["dag_run_id"] for r in runs)
        busy = [f"{DAG_ID}/{r['dag_run_id']}" for r in runs if r.get("state") in _ACTIVE]
        for dag_id in OTHER_DAGS:
            for run in af.dag_runs(dag_id, limit=10, state=list(_ACTIVE)):
                tis = af.task_instances(dag_id, run["dag_run_id"])
                busy += [f"{dag_id}.{ti['task_id']}" for ti in tis if ti.get("state") in _ACTIVE]
        # A DAG file the processor has not parsed within a minute is not there to compete.
        all_paused = paused == set(OTHER_DAGS) or time.monotonic() - started > 60
        if slot_created and not busy and all_paused:
            return {"paused": sorted(paused), "runs_before": sorted(seen_runs)}
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the stack did not settle in {timeout:.0f}s: busy={busy}, paused={sorted(paused)}, "
                f"nightly slot created={slot_created}"
            )
        time.sleep(2.0)


def _log_phases(af: Any, ti: dict[str, Any]) -> dict[str, str]:
    """When the task runner finished its pre-execute phase (DAG file parsed), and began post-execute.

    Airflow's task log brackets the phases: ``::group::Pre Execute`` ... ``::endgroup::``, then the
    task callable's own output, then ``::group::Post Execute`` (XCom push) ... ``::endgroup::``.
    """
    from conveyor.airflow_api import parse_api_datetime

    try:
        text = af.task_log(DAG_ID, RUN_ID, ti["task_id"], ti.get("try_number") or 1)
    except Exception:  # the log only refines the breakdown; never fail the benchmark over it
        return {}
    events: list[tuple[dt.datetime, str]] = []
    for line in text.splitlines():
        stamp, _, rest = line.partition("] ")
        when = parse_api_datetime(stamp[1:]) if stamp.startswith("[") and rest else None
        if when is not None:
            events.append((when, rest.split(" ", 1)[-1]))
    out: dict[str, str] = {}
    group = None
    for when, event in events:
        if event.startswith("::group::"):
            group = event.removeprefix("::group::")
            if group == "Post Execute":
                out["post_execute_started"] = when.isoformat()
        elif event == "::endgroup::" and group == "Pre Execute":
            out["pre_execute_ended"] = when.isoformat()
            group = None
    return out


def _run_airflow(home: Path, window_end: str) -> dict[str, Any]:
    from conveyor import stack

    settings = stack.isolated_settings(home)
    started = time.perf_counter()
    try:
        info = stack.up(settings, timeout=600)
        up_s = time.perf_counter() - started
        with info.airflow_client() as af:
            af.wait_for_dag(DAG_ID, timeout=300, unpause=True)
            settle_started = time.perf_counter()
            settled = _settle(af)
            settle_s = time.perf_counter() - settle_started
            af.trigger(DAG_ID, conf=_params(window_end), run_id=RUN_ID, note="benchmark")
            run = af.wait_for_run(DAG_ID, RUN_ID, timeout=1500, poll=1.0)
            tis = af.task_instances(DAG_ID, RUN_ID)
            logs = {ti["task_id"]: _log_phases(af, ti) for ti in tis if ti.get("start_date")}
        return {"run": run, "tis": tis, "logs": logs, "up_s": up_s, "settle_s": settle_s, **settled}
    finally:
        stack.down(settings, purge=True)


# ------------------------------------------------------------------------------------------------
# Breakdown
# ------------------------------------------------------------------------------------------------


def _ts(value: str | None) -> dt.datetime | None:
    from conveyor.airflow_api import parse_api_datetime

    return parse_api_datetime(value)


def _delta(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds()


def breakdown(airflow: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """Per task: scheduler and queue waits, then its duration split by phase against the plain stage.

    ``duration = start-up + execute + finish``: *start-up* from ``start_date`` to the end of the
    task runner's pre-execute phase (DAG file parsed), *execute* the task callable (the stage, with
    every import it needs in this fresh task process), *finish* from post-execute (XCom push) to
    ``end_date``. ``execute - plain`` is what the stage pays again for running in a process of
    its own (heavy imports: TensorFlow, MLflow, Great Expectations, a model loaded once more).
    """
    run = airflow["run"]
    by_id = {ti["task_id"]: ti for ti in airflow["tis"]}
    rows = []
    previous_end = _ts(run.get("start_date"))
    for task_id in TASKS:
        ti = by_id.get(task_id)
        if ti is None or ti.get("state") != "success":
            continue
        scheduled, queued = _ts(ti.get("scheduled_when")), _ts(ti.get("queued_when"))
        start, end = _ts(ti.get("start_date")), _ts(ti.get("end_date"))
        log = airflow["logs"].get(task_id, {})
        pre_end, post_start = _ts(log.get("pre_execute_ended")), _ts(log.get("post_execute_started"))
        execute = _delta(pre_end, post_start)
        in_process = plain["seconds"].get(task_id)
        rows.append(
            {
                "task": task_id,
                "after_upstream_s": _delta(previous_end, scheduled or queued or start),
                "scheduled_to_queued_s": _delta(scheduled, queued),
                "queued_to_start_s": _delta(queued, start),
                "duration_s": ti.get("duration"),
                "startup_s": _delta(start, pre_end),
                "execute_s": execute,
                "finish_s": _delta(post_start, end),
                "plain_stage_s": in_process,
                "execute_minus_plain_s": _minus(execute, in_process),
            }
        )
        previous_end = end or previous_end
    run_start, run_end = _ts(run.get("start_date")), _ts(run.get("end_date"))
    ends = [e for ti in airflow["tis"] if (e := _ts(ti.get("end_date"))) is not None]

    def total(key: str) -> float:
        return sum(r[key] or 0.0 for r in rows)

    return {
        "tasks": rows,
        "run_queued_to_running_s": _delta(_ts(run.get("queued_at")), run_start),
        "last_task_end_to_run_end_s": _delta(max(ends), run_end) if ends else None,
        "sum_waits_s": total("after_upstream_s")
        + total("scheduled_to_queued_s")
        + total("queued_to_start_s"),
        "sum_startup_s": total("startup_s"),
        "sum_execute_s": total("execute_s"),
        "sum_finish_s": total("finish_s"),
        "sum_task_durations_s": total("duration_s"),
        "sum_plain_stages_s": sum(plain["seconds"].values()),
    }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def render_breakdown(result: BenchResult) -> str:
    """The breakdown as Markdown (also written to ``bench/results/orchestration_breakdown.md``)."""
    d = result.details
    b = d["breakdown"]
    lines = [
        "# Orchestration overhead: per-task breakdown",
        "",
        f"`{DAG_ID}` under the real scheduler (DAG run `queued_at → end_date`) **{result.conveyor:.1f} s** "
        f"vs the same stages in one plain Python process (spawn → exit) **{result.peer:.1f} s**: "
        f"ratio **{result.ratio:.2f}** (target ≤ {TARGET}, {'pass' if result.passed else 'FAIL'}). "
        f"{d['rows']} rows, window {d['window']}; measured {d['measured_at']}.",
        "",
        "Seconds, from the task instances and their logs. *after upstream*: upstream task's end (the "
        "run's start for the first task) → `scheduled_when`; *sched → queued*: → `queued_when`; "
        "*queued → start*: → `start_date` (executor pick-up, task supervisor); *duration* = *start-up* "
        "(task runner up to the end of its pre-execute phase, DAG file parsed) + *execute* (the task "
        "callable: the stage, with every import it needs in this task process) + *finish* (XCom push, "
        "exit); *plain*: the same stage inside the one plain process, where each heavy import is paid "
        "once, by the first stage that needs it; *execute - plain*: what the stage pays again for "
        "running in a process of its own.",
        "",
        "| task | after upstream | sched → queued | queued → start | duration | start-up | execute "
        "| finish | plain | execute - plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = (
        "after_upstream_s",
        "scheduled_to_queued_s",
        "queued_to_start_s",
        "duration_s",
        "startup_s",
        "execute_s",
        "finish_s",
        "plain_stage_s",
        "execute_minus_plain_s",
    )
    for r in b["tasks"]:
        lines.append(f"| {r['task']} | " + " | ".join(_fmt(r[k]) for k in keys) + " |")
    lines += [
        "",
        f"- scheduler and queue waits {_fmt(b['sum_waits_s'])} s in all (run queued → running "
        f"{_fmt(b['run_queued_to_running_s'])} s, last task end → run end "
        f"{_fmt(b['last_task_end_to_run_end_s'])} s)",
        f"- task durations {_fmt(b['sum_task_durations_s'])} s = start-up {_fmt(b['sum_startup_s'])} + "
        f"execute {_fmt(b['sum_execute_s'])} + finish {_fmt(b['sum_finish_s'])}; the plain process: "
        f"stages {_fmt(b['sum_plain_stages_s'])} s + interpreter start and exit "
        f"{_fmt(result.peer - b['sum_plain_stages_s'])} s",
        f"- gate branch: Airflow `{d['airflow_branch']}`, plain `{d['plain_branch']}`",
        f"- not in either time: stack up {_fmt(d['stack_up_s'])} s; settling {_fmt(d['settle_s'])} s "
        f"(runs before the measured one: {', '.join(d['runs_before_measured']) or 'none'}; other DAGs "
        "paused)",
        f"- benchmark wall time {_fmt(d['wall_s'])} s (landing data, warming imports, the plain process, "
        "stack up and down)",
    ]
    return "\n".join(lines) + "\n"


def run(quick: bool) -> list[BenchResult]:
    if quick:
        return []  # starting Airflow does not fit a smoke run; `python -m bench` runs it
    from conveyor.config import load_spec
    from conveyor.data.generate import land_demo_data
    from conveyor.demo import use_settings
    from conveyor.stack import isolated_settings

    started = time.perf_counter()
    window_end = _window_end()
    measured_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="bench-orch-", dir="/tmp") as tmp:
        home = Path(tmp) / "stack"
        with use_settings(isolated_settings(home)):
            land_demo_data(load_spec(MODEL), days=WINDOW_DAYS, end_day=window_end, seed=0)
        warm = [sys.executable, "-c", _WARM_IMPORTS]
        subprocess.run(warm, env=clean_env(), capture_output=True, check=False, timeout=600)
        plain = _run_plain(home, window_end.isoformat())
        airflow = _run_airflow(home, window_end.isoformat())

    run_info = airflow["run"]
    states = {ti["task_id"]: ti.get("state") for ti in airflow["tis"]}
    if run_info.get("state") != "success":
        raise RuntimeError(f"{DAG_ID} run {RUN_ID} ended {run_info.get('state')}: {states}")
    conveyor_s = _delta(_ts(run_info.get("queued_at")), _ts(run_info.get("end_date")))
    assert conveyor_s is not None
    airflow_branch = "promote" if states.get("promote") == "success" else "not_promoted"
    same_branch = airflow_branch == plain["branch"]
    details = {
        "measured_at": measured_at,
        "window": f"{WINDOW_DAYS} days to {window_end}",
        "rows": plain["rows"],
        "task_states": states,
        "airflow_branch": airflow_branch,
        "plain_branch": plain["branch"],
        "plain_stage_s": plain["seconds"],
        "plain_in_process_s": plain["in_process_s"],
        "breakdown": breakdown(airflow, plain),
        "stack_up_s": airflow["up_s"],
        "settle_s": airflow["settle_s"],
        "runs_before_measured": airflow["runs_before"],
        "peer": "the same conveyor.pipeline stage calls in one python process, spawn to exit",
        "wall_s": round(time.perf_counter() - started, 1),
    }
    result = BenchResult(
        name="orchestration",
        conveyor=conveyor_s,
        peer=plain["process_s"],
        unit="s",
        target=f"ratio <= {TARGET}",
        passed=conveyor_s / plain["process_s"] <= TARGET and same_branch,
        details=details,
    )
    text = render_breakdown(result)
    BREAKDOWN_FILE.parent.mkdir(parents=True, exist_ok=True)
    BREAKDOWN_FILE.write_text(text)
    print(text)
    return [result]


if __name__ == "__main__":
    child_main(_plain)
