"""``conveyor demo``: the whole loop on one machine, from landed data to a served prediction.

1. land demo data ending today for every shipped spec (:data:`DEMO_DAYS`: 7 days of churn, 30 of
   breast-cancer, 14 of digits and of diabetes: the binary, multiclass and regression task types),
2. start the local stack (or find it running),
3. wait for the training DAGs to be parsed, trigger them through the REST API and follow them
   task by task,
4. wait for the ``conveyor_deploy`` run that the new ``challenger`` alias sets off and follow it,
5. send real rows of the landed data to the model server and print its predictions (the columns of
   each task's output contract: binary probability and prediction, multiclass the predicted class and
   its probability, regression the predicted value),
6. print where everything is (Airflow, MLflow, model server) with the local credentials.

The stack keeps running afterwards (``make down`` stops it). Any failed step raises
:class:`DemoError` naming the failed task, with the tail of its log fetched through the API.

The run-following helpers here (:func:`follow_run`, :func:`explain_failure`) are shared with the
CLI's ``trigger --follow`` and ``follow`` commands.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from conveyor.airflow_api import AirflowClient, parse_api_datetime
from conveyor.errors import ConveyorError
from conveyor.settings import Settings, get_settings

#: Days of demo data landed per shipped spec (each spec's window; scikit-learn's datasets are spread
#: over them). The demo trains, deploys and queries these models.
DEMO_DAYS = {"churn": 7, "breast_cancer": 30, "digits": 14, "diabetes": 14}
DEPLOY_DAG_ID = "conveyor_deploy"
TRAINING_TIMEOUT_S = 2400.0
DEPLOY_WAIT_S = 900.0
DEPLOY_TIMEOUT_S = 1200.0

_STATE_STYLES = {
    "success": "green",
    "failed": "bold red",
    "upstream_failed": "red",
    "running": "cyan",
    "queued": "blue",
    "scheduled": "blue",
    "up_for_retry": "yellow",
    "up_for_reschedule": "yellow",
    "deferred": "magenta",
    "skipped": "dim",
    "removed": "dim",
}


class DemoError(ConveyorError):
    """A step of the demo failed; the message names it and says what to look at."""


def training_dag_id(model: str) -> str:
    return f"conveyor_train_{model}"


@contextlib.contextmanager
def use_settings(settings: Settings) -> Iterator[None]:
    """Make ``get_settings()`` return ``settings``'s home/data root/specs while inside the block.

    Domain functions such as ``land_demo_data`` read the process settings; this points them at the
    stack being demonstrated (a custom home in tests) and restores everything afterwards.
    """
    overrides = {
        "CONVEYOR_HOME": str(settings.home),
        "CONVEYOR_DATA_ROOT": settings.data_root,
        "CONVEYOR_SPECS_DIR": str(settings.specs_dir),
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


# ------------------------------------------------------------------------------------------------
# Following a DAG run
# ------------------------------------------------------------------------------------------------


def _duration(ti: dict[str, Any]) -> str:
    seconds = ti.get("duration")
    if seconds is None and ti.get("state") == "running":
        start = parse_api_datetime(ti.get("start_date"))
        if start is not None:
            seconds = (dt.datetime.now(dt.UTC) - start).total_seconds()
    return "" if seconds is None else f"{float(seconds):.1f}s"


def _sorted_tasks(tis: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    far = "9999"
    return sorted(
        tis, key=lambda t: (t.get("start_date") or far, t.get("task_id", ""), t.get("map_index", -1))
    )


def run_table(dag_id: str, run: dict[str, Any], tis: Sequence[dict[str, Any]]) -> Table:
    """A rich table of one run: a row per task with its state, try, duration."""
    state = str(run.get("state"))
    table = Table(
        title=f"{dag_id}  [dim]{run.get('dag_run_id')}[/]  [{_STATE_STYLES.get(state, 'white')}]{state}[/]",
        title_justify="left",
        expand=False,
    )
    table.add_column("task")
    table.add_column("state")
    table.add_column("try", justify="right")
    table.add_column("duration", justify="right")
    for ti in _sorted_tasks(tis):
        task_state = str(ti.get("state") or "none")
        name = str(ti.get("task_id"))
        if ti.get("map_index", -1) not in (-1, None):
            name += f"[{ti['map_index']}]"
        table.add_row(
            name,
            Text(task_state, style=_STATE_STYLES.get(task_state, "white")),
            str(ti.get("try_number") or ""),
            _duration(ti),
        )
    return table


def follow_run(
    client: AirflowClient,
    dag_id: str,
    run_id: str,
    *,
    console: Console,
    timeout: float = TRAINING_TIMEOUT_S,
    poll: float = 2.0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Show a run task by task until it ends; return the final run and its task instances.

    On a terminal the table updates in place; otherwise each task state change prints one line.
    """
    latest: dict[str, Any] = {"tis": [], "seen": {}}

    def log_changes(run: dict[str, Any], tis: list[dict[str, Any]]) -> None:
        for ti in _sorted_tasks(tis):
            key = (ti.get("task_id"), ti.get("map_index", -1))
            state = ti.get("state")
            if state and latest["seen"].get(key) != state:
                latest["seen"][key] = state
                console.print(f"  {dag_id}.{ti.get('task_id')}: {state} (try {ti.get('try_number')})")

    if console.is_terminal:
        with Live(
            run_table(dag_id, {"state": "queued", "dag_run_id": run_id}, []),
            console=console,
            refresh_per_second=4,
        ) as live:

            def update(run: dict[str, Any], tis: list[dict[str, Any]]) -> None:
                latest["tis"] = tis
                live.update(run_table(dag_id, run, tis))

            run = client.wait_for_run(dag_id, run_id, timeout, on_update=update, poll=poll)
    else:

        def update_plain(run: dict[str, Any], tis: list[dict[str, Any]]) -> None:
            latest["tis"] = tis
            log_changes(run, tis)

        run = client.wait_for_run(dag_id, run_id, timeout, on_update=update_plain, poll=poll)
        console.print(f"{dag_id} {run_id}: {run.get('state')}")
    return run, list(latest["tis"])


def explain_failure(
    client: AirflowClient, dag_id: str, run_id: str, tis: Sequence[dict[str, Any]], log_lines: int = 30
) -> str:
    """Which tasks failed and the tail of each one's log (fetched through the API)."""
    failed = [t for t in tis if t.get("state") == "failed"]
    upstream = [t["task_id"] for t in tis if t.get("state") == "upstream_failed"]
    if not failed:
        return f"run {run_id} of {dag_id} failed, but no task is marked failed (see the Airflow UI)"
    parts = []
    for ti in failed:
        try:
            log = client.task_log(dag_id, run_id, ti["task_id"], int(ti.get("try_number") or 1))
            tail = "\n".join(log.splitlines()[-log_lines:])
        except ConveyorError as exc:
            tail = f"(log unavailable: {exc})"
        parts.append(f"task {ti['task_id']} failed (try {ti.get('try_number')}); last log lines:\n{tail}")
    if upstream:
        parts.append(f"not run because of it: {', '.join(upstream)}")
    return "\n\n".join(parts)


def task_state(tis: Sequence[dict[str, Any]], task_id: str) -> str | None:
    return next((t.get("state") for t in tis if t.get("task_id") == task_id), None)


def run_url(airflow_url: str, dag_id: str, run_id: str) -> str:
    return f"{airflow_url}/dags/{dag_id}/runs/{run_id}"


# ------------------------------------------------------------------------------------------------
# Predictions from landed data
# ------------------------------------------------------------------------------------------------


def sample_rows(model: str, rows: int = 3) -> tuple[list[dict[str, Any]], list[Any]]:
    """Real rows of the newest landed batch of ``model``: (records with id + features, their labels).

    Raises:
        DemoError: Nothing landed for the model yet.
    """
    from conveyor.config import load_spec
    from conveyor.data.landing import landed_days, load_window

    spec = load_spec(model)
    days = landed_days(spec)
    if not days:
        raise DemoError(f"no landed data for {model}; run `conveyor land-data --model {model}` first")
    frame = load_window(spec, end_day=days[-1], days=1).head(rows)
    columns = [spec.data.id_column, *spec.feature_names]
    records = []
    for raw in frame[columns].to_dict(orient="records"):
        records.append({k: _plain(v) for k, v in raw.items()})
    labels = [_plain(v) for v in frame[spec.data.target].tolist()] if spec.data.target in frame else []
    return records, labels


def _plain(value: Any) -> Any:
    """numpy/pandas scalars to JSON-friendly Python values (NaN → None)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def _number(value: Any, digits: int = 4) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return "" if value is None else str(value)


def prediction_cells(task: str, prediction: dict[str, Any]) -> list[str]:
    """One served prediction as the table's cells for ``task`` (see :func:`prediction_columns`)."""
    if task == "multiclass":
        from conveyor.pyfunc_outputs import PROBABILITY_PREFIX

        probabilities = [
            v for k, v in prediction.items() if str(k).startswith(PROBABILITY_PREFIX) and v is not None
        ]
        top = max((float(v) for v in probabilities), default=float("nan"))
        return [str(prediction.get("prediction")), _number(top)]
    if task == "regression":
        return [_number(prediction.get("prediction"), 2)]
    return [_number(prediction.get("probability")), str(prediction.get("prediction"))]


def prediction_columns(task: str) -> list[str]:
    """The table's prediction columns per task: the output contract's, a multiclass model's class
    probabilities shown as the predicted class's one."""
    if task == "multiclass":
        return ["prediction", "probability (top class)"]
    if task == "regression":
        return ["prediction"]
    return ["probability", "prediction"]


def predict_table(
    model: str, records: list[dict[str, Any]], labels: list[Any], predictions: list[Any]
) -> Table:
    """A rich table of served predictions with each row's actual label, in the columns of the model's
    task (:func:`prediction_columns`)."""
    from conveyor.config import load_spec

    spec = load_spec(model)
    id_column = spec.data.id_column
    table = Table(
        title=f"predictions of {model} ({spec.task}; rows of the newest landed batch)", title_justify="left"
    )
    table.add_column(id_column)
    for column in prediction_columns(spec.task):
        table.add_column(column, justify="right")
    table.add_column("actual", justify="right")
    for i, (record, pred) in enumerate(zip(records, predictions, strict=False)):
        actual = labels[i] if i < len(labels) else ""
        table.add_row(
            str(record.get(id_column, i)),
            *prediction_cells(spec.task, pred),
            _number(actual, 2) if spec.task == "regression" and actual != "" else str(actual),
        )
    return table


def predict_landed(
    model: str, base_url: str, token: str | None, rows: int = 3, *, wait_s: float = 0.0
) -> tuple[list[dict[str, Any]], list[Any], list[Any]]:
    """Send ``rows`` landed rows to the model server; retry up to ``wait_s`` while it is not serving them.

    Returns:
        (records sent, their labels, predictions).
    """
    from conveyor.serving.client import ModelServerClient, ModelServerError

    records, labels = sample_rows(model, rows)
    deadline = time.monotonic() + wait_s
    with ModelServerClient(base_url, token=token) as client:
        while True:
            try:
                return records, labels, client.predict(model, records)
            except ModelServerError as exc:
                retriable = exc.status in (0, 404, 409, 503)
                if not retriable or time.monotonic() > deadline:
                    raise DemoError(f"the model server at {base_url} did not predict {model}: {exc}") from exc
            time.sleep(2.0)


# ------------------------------------------------------------------------------------------------
# The demo
# ------------------------------------------------------------------------------------------------


def credentials_panel(info: Any) -> Panel:
    """Where everything is, with the local credentials (a :class:`conveyor.stack.StackInfo`)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "Airflow",
        f"{info.airflow_url}   user [bold]{info.airflow_username}[/] "
        f"password [bold]{info.airflow_password or '(not generated yet)'}[/]",
    )
    table.add_row("MLflow", info.mlflow_url)
    table.add_row("Model server", f"{info.model_server_url}   admin token [bold]{info.model_server_token}[/]")
    table.add_row("Data root", info.data_root)
    table.add_row("Logs", f"{info.logs_dir}  (`conveyor logs airflow|mlflow|model-server`)")
    table.add_row("Stop", "`make down` (or `conveyor down`; `--purge` also deletes the local state)")
    return Panel(table, title="Conveyor local stack", expand=False)


def _active_run(client: AirflowClient, dag_id: str) -> dict[str, Any] | None:
    runs = client.dag_runs(dag_id, limit=5, order_by="-id", state=["queued", "running"])
    return runs[0] if runs else None


def run_demo(
    settings: Settings | None = None,
    *,
    console: Console | None = None,
    models: Sequence[str] = tuple(DEMO_DAYS),
    end_day: dt.date | None = None,
    up_timeout: float | None = None,
) -> dict[str, list[Any]]:
    """Run the demo end to end and leave the stack running.

    Args:
        settings: Which stack (home, ports, data root); the process settings by default.
        console: Where to print; a fresh rich console by default.
        models: Spec names to train, deploy and query (default: every spec of :data:`DEMO_DAYS`).
        end_day: Last landed day (today, UTC, by default).
        up_timeout: Seconds ``up`` may take to get healthy.

    Returns:
        Predictions per model.

    Raises:
        DemoError: A step failed; the message names it (and a failed task's log tail).
    """
    from conveyor import stack
    from conveyor.config import list_spec_names, load_spec
    from conveyor.data.generate import land_demo_data

    settings = settings or get_settings()
    console = console or Console(soft_wrap=True)
    end_day = end_day or dt.datetime.now(dt.UTC).date()
    started = time.monotonic()

    # 1. Data first: a scheduled run that starts as soon as a DAG is parsed then finds it too. Every
    # shipped spec gets its data (their DAGs are scheduled), whichever models the demo trains.
    console.rule("[bold]1. land demo data")
    with use_settings(settings):
        shipped = set(list_spec_names())
        for model in dict.fromkeys([*models, *(m for m in DEMO_DAYS if m in shipped)]):
            days = DEMO_DAYS.get(model, 7)
            uris = land_demo_data(load_spec(model), days=days, end_day=end_day, seed=0)
            console.print(f"{model}: {len(uris)} daily batches up to {end_day} under {settings.data_root}")

    # 2. The stack.
    console.rule("[bold]2. start the local stack")
    with console.status("starting Airflow, MLflow and the model server...", refresh_per_second=4) as spinner:
        info = stack.up(
            settings,
            wait=True,
            timeout=up_timeout or stack.DEFAULT_UP_TIMEOUT,
            on_progress=lambda msg: spinner.update(Text(msg)),
        )
    if info.already_running:
        console.print("the stack was already running")
    else:
        console.print(f"healthy in {info.seconds_to_healthy:.0f}s")

    predictions: dict[str, list[Any]] = {}
    with info.airflow_client() as client:
        # 3. Training.
        console.rule("[bold]3. train")
        for dag_id in [*(training_dag_id(m) for m in models), DEPLOY_DAG_ID]:
            with console.status(f"waiting for Airflow to parse {dag_id}...", refresh_per_second=4):
                client.wait_for_dag(dag_id, timeout=300, unpause=True)
        runs: dict[str, str] = {}
        for model in models:
            dag_id = training_dag_id(model)
            active = _active_run(client, dag_id)
            if active is not None:
                runs[model] = active["dag_run_id"]
                console.print(f"{dag_id}: following the run already in progress, {runs[model]}")
            else:
                runs[model] = client.trigger(
                    dag_id, {"window_end": end_day.isoformat()}, note="conveyor demo"
                )
                console.print(f"{dag_id}: triggered {runs[model]}")

        for model in models:
            dag_id = training_dag_id(model)
            run_id = runs[model]
            console.print(f"following {run_url(info.airflow_url, dag_id, run_id)}")
            run, tis = follow_run(client, dag_id, run_id, console=console, timeout=TRAINING_TIMEOUT_S)
            if run.get("state") != "success":
                raise DemoError(f"training {model} failed.\n{explain_failure(client, dag_id, run_id, tis)}")

            # 4. Deploy, set off by the challenger alias that `register` moved.
            if task_state(tis, "train") == "skipped":
                console.print(
                    f"[yellow]{model}: unchanged data: the champion was trained on exactly this window, "
                    "so nothing was trained (trigger with force_retrain to retrain anyway)[/]"
                )
            elif task_state(tis, "register") != "success":
                console.print(
                    f"[yellow]{model}: the gate did not promote this challenger (register "
                    f"{task_state(tis, 'register')}); nothing new to deploy[/]"
                )
            else:
                register = next(t for t in tis if t.get("task_id") == "register")
                moved_after = parse_api_datetime(register.get("start_date")) or dt.datetime.now(dt.UTC)
                console.rule(f"[bold]4. deploy {model}")
                with console.status(
                    f"waiting for {DEPLOY_DAG_ID} to pick up {model}@challenger...", refresh_per_second=4
                ):
                    deploy = client.wait_for_new_run(DEPLOY_DAG_ID, after=moved_after, timeout=DEPLOY_WAIT_S)
                deploy_id = deploy["dag_run_id"]
                console.print(f"following {run_url(info.airflow_url, DEPLOY_DAG_ID, deploy_id)}")
                deploy_run, deploy_tis = follow_run(
                    client, DEPLOY_DAG_ID, deploy_id, console=console, timeout=DEPLOY_TIMEOUT_S
                )
                if deploy_run.get("state") != "success":
                    raise DemoError(
                        f"deploying {model} failed.\n"
                        f"{explain_failure(client, DEPLOY_DAG_ID, deploy_id, deploy_tis)}"
                    )

            # 5. A real prediction.
            console.rule(f"[bold]5. predict with {model}")
            with use_settings(settings):
                records, labels, preds = predict_landed(
                    model, info.model_server_url, info.model_server_token, rows=3, wait_s=90.0
                )
            predictions[model] = preds
            console.print(predict_table(model, records, labels, preds))

    console.rule("[bold]6. where everything is")
    console.print(credentials_panel(info))
    elapsed = time.monotonic() - started
    console.print(Text(f"demo finished in {elapsed:.0f}s; the stack keeps running.", style="green"))
    return predictions
