"""Alias move → served: how long after a person moves ``challenger`` the model server answers with it.

One throwaway embedded stack (``stack.up`` on free ports: Airflow standalone with LocalExecutor,
MLflow, the model server, the registry relay) with one spec of its own, ``aliasbench``
(breast-cancer data, the quick untuned scikit-learn trainer, no schedule). Three versions are
trained and registered in a child process with Conveyor's own trainer and ``register_version``
(what the training DAG's tasks call); v1 is made ``champion``.

Then ``challenger`` is moved by hand (``MlflowClient.set_registered_model_alias``, as a person does
in the MLflow UI) :data:`MOVES` times, alternating between v2 and v3 (a move back to a version
deployed before is a new request), and each move is timed until ``POST /models/<name>/invocations``
answers with that version in ``X-Model-Version`` (polled every 50 ms). Before the next move the
deploy DAG is left idle (the watcher's own report of a move the relay already delivered starts one
more run, which finds nothing to do).

* Conveyor: the default stack, the push path: MLflow's webhook → ``registry-relay`` → an Airflow
  asset event, beside the registry watcher's polling.
* The peer: polling only, the same stack after its MLflow webhook is deleted
  (``MlflowClient.delete_webhook``, then a wait for MLflow's 60 s webhook cache to expire): the
  watcher's 5 s poll is the only way a move reaches Airflow.

Per move the breakdown (:data:`STEPS`, seconds after the move) is read back from Airflow: the first
asset event after the move (its source: ``from_webhook`` or ``from_trigger``), then the deploy run
that moved ``champion`` (its id from the alias ledger): the run queued and started, its ``plan`` and
``deploy`` task instances, the server answering, the run's end. It goes into the result's details,
to stdout and to ``bench/results/alias_latency.md``. Target: p50 ≤ :data:`TARGET_S` s for the push
path.

Not run in quick mode (starting Airflow takes a minute or more on 2 cores): it returns no result there.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import BenchResult
from bench.support import child_main, conveyor_env, percentile, run_child

MODEL = "aliasbench"
REGISTERED = "conveyor-aliasbench"
DEPLOY = "conveyor_deploy"
CHALLENGER = "challenger"
MOVES = 10
TARGET_S = 5.0
POLL_S = 0.05
#: Seconds a move may take to be served before the benchmark gives up on it.
MOVE_TIMEOUT_S = 300.0
#: The registry watcher's poll interval (``dags/conveyor_deploy.py``) plus a margin: after this long
#: its own report of a move has reached Airflow.
WATCHER_SETTLE_S = 8.0
#: How long MLflow's server keeps delivering to a deleted webhook (its ``MLFLOW_WEBHOOK_CACHE_TTL``,
#: 60 s by default) plus a margin.
WEBHOOK_CACHE_S = 65.0
BREAKDOWN_FILE = Path(__file__).resolve().parent / "results" / "alias_latency.md"
_ACTIVE = ("queued", "running")


# ------------------------------------------------------------------------------------------------
# Child: train and register the versions (process-wide MLflow and Conveyor settings live there)
# ------------------------------------------------------------------------------------------------


def _write_spec(specs: Path) -> None:
    """The shipped breast-cancer spec as ``aliasbench``: quick untuned scikit-learn trainer, no schedule."""
    import yaml

    from conveyor.config import DEFAULT_SPECS_DIR

    raw = yaml.safe_load((DEFAULT_SPECS_DIR / "breast_cancer.yaml").read_text())
    raw.update({"name": MODEL, "registered_model_name": REGISTERED, "schedule": None})
    raw["trainer"] = {"kind": "sklearn_pipeline", "seed": 7, "params": {"C": 1.0, "max_iter": 500}}
    raw.pop("tuning", None)
    (specs / f"{MODEL}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _register_versions(args: list[str]) -> dict[str, Any]:
    """Child: three versions of ``aliasbench`` registered, v1 ``champion``; one request body."""
    tracking_uri, count = args[0], int(args[1])
    import pandas as pd

    from conveyor.config import load_spec
    from conveyor.data.generate import breast_cancer_batches
    from conveyor.data.snapshot import split_is_eval
    from conveyor.registry.aliases import set_alias
    from conveyor.registry.tracking import client_for, get_or_create_run
    from conveyor.registry.versions import register_version
    from conveyor.training import train

    spec = load_spec(MODEL)
    today = dt.datetime.now(dt.UTC).date()
    df = pd.concat([f for _, f in breast_cancer_batches(spec, 4, today, seed=0)], ignore_index=True)
    is_eval = split_is_eval(df[spec.data.id_column].tolist(), spec.data.holdout_fraction)
    train_df, eval_df = df[~is_eval].reset_index(drop=True), df[is_eval].reset_index(drop=True)
    mlflow = client_for(tracking_uri)
    versions = []
    for k in range(count):
        key = f"aliasbench-{k}"
        run_id = get_or_create_run(mlflow, spec, dag_run_id=key, dag_id="bench_alias_latency")
        trained = train(spec, train_df, eval_df, run_id)
        lineage = {
            "dag_id": "bench_alias_latency",
            "data_fingerprint": key,
            "validation": "passed",
            "gate": "register",
            "compression": "none",
            "parent_model_uri": trained.model_uri,
            "git_commit": "bench",
            "params": "{}",
        }
        versions.append(register_version(mlflow, spec, trained.model_uri, run_id, key, lineage).version)
    set_alias(
        mlflow, REGISTERED, "champion", versions[0], expected_version=None, actor="bench", reason="seed"
    )
    row = eval_df.iloc[:1][spec.feature_names].to_dict(orient="split")
    return {
        "versions": versions,
        "body": {"dataframe_split": {"columns": row["columns"], "data": row["data"]}},
    }


# ------------------------------------------------------------------------------------------------
# Moves
# ------------------------------------------------------------------------------------------------


def _ts(value: str | None) -> dt.datetime | None:
    from conveyor.airflow_api import parse_api_datetime

    return parse_api_datetime(value)


def _since(moved: dt.datetime, when: dt.datetime | None) -> float | None:
    return None if when is None else (when - moved).total_seconds()


def _served(http: Any, body: dict[str, Any]) -> str | None:
    import httpx

    try:
        response = http.post(f"/models/{MODEL}/invocations", json=body)
    except httpx.HTTPError:
        return None
    return str(response.headers.get("X-Model-Version")) if response.status_code == 200 else None


def _wait_served(http: Any, body: dict[str, Any], version: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _served(http, body) != version:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{MODEL} v{version} not served within {timeout:.0f}s")
        time.sleep(POLL_S)


def _busy(af: Any) -> list[str]:
    """Deploy runs queued or running, and asset events queued for a run not created yet."""
    runs = af.dag_runs(DEPLOY, limit=5, state=list(_ACTIVE))
    queued = af._json("GET", f"/api/v2/dags/{DEPLOY}/assets/queuedEvents").get("queued_events", [])
    return [str(r["dag_run_id"]) for r in runs] + [f"queued event {q['created_at']}" for q in queued]


def _wait_idle(af: Any, moved_mono: float, timeout: float = 300.0) -> None:
    """Wait until the watcher has reported the last move and the deploy DAG has nothing left to do.

    The watcher's own report of a move the relay delivered waits in Airflow's asset queue while the
    first run is active (``max_active_runs=1``), and starts one more run after it, which finds
    nothing to do; the next move starts only once that run has ended too.
    """
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3 or time.monotonic() < moved_mono + WATCHER_SETTLE_S:
        busy = _busy(af)
        quiet = 0 if busy else quiet + 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"{DEPLOY} still busy {timeout:.0f}s after a move: {busy}")
        time.sleep(0.5)


def _deploying_run(mlflow: Any, version: str, moved_at: dt.datetime) -> str | None:
    """The deploy DAG run that moved ``champion`` to ``version`` after ``moved_at`` (from the ledger)."""
    from conveyor.registry.aliases import ledger

    for entry in ledger(mlflow, REGISTERED, alias="champion", limit=5):
        if entry.to_version == version and entry.moved_at >= moved_at:
            return entry.dag_run_id
    return None


def _asset_events(af: Any, asset_id: int, since: dt.datetime) -> list[dict[str, Any]]:
    params = {"asset_id": asset_id, "timestamp_gte": since.isoformat(), "order_by": "timestamp", "limit": 20}
    body = af._json("GET", "/api/v2/assets/events", params=params)
    return list(body.get("asset_events", []))


def _event_source(event: dict[str, Any]) -> str:
    extra = event.get("extra") or {}
    if extra.get("from_webhook"):
        return "webhook"
    if extra.get("from_trigger"):
        return "watcher"
    return "other"


def _move(
    af: Any, mlflow: Any, http: Any, body: dict[str, Any], asset_id: int, version: str
) -> dict[str, Any]:
    """One hand move of ``challenger`` to ``version``, timed until the server answers with it."""
    moved_at = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    moved_mono = time.monotonic()
    mlflow.set_registered_model_alias(REGISTERED, CHALLENGER, version)  # as in the MLflow UI
    _wait_served(http, body, version, MOVE_TIMEOUT_S)
    served_s = time.perf_counter() - t0
    _wait_idle(af, moved_mono)
    events = _asset_events(af, asset_id, moved_at)
    runs = af.dag_runs(DEPLOY, limit=10, start_date_gte=moved_at)
    run_id = _deploying_run(mlflow, version, moved_at)
    run = af.dag_run(DEPLOY, run_id) if run_id else {}
    tis = {ti["task_id"]: ti for ti in af.task_instances(DEPLOY, run_id)} if run_id else {}
    plan, deploy = tis.get("plan", {}), tis.get("deploy", {})
    print(f"challenger -> v{version}: served after {served_s:.2f} s ({len(runs)} deploy run(s))", flush=True)
    return {
        "version": version,
        "served_s": served_s,
        "event_s": _since(moved_at, _ts(events[0].get("timestamp"))) if events else None,
        "event_source": _event_source(events[0]) if events else None,
        "event_sources": [_event_source(e) for e in events],
        "run_id": run_id,
        "run_queued_s": _since(moved_at, _ts(run.get("queued_at"))),
        "run_started_s": _since(moved_at, _ts(run.get("start_date"))),
        "plan_started_s": _since(moved_at, _ts(plan.get("start_date"))),
        "plan_ended_s": _since(moved_at, _ts(plan.get("end_date"))),
        "deploy_started_s": _since(moved_at, _ts(deploy.get("start_date"))),
        "deploy_tries": deploy.get("try_number"),
        "run_ended_s": _since(moved_at, _ts(run.get("end_date"))),
        "runs": len(runs),
    }


def _series(
    af: Any, mlflow: Any, http: Any, body: dict[str, Any], asset_id: int, versions: list[str], moves: int
) -> list[dict[str, Any]]:
    return [_move(af, mlflow, http, body, asset_id, versions[i % len(versions)]) for i in range(moves)]


#: The breakdown's columns: seconds after the move (key, heading).
STEPS = (
    ("event_s", "asset event"),
    ("run_queued_s", "run queued"),
    ("run_started_s", "run started"),
    ("plan_started_s", "plan started"),
    ("plan_ended_s", "plan ended"),
    ("deploy_started_s", "deploy started"),
    ("served_s", "served"),
    ("run_ended_s", "run ended"),
)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    served = [r["served_s"] for r in rows]
    out: dict[str, Any] = {
        f"p50_{key}": percentile([r[key] for r in rows if r[key] is not None], 50) for key, _ in STEPS
    }
    out.update(
        {
            "p90_served_s": percentile(served, 90),
            "max_served_s": max(served),
            "first_event_sources": sorted({str(r["event_source"]) for r in rows}),
        }
    )
    return out


def _delete_webhook(mlflow: Any) -> list[str]:
    """Delete the stack's registry webhook(s): alias moves reach Airflow through polling only."""
    from conveyor.registry_relay import WEBHOOK_NAME

    deleted = []
    for hook in mlflow.list_webhooks(max_results=100):
        if hook.name == WEBHOOK_NAME:
            mlflow.delete_webhook(hook.webhook_id)
            deleted.append(str(hook.webhook_id))
    if not deleted:
        raise RuntimeError(f"no MLflow webhook {WEBHOOK_NAME!r} to delete: is the relay registered?")
    return deleted


def _measure(home: Path, moves: int) -> dict[str, Any]:
    import httpx

    from conveyor import stack
    from conveyor.names import REGISTRY_ALIASES_ASSET_URI
    from conveyor.registry.tracking import client_for

    specs = home / "specs"
    specs.mkdir(parents=True)
    _write_spec(specs)
    settings = stack.isolated_settings(home, specs_dir=specs)
    started = time.perf_counter()
    try:
        info = stack.up(settings, timeout=600)
        up_s = time.perf_counter() - started
        print(f"stack up in {up_s:.0f} s", flush=True)
        t = time.perf_counter()
        env = conveyor_env(home, info.mlflow_url, CONVEYOR_SPECS_DIR=str(specs))
        seeded = run_child("bench.alias_latency", [info.mlflow_url, "3"], env, cwd=home, timeout=900)
        register_s = time.perf_counter() - t
        versions = seeded["versions"]
        mlflow = client_for(info.mlflow_url)
        with info.airflow_client() as af, httpx.Client(base_url=info.model_server_url, timeout=30) as http:
            af.wait_for_dag(DEPLOY, timeout=300, unpause=True)
            asset = af.find_asset(uri=REGISTRY_ALIASES_ASSET_URI)
            deadline = time.monotonic() + 120
            while asset is None and time.monotonic() < deadline:
                time.sleep(1)
                asset = af.find_asset(uri=REGISTRY_ALIASES_ASSET_URI)
            if asset is None:
                raise RuntimeError(f"Airflow has no asset {REGISTRY_ALIASES_ASSET_URI}")
            _wait_served(http, seeded["body"], versions[0], 240)  # the seeded champion
            alternate = versions[1:3]
            push = _series(af, mlflow, http, seeded["body"], int(asset["id"]), alternate, moves)
            deleted = _delete_webhook(mlflow)
            time.sleep(WEBHOOK_CACHE_S)  # MLflow's server delivers to the webhooks it cached until then
            print("webhook deleted: polling only from here", flush=True)
            poll = _series(af, mlflow, http, seeded["body"], int(asset["id"]), alternate, moves)
        return {
            "push": push,
            "poll": poll,
            "up_s": up_s,
            "register_s": register_s,
            "deleted_webhooks": deleted,
        }
    finally:
        stack.down(settings, purge=True)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def render(result: BenchResult) -> str:
    d = result.details
    lines = [
        "# Alias move → served",
        "",
        f"p50 over {d['moves']} hand moves of `challenger` (alternating v2/v3): push path (webhook → "
        f"relay → asset event) **{result.conveyor:.2f} s** vs polling only **{result.peer:.2f} s**, "
        f"ratio **{result.ratio:.2f}** (target p50 ≤ {TARGET_S:.0f} s, "
        f"{'pass' if result.passed else 'FAIL'}); measured {d['measured_at']}.",
        "",
        "Seconds after the move: the first asset event of `mlflow_registry_aliases` after it (and its "
        "source), then the deploy run that moved `champion` (from the ledger): its `queued_at` and "
        "`start_date`, its `plan` and `deploy` task instances, the server answering with the version "
        "(polled every 50 ms), the run's `end_date`. *runs*: deploy runs started after the move (the "
        "watcher's own report of a move the relay delivered starts one that finds nothing to do).",
        "",
    ]
    heads = " | ".join(head for _, head in STEPS)
    for path in ("push", "poll"):
        s = d[f"{path}_summary"]
        lines += [
            f"## {path}: p50 {_fmt(s['p50_served_s'])} s, p90 {_fmt(s['p90_served_s'])} s, "
            f"max {_fmt(s['max_served_s'])} s",
            "",
            f"| move | version | source | {heads} | runs | deploy tries |",
            "|---|---|---|" + "---|" * len(STEPS) + "---|---|",
        ]
        for i, r in enumerate(d[path], 1):
            cells = " | ".join(_fmt(r[key]) for key, _ in STEPS)
            lines.append(
                f"| {i} | v{r['version']} | {r['event_source']} | {cells} | {r['runs']} "
                f"| {r['deploy_tries']} |"
            )
        p50s = " | ".join(_fmt(s[f"p50_{key}"]) for key, _ in STEPS)
        lines += [f"| p50 | | | {p50s} | | |", ""]
    lines.append(
        f"Not in either time: stack up {_fmt(d['stack_up_s'])} s, registering 3 versions "
        f"{_fmt(d['register_s'])} s; benchmark wall time {_fmt(d['wall_s'])} s."
    )
    return "\n".join(lines) + "\n"


def run(quick: bool) -> list[BenchResult]:
    if quick:
        return []  # starting Airflow does not fit a smoke run; `python -m bench` runs it
    started = time.perf_counter()
    measured_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="bench-alias-", dir="/tmp") as tmp:
        measured = _measure(Path(tmp) / "stack", MOVES)
    push, poll = _summary(measured["push"]), _summary(measured["poll"])
    result = BenchResult(
        name="alias_latency[p50 move→served]",
        conveyor=push["p50_served_s"],
        peer=poll["p50_served_s"],
        unit="s",
        target=f"push p50 <= {TARGET_S:.0f} s",
        passed=push["p50_served_s"] <= TARGET_S,
        details={
            "measured_at": measured_at,
            "moves": MOVES,
            "push": measured["push"],
            "poll": measured["poll"],
            "push_summary": push,
            "poll_summary": poll,
            "stack_up_s": measured["up_s"],
            "register_s": measured["register_s"],
            "peer": "the same stack with its MLflow webhook deleted: the registry watcher's 5 s poll only",
            "wall_s": round(time.perf_counter() - started, 1),
        },
    )
    text = render(result)
    BREAKDOWN_FILE.parent.mkdir(parents=True, exist_ok=True)
    BREAKDOWN_FILE.write_text(text)
    print(text)
    return [result]


if __name__ == "__main__":
    child_main(_register_versions)
