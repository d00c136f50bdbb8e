"""``conveyor``: run the local stack and drive the pipeline from a terminal.

    conveyor up                  start Airflow, MLflow and the model server (waits until healthy)
    conveyor status              health of every component (exit 1 if one is unhealthy)
    conveyor land-data --model churn --days 7
    conveyor trigger --model churn --follow
    conveyor ci --all --tests tests/   a CI job: check specs, run tests, train + gate (exit 1: rejected)
    conveyor predict --model churn
    conveyor history churn       every alias move: when, from -> to, who, why, the gate's verdict
    conveyor rollback churn [--to 3] --reason "..."   champion back to an earlier version, checked first
    conveyor demo                all of the above, end to end
    conveyor urls                where everything is, with the local credentials
    conveyor logs airflow -f
    conveyor k8s render --model churn --version 7 --image <registry>/conveyor:<tag> [--out DIR]
    conveyor spec draft --name fraud --data exports/ --target is_fraud   a starting spec from data
    conveyor spec check churn    validate a spec; what each stage will do with it (--all: every spec)
    conveyor down [--purge]

Settings come from ``CONVEYOR_*`` variables (``CONVEYOR_HOME``, ``CONVEYOR_AIRFLOW_PORT``...) and the
options below; commands other than ``up``/``demo`` find the ports of the running stack in its state.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from conveyor.errors import ConveyorError
from conveyor.settings import Settings, get_settings

app = typer.Typer(
    name="conveyor",
    help="Continuous integration and delivery for ML models on Airflow 3 and MLflow 3.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft_wrap: URLs and run ids stay on one line (copy-paste), also in CI logs and pipes.
console = Console(soft_wrap=True)
# Errors carry paths, URLs and log lines: never wrap them and never read them as rich markup.
err_console = Console(stderr=True, soft_wrap=True)

_options: dict[str, Any] = {"home": None}

GATE_MODES = ("spec", "enforce", "dry_run", "require_approval")


def _settings(**overrides: Any) -> Settings:
    """Process settings, with ``--home`` and any port options given on the command line."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if _options["home"] is not None:
        values["home"] = _options["home"]
    return Settings(**values) if values else get_settings()


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print("[bold red]error:[/] ", end="")
    err_console.print(message, markup=False, highlight=False)
    return typer.Exit(code)


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@app.callback()
def main(
    home: Annotated[
        Path | None,
        typer.Option(help="The stack's home folder (default: CONVEYOR_HOME or <repo>/.conveyor)."),
    ] = None,
) -> None:
    """Conveyor: validate-data → train → gate → compress → register → deploy → monitor."""
    _options["home"] = home


def _print_info(info: Any) -> None:
    from conveyor.demo import credentials_panel

    console.print(credentials_panel(info))


@app.command()
def up(
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Return once started, without health checks.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every component to be healthy.")
    ] = 600.0,
    airflow_port: Annotated[
        int | None, typer.Option(help="Airflow UI/API port [CONVEYOR_AIRFLOW_PORT].")
    ] = None,
    mlflow_port: Annotated[int | None, typer.Option(help="MLflow port [CONVEYOR_MLFLOW_PORT].")] = None,
    model_server_port: Annotated[
        int | None, typer.Option(help="Model server port [CONVEYOR_MODEL_SERVER_PORT].")
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="embedded (SQLite, LocalExecutor) or distributed (PostgreSQL, CeleryExecutor on "
            "Redis) [CONVEYOR_PROFILE]."
        ),
    ] = None,
) -> None:
    """Start the local stack (Airflow, MLflow, model server) under supervisord."""
    from conveyor import stack

    if profile is not None and profile not in ("embedded", "distributed"):
        raise _fail(f"--profile must be embedded or distributed, not {profile!r}")
    settings = _settings(
        airflow_port=airflow_port,
        mlflow_port=mlflow_port,
        model_server_port=model_server_port,
        profile=profile,
    )
    try:
        with console.status("starting the local stack...", refresh_per_second=4) as spinner:
            info = stack.up(
                settings, wait=not no_wait, timeout=timeout, on_progress=lambda m: spinner.update(Text(m))
            )
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc
    if info.already_running:
        console.print("[green]the stack is already running[/]")
    elif no_wait:
        console.print(
            "[green]started[/]; components are coming up: `conveyor status` shows them, and "
            "`conveyor up` (again) waits for them and applies airflow_settings.yaml"
        )
    else:
        console.print(f"[green]healthy in {info.seconds_to_healthy:.0f}s[/]")
    _print_info(info)


@app.command()
def down(
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the home folder: databases, models, data, logs.")
    ] = False,
) -> None:
    """Stop everything `up` started (data stays unless --purge)."""
    from conveyor import stack

    settings = _settings()
    try:
        with console.status("stopping the local stack...", refresh_per_second=4):
            report = stack.down(settings, purge=purge)
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc
    if report.was_running:
        console.print(f"[green]stopped[/] in {report.stopped_in_s:.0f}s")
    else:
        console.print("the stack was not running")
    if report.killed_leftovers:
        console.print(f"[yellow]killed processes that did not stop in time: {report.killed_leftovers}[/]")
    if report.purged:
        console.print(f"deleted {settings.home}")


@app.command()
def status() -> None:
    """Process state and health of every component; exit code 1 if one is unhealthy."""
    from conveyor import stack

    try:
        components = stack.status(_settings())
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc
    table = Table(title="Conveyor local stack", title_justify="left")
    for column in ("component", "process", "healthy", "url", "detail"):
        table.add_column(column)
    for c in components:
        table.add_row(
            c.name,
            c.process_state,
            Text("yes", style="green") if c.healthy else Text("no", style="red"),
            c.url,
            c.detail,
        )
    console.print(table)
    if all(c.process_state == "STOPPED" and c.detail == "not running" for c in components):
        console.print("the local stack is not running; start it with `conveyor up`")
    if not all(c.healthy for c in components):
        raise typer.Exit(1)


@app.command()
def logs(
    component: Annotated[
        str, typer.Argument(help="airflow, mlflow, model-server, registry-relay or supervisord")
    ],
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many lines from the end.")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines.")] = False,
) -> None:
    """Print (and follow) a component's log."""
    from conveyor import stack

    try:
        for line in stack.logs(_settings(), component, lines=lines, follow=follow):
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc


@app.command("land-data")
def land_data(
    model: Annotated[str, typer.Option(help="Spec name (include/specs/<model>.yaml).")] = "churn",
    days: Annotated[
        int | None,
        typer.Option(help="How many daily batches (default: the demo's, e.g. 7 for churn, 14 for digits)."),
    ] = None,
    end_day: Annotated[str | None, typer.Option(help="Newest day, YYYY-MM-DD (default: today, UTC).")] = None,
    rows_per_day: Annotated[int, typer.Option(help="Rows per daily batch (churn).")] = 400,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    drift: Annotated[float, typer.Option(help="0..1: shift the feature distributions.")] = 0.0,
    corrupt: Annotated[
        str | None,
        typer.Option(help="Break the newest batch: comma-separated kinds, e.g. nulls,missing_column."),
    ] = None,
) -> None:
    """Land synthetic daily batches into the data root's landing area."""
    from conveyor.config import load_spec
    from conveyor.data.generate import land_demo_data
    from conveyor.demo import DEMO_DAYS, use_settings

    settings = _settings()
    days = days if days is not None else DEMO_DAYS.get(model, 7)
    try:
        day = dt.date.fromisoformat(end_day) if end_day else dt.datetime.now(dt.UTC).date()
    except ValueError as exc:
        raise _fail(f"--end-day must be YYYY-MM-DD, got {end_day!r}") from exc
    try:
        with use_settings(settings):
            uris = land_demo_data(
                load_spec(model),
                days=days,
                end_day=day,
                rows_per_day=rows_per_day,
                seed=seed,
                drift=drift,
                corruption=_csv(corrupt),
            )
    except (ConveyorError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"landed {len(uris)} batches of {model} ending {day}:")
    for uri in uris:
        console.print(f"  {uri}")


def _client_and_info(settings: Settings) -> tuple[Any, Any]:
    from conveyor import stack

    info = stack.stack_info(settings)
    stack.ensure_airflow_settings(settings)
    return info.airflow_client(), info


def _follow_and_report(client: Any, info: Any, dag_id: str, run_id: str) -> None:
    from conveyor.demo import explain_failure, follow_run

    try:
        run, tis = follow_run(client, dag_id, run_id, console=console)
    except KeyboardInterrupt:
        console.print(f"stopped following; the run goes on: {info.airflow_url}/dags/{dag_id}/runs/{run_id}")
        raise typer.Exit(130) from None
    if run.get("state") != "success":
        raise _fail(
            f"{dag_id} run {run_id} {run.get('state')}.\n{explain_failure(client, dag_id, run_id, tis)}"
        )
    console.print(f"[green]{dag_id} run {run_id} succeeded[/]")


@app.command()
def trigger(
    model: Annotated[str, typer.Option(help="Spec name; triggers conveyor_train_<model>.")] = "churn",
    window_end: Annotated[str | None, typer.Option(help="Last landed day to train on (YYYY-MM-DD).")] = None,
    window_days: Annotated[
        int | None, typer.Option(help="Window length in days (default: the spec's).")
    ] = None,
    gate_mode: Annotated[str | None, typer.Option(help=f"One of {', '.join(GATE_MODES)}.")] = None,
    compression: Annotated[
        str | None, typer.Option(help="Comma-separated methods, e.g. tflite_dynamic_range,none.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Override: register even if the gate rejects (needs --justification)."),
    ] = False,
    justification: Annotated[
        str | None, typer.Option(help="Why the override is right; recorded on the version and in the ledger.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Show the run task by task until it ends.")
    ] = False,
) -> None:
    """Trigger a training run through Airflow's REST API."""
    from conveyor.demo import run_url, training_dag_id

    if gate_mode is not None and gate_mode not in GATE_MODES:
        raise _fail(f"--gate-mode must be one of {', '.join(GATE_MODES)}, got {gate_mode!r}")
    conf: dict[str, Any] = {}
    if window_end:
        conf["window_end"] = window_end
    if window_days is not None:
        conf["window_days"] = window_days
    if gate_mode:
        conf["gate_mode"] = gate_mode
    if compression:
        conf["compression"] = _csv(compression)
    if force and not (justification or "").strip():
        raise _fail("--force needs --justification: say why the gate's verdict should be overridden")
    if force:
        conf["force"] = True
    if justification:
        conf["justification"] = justification
    dag_id = training_dag_id(model)
    try:
        client, info = _client_and_info(_settings())
        with client:
            client.wait_for_dag(dag_id, timeout=120)
            run_id = client.trigger(dag_id, conf)
            console.print(f"triggered [bold]{dag_id}[/] run [bold]{run_id}[/]")
            console.print(f"  {run_url(info.airflow_url, dag_id, run_id)}")
            if follow:
                _follow_and_report(client, info, dag_id, run_id)
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def ci(
    model: Annotated[
        list[str] | None, typer.Option("--model", help="A model to train (repeatable); or --all.")
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Train every spec in the specs dir.")] = False,
    tests: Annotated[
        list[str] | None,
        typer.Option("--tests", help="A path of the team's tests for pytest (repeatable); none: skipped."),
    ] = None,
    pytest_args: Annotated[
        str | None, typer.Option(help='More pytest arguments in one string, e.g. "-q -x -m unit".')
    ] = None,
    commit: Annotated[
        str | None,
        typer.Option(help="The commit to record (default: git HEAD here, else $GIT_COMMIT/$GITHUB_SHA)."),
    ] = None,
    window_end: Annotated[str | None, typer.Option(help="Last landed day to train on (YYYY-MM-DD).")] = None,
    gate_mode: Annotated[str | None, typer.Option(help=f"One of {', '.join(GATE_MODES)}.")] = None,
    no_force_retrain: Annotated[
        bool,
        typer.Option(
            "--no-force-retrain", help="Skip training when the window is the champion's data (exit 0)."
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to follow each training run.")] = 3600.0,
    airflow_url: Annotated[
        str | None,
        typer.Option(
            envvar="CONVEYOR_AIRFLOW_URL", help="Airflow's API server (default: the local stack's)."
        ),
    ] = None,
    airflow_username: Annotated[
        str, typer.Option(envvar="CONVEYOR_AIRFLOW_USERNAME", help="Airflow user (with --airflow-url).")
    ] = "admin",
    airflow_password: Annotated[
        str | None,
        typer.Option(
            envvar="CONVEYOR_AIRFLOW_PASSWORD",
            show_default=False,
            help="Its password (with --airflow-url); prefer the variable to the option.",
        ),
    ] = None,
) -> None:
    """For a CI job: validate every spec, run the tests, train and gate through Airflow.

    Exit 0: every challenger registered; 1: a bad spec, a failed test, a rejection, a failed run.
    """
    from conveyor import ci as ci_steps
    from conveyor.airflow_api import AirflowClient

    if airflow_url and not airflow_password:
        raise _fail("--airflow-url needs a password: set CONVEYOR_AIRFLOW_PASSWORD", code=2)
    settings = _settings()

    def connect() -> tuple[Any, str]:
        if airflow_url:
            return AirflowClient(airflow_url, airflow_username, airflow_password or ""), airflow_url
        client, info = _client_and_info(settings)
        return client, info.airflow_url

    options = ci_steps.CiOptions(
        models=tuple(model or ()),
        all_models=all_models,
        tests=tuple(tests or ()),
        pytest_args=pytest_args,
        commit=commit,
        window_end=window_end,
        gate_mode=gate_mode,
        force_retrain=not no_force_retrain,
        timeout=timeout,
    )
    try:
        report = ci_steps.run_ci(options, specs_dir=settings.specs_dir, connect=connect, console=console)
    except ci_steps.CiUsageError as exc:
        raise _fail(str(exc), code=2) from exc
    except KeyboardInterrupt:
        console.print("interrupted; triggered runs go on in Airflow")
        raise typer.Exit(130) from None
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc
    raise typer.Exit(report.exit_code)


@app.command("follow")
def follow_cmd(
    dag_id: Annotated[str, typer.Argument(help="The DAG, e.g. conveyor_train_churn.")],
    run_id: Annotated[str, typer.Argument(help="The run id (printed by `conveyor trigger`).")],
) -> None:
    """Follow a DAG run task by task until it ends; exit code 1 if it failed."""
    try:
        client, info = _client_and_info(_settings())
        with client:
            _follow_and_report(client, info, dag_id, run_id)
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="Spec name of the served model.")] = "churn",
    rows: Annotated[int, typer.Option(help="How many rows of the newest landed batch to send.")] = 3,
) -> None:
    """Send real rows of the newest landed batch to the model server and print the predictions."""
    from conveyor import stack
    from conveyor.demo import predict_landed, predict_table, use_settings

    settings = _settings()
    try:
        info = stack.stack_info(settings)
        with use_settings(settings):
            records, labels, preds = predict_landed(
                model, info.model_server_url, info.model_server_token, rows
            )
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc
    console.print(predict_table(model, records, labels, preds))


@app.command()
def history(
    model: Annotated[str, typer.Argument(help="Spec name (include/specs/<model>.yaml).")],
    alias: Annotated[str | None, typer.Option(help="Only this alias (challenger, champion).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many moves, newest first.")] = 20,
) -> None:
    """The alias ledger of a model: every move, who made it, why, and the gate's verdict."""
    from conveyor import stack
    from conveyor.config import load_spec
    from conveyor.registry.aliases import ledger
    from conveyor.registry.session import MlflowSession

    settings = _settings()
    try:
        spec = load_spec(model)
        info = stack.stack_info(settings)
        entries = ledger(MlflowSession(info.mlflow_url).client(), spec.registered_model_name, alias, limit)
    except (ConveyorError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    if not entries:
        console.print(f"no alias moves of {spec.registered_model_name} yet (nothing registered or deployed)")
        return
    console.print(history_table(spec.registered_model_name, entries))


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="Spec name (include/specs/<model>.yaml).")],
    to: Annotated[
        str | None,
        typer.Option("--to", help="Version to put back (default: the champion before the current one)."),
    ] = None,
    reason: Annotated[
        str, typer.Option(help="Why, in words (kept in the ledger).")
    ] = "rolled back from the command line",
) -> None:
    """Put an earlier version back in production: same checks as a deploy, then champion moves.

    The target is staged in the model server (golden rows, latency budget) before anything changes;
    a target that fails is refused (exit 1) and the current champion keeps serving.
    """
    import getpass

    from conveyor import stack
    from conveyor.config import load_spec
    from conveyor.deploy.local import rollback as roll_back
    from conveyor.registry.session import MlflowSession
    from conveyor.serving.client import ModelServerClient

    settings = _settings()
    try:
        spec = load_spec(model)
        info = stack.stack_info(settings)
        with ModelServerClient(info.model_server_url, token=info.model_server_token) as server:
            result = roll_back(
                MlflowSession(info.mlflow_url).client(),
                server,
                spec,
                to_version=to,
                actor=f"cli:{getpass.getuser()}",
                reason=reason,
            )
    except (ConveyorError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    if not result.get("changed"):
        console.print(f"{spec.registered_model_name} v{result['version']} already is champion; nothing moved")
        return
    console.print(
        f"{spec.registered_model_name}: champion v{result['previous']} -> v{result['version']}, "
        f"serving v{result['version']} (ledger run {result['ledger'].get('ledger_run_id')})"
    )


def history_table(registered_name: str, entries: list[Any]) -> Table:
    """A rich table of ledger entries (newest first), one row per alias move."""
    table = Table(title=f"{registered_name}: alias moves, newest first", title_justify="left")
    for column in ("when (UTC)", "alias", "from → to", "actor", "reason", "DAG run", "gate"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            entry.moved_at.strftime("%Y-%m-%d %H:%M:%S"),
            entry.alias,
            f"{_version(entry.from_version)} → {_version(entry.to_version)}",
            entry.actor,
            Text(entry.reason[:160] + ("…" if len(entry.reason) > 160 else "")),
            entry.dag_run_id or "-",
            gate_verdict(entry.details),
        )
    return table


def _version(version: str | None) -> str:
    return "-" if version is None else f"v{version}"


def gate_verdict(details: dict[str, Any]) -> str:
    """The gate's verdict as kept in a ledger entry's details (``-`` when the move had none)."""
    gate = details.get("gate")
    if not isinstance(gate, dict):
        return "-"
    verdict = "PASSED" if gate.get("passed") else "FAILED"
    mode = gate.get("mode", "?")
    return f"{verdict} ({mode}){' OVERRIDE' if details.get('override') else ''}"


@app.command()
def demo(
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated spec names (default: every shipped spec: churn, breast_cancer, digits, "
            "diabetes)."
        ),
    ] = None,
    airflow_port: Annotated[int | None, typer.Option(help="Airflow port if the stack is started.")] = None,
    mlflow_port: Annotated[int | None, typer.Option(help="MLflow port if the stack is started.")] = None,
    model_server_port: Annotated[int | None, typer.Option(help="Model server port if started.")] = None,
) -> None:
    """Land data, start the stack, train, deploy, predict: the whole loop; leaves the stack running."""
    from conveyor.demo import DEMO_DAYS, run_demo

    settings = _settings(
        airflow_port=airflow_port, mlflow_port=mlflow_port, model_server_port=model_server_port
    )
    try:
        run_demo(settings, console=console, models=_csv(models) if models else tuple(DEMO_DAYS))
    except KeyboardInterrupt:
        console.print("interrupted; the stack keeps running (`make down` stops it)")
        raise typer.Exit(130) from None
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def urls() -> None:
    """Airflow, MLflow and model-server URLs with the local credentials."""
    from conveyor import stack

    try:
        info = stack.stack_info(_settings())
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc
    _print_info(info)


# -- Kubernetes -------------------------------------------------------------------------------------

k8s_app = typer.Typer(
    help="Kubernetes manifests for the model server and training pods (rendered here, applied elsewhere).",
    no_args_is_help=True,
)
app.add_typer(k8s_app, name="k8s")


@k8s_app.command("render")
def k8s_render(
    model: Annotated[str, typer.Option(help="Spec name (include/specs/<model>.yaml).")],
    version: Annotated[str, typer.Option(help="Registry version to serve, e.g. 7 (not an alias).")],
    image: Annotated[
        str, typer.Option(help="Model-server image with a release tag or digest (never 'latest').")
    ],
    namespace: Annotated[str, typer.Option(help="Namespace of every object.")] = "conveyor",
    replicas: Annotated[int, typer.Option(help="Minimum replicas (the autoscaler's floor).")] = 2,
    max_replicas: Annotated[
        int | None, typer.Option(help="Autoscaler ceiling (default: 3 x --replicas).")
    ] = None,
    training_image: Annotated[
        str | None,
        typer.Option(help="Airflow image of the training pods: also write training-pod-template.yaml."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the files here (default: print the model-server manifests)."),
    ] = None,
    validate: Annotated[
        bool,
        typer.Option(
            "--validate",
            help="Also check every manifest against the Kubernetes schema (needs kubernetes-validate).",
        ),
    ] = False,
) -> None:
    """Render the model server (ServiceAccount, Deployment, Service, HPA, PDB) for one model version."""
    from conveyor.deploy import kubernetes

    if training_image is not None and out is None:
        # On stdout it would sit among the server's objects and `kubectl apply` would start it as a pod.
        raise _fail("--training-image needs --out: the pod template is a file for Airflow, not an object")
    options: dict[str, Any] = {"namespace": namespace, "replicas": replicas, "max_replicas": max_replicas}
    try:
        docs = kubernetes.render_model_server(model, version, image, **options)
        if training_image is not None:
            docs.append(kubernetes.render_training_pod_template(training_image, namespace=namespace))
        if validate:
            kubernetes.validate_manifests(docs)
        if out is None:
            sys.stdout.write(kubernetes.to_yaml(docs))
            return
        paths = kubernetes.write_manifests(
            out, model, version, image, training_image=training_image, **options
        )
    except ConveyorError as exc:
        raise _fail(str(exc)) from exc
    checked = f" (schema-checked against Kubernetes {kubernetes.KUBERNETES_VERSION})" if validate else ""
    console.print(f"rendered {model} v{version}{checked}:", markup=False, highlight=False)
    for path in paths:
        console.print(f"  {path}", markup=False, highlight=False)


# -- Model specs ------------------------------------------------------------------------------------

spec_app = typer.Typer(
    help="Model specs: draft one from a data sample; check one and see what each stage will do.",
    no_args_is_help=True,
)
app.add_typer(spec_app, name="spec")


@spec_app.command("draft")
def spec_draft(
    name: Annotated[str, typer.Option(help="Spec name: lower case, digits and '_' (e.g. fraud).")],
    data: Annotated[
        str,
        typer.Option(
            help="A Parquet or CSV file, a folder of them (date=YYYY-MM-DD partitions allowed), a glob, "
            "or an fsspec URI (s3://..., gs://...)."
        ),
    ],
    target: Annotated[str, typer.Option(help="The 0/1 label column (1 = the positive class).")],
    task: Annotated[str, typer.Option(help="Kind of model; only binary is supported today.")] = "binary",
    id_column: Annotated[
        str | None, typer.Option("--id", help="Row id column (default: a unique *id* column).")
    ] = None,
    time_column: Annotated[
        str | None, typer.Option("--time", help="Event time column (default: a date/datetime column).")
    ] = None,
    margin: Annotated[
        float, typer.Option(help="Widen observed numeric ranges by this share of the range on each side.")
    ] = 0.1,
    max_categories: Annotated[
        int, typer.Option(help="String columns with more distinct values are left out.")
    ] = 20,
    max_rows: Annotated[int, typer.Option(help="Read at most this many rows.")] = 1_000_000,
    out: Annotated[
        Path | None,
        typer.Option(help="Write here ('-': print it) instead of <specs dir>/<name>.yaml."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a starting spec from a data sample: columns, ranges, categories, null shares. Edit it."""
    from conveyor import spec_tools

    target_path = out if out is not None else _settings().specs_dir / f"{name}.yaml"
    to_stdout = str(target_path) == "-"
    if not to_stdout and target_path.exists() and not force:
        raise _fail(f"{target_path} exists; pass --force to overwrite it (or --out another path)")
    try:
        sample = spec_tools.read_sample(data, max_rows=max_rows)
        files = f"{len(sample.files)} of {sample.total_files} files" if sample.truncated else None
        source = data if len(sample.files) == 1 else f"{data} ({files or f'{len(sample.files)} files'})"
        draft = spec_tools.draft_spec(
            sample.frame,
            name=name,
            target=target,
            source=source,
            task=task,
            id_column=id_column,
            time_column=time_column,
            margin=margin,
            max_categories=max_categories,
        )
    except spec_tools.SpecDraftError as exc:
        raise _fail(str(exc), code=2) from exc
    if to_stdout:
        sys.stdout.write(draft.text)
        return
    target_path.parent.mkdir(parents=True, exist_ok=True)
    target_path.write_text(draft.text)
    console.print(spec_tools.draft_table(draft))
    for note in draft.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    console.print(Text(f"wrote {target_path} from {len(sample.frame):,} rows; it validates."))
    console.print(
        Text(f"next: edit the TODOs in it, then `conveyor spec check {target_path}`", style="bold"),
    )


@spec_app.command("check")
def spec_check(
    spec: Annotated[
        str | None, typer.Argument(help="Spec name (include/specs/<name>.yaml) or a path to a spec file.")
    ] = None,
    all_specs: Annotated[bool, typer.Option("--all", help="Check every spec in the specs dir.")] = False,
) -> None:
    """Validate a spec and print what each stage will do with it; exit 1 if it does not validate."""
    from conveyor import spec_tools

    settings = _settings()
    if all_specs == (spec is not None):
        raise _fail("name one spec (or a path), or pass --all", code=2)
    try:
        paths = (
            sorted(settings.specs_dir.glob("*.yaml"))
            if all_specs
            else [spec_tools.resolve_spec_path(str(spec), settings.specs_dir)]
        )
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from exc
    if not paths:
        raise _fail(f"no spec files in {settings.specs_dir}")
    failed = 0
    for path in paths:
        try:
            model = spec_tools.load_spec_file(path)
        except spec_tools.SpecInvalidError as exc:
            failed += 1
            err_console.print(Text(f"{path}: INVALID ({len(exc.problems)} problem(s))", style="bold red"))
            for problem in exc.problems:
                err_console.print(Text(f"  {problem.field} → {problem.message}"))
            continue
        sections, warnings = spec_tools.spec_plan(model, data_root=settings.data_root)
        console.print(Text(f"{path}: valid", style="bold green"))
        for title, lines in sections:
            console.print(Text(f"  {title}", style="bold"))
            for line in lines:
                console.print(Text(f"    {line}"))
        if path.stem != model.name:
            warnings.insert(
                0, f"the file is {path.name} but the spec is named {model.name!r}; load_spec goes by the file"
            )
        for warning in warnings:
            console.print(Text(f"  warning: {warning}", style="yellow"))
    if failed:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
