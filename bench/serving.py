"""Serving: Conveyor's model server vs ``mlflow models serve`` on the same registered model version.

One breast-cancer model (Conveyor's scikit-learn trainer, a models-from-code pyfunc) is registered in
a throwaway MLflow store and set as ``@champion``. Two servers load that same version, each a single
uvicorn process on a free port:

* Conveyor: ``uvicorn conveyor.serving.app:create_app --factory`` (as the stack runs it: input
  validation against the spec, Prometheus metrics, the prediction log written to the data root);
* the peer: ``mlflow models serve -m models:/<name>/<version> --env-manager local -w 1``.

Both get byte-identical ``POST /invocations`` bodies (MLflow's ``dataframe_split`` format). After a
warm-up, rounds alternate between the two servers so drifting machine load hits both alike:

* single-row latency: one client, requests back to back; p50 and p99;
* throughput: 100-row batches from 4 concurrent clients; reported as milliseconds per batch
  (wall time ÷ batches) so that, like every ratio here, lower is better (rows/s in the details).

Targets: Conveyor's extras (spec validation, metrics, the prediction log) may cost at most 10% at
the median and per batch, 25% at p99.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench import BenchResult
from bench.support import (
    BIN,
    LOCALHOST,
    REPO,
    Server,
    child_main,
    clean_env,
    conveyor_env,
    free_port,
    percentile,
    run_child,
    running_together,
)

MODEL = "breast_cancer"
BATCH_ROWS = 100
CLIENTS = 4
# Both servers run the same pyfunc in one uvicorn process; Conveyor also validates every request
# against the spec, counts it in Prometheus metrics and writes every prediction to the prediction log.
# Targets: those extras cost at most 10% at the median and per batch, 25% at the tail.
TARGET_P50 = 1.1
TARGET_P99 = 1.25
TARGET_BATCH = 1.1


def _prepare(args: list[str]) -> dict[str, Any]:
    """Child: train and register the model in ``<root>/mlflow.db``; return what the load needs."""
    from bench.models import demo_frames, register_champion, train_logged
    from conveyor.config import load_spec
    from conveyor.training.base import feature_frame

    root = Path(args[0])
    spec = load_spec(MODEL)
    train_df, eval_df = demo_frames(spec, days=30)
    client, trained = train_logged(
        spec, train_df, eval_df, f"sqlite:///{root / 'mlflow.db'}", "bench__serving"
    )
    version = register_champion(client, spec, trained, "bench__serving")
    features = feature_frame(spec, eval_df)
    return {
        "registered_model_name": spec.registered_model_name,
        "version": version,
        "columns": list(features.columns),
        "rows": features.astype(object).where(features.notna(), None).values.tolist(),
    }


def _body(columns: list[str], rows: list[list[Any]]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()


def _post(http: httpx.Client, url: str, body: bytes) -> float:
    started = time.perf_counter()
    response = http.post(url, content=body, headers={"Content-Type": "application/json"})
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:500]}")
    return elapsed


def _probabilities(http: httpx.Client, url: str, body: bytes) -> list[float]:
    response = http.post(url, content=body, headers={"Content-Type": "application/json"})
    response.raise_for_status()
    predictions = response.json()["predictions"]
    return [float(p["probability"]) for p in predictions]


def _latencies(url: str, bodies: list[bytes], n: int) -> list[float]:
    with httpx.Client(timeout=60.0) as http:
        return [_post(http, url, bodies[i % len(bodies)]) for i in range(n)]


def _throughput_seconds(url: str, bodies: list[bytes], n_batches: int) -> float:
    """Wall seconds for ``n_batches`` batch requests spread over :data:`CLIENTS` concurrent clients."""

    def client(k: int) -> None:
        with httpx.Client(timeout=120.0) as http:
            for i in range(k, n_batches, CLIENTS):
                _post(http, url, bodies[i % len(bodies)])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        for future in [pool.submit(client, k) for k in range(CLIENTS)]:
            future.result()
    return time.perf_counter() - started


def run(quick: bool) -> list[BenchResult]:
    started = time.perf_counter()
    rounds = 2 if quick else 8
    single_per_round = 15 if quick else 150
    batches_per_round = 8 if quick else 40
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        store = f"sqlite:///{root / 'mlflow.db'}"
        env = conveyor_env(root / "home", store)
        t0 = time.perf_counter()
        model = run_child("bench.serving", [str(root)], env, cwd=root, timeout=600)
        prepare_s = time.perf_counter() - t0

        specs = root / "specs"
        specs.mkdir()
        (specs / f"{MODEL}.yaml").write_text((REPO / "include" / "specs" / f"{MODEL}.yaml").read_text())
        conveyor_port, peer_port = free_port(), free_port()
        conveyor_url = f"http://{LOCALHOST}:{conveyor_port}"
        peer_url = f"http://{LOCALHOST}:{peer_port}"
        model_uri = f"models:/{model['registered_model_name']}/{model['version']}"
        conveyor_cmd = [
            BIN / "uvicorn",
            "conveyor.serving.app:create_app",
            "--factory",
            "--host",
            LOCALHOST,
            "--port",
            str(conveyor_port),
            "--no-access-log",
        ]
        peer_cmd = [
            BIN / "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "-w",
            "1",
            "-h",
            LOCALHOST,
            "-p",
            str(peer_port),
        ]
        t0 = time.perf_counter()
        # Both start at once (their start-up is not what is measured), each in a session of its own.
        with running_together(
            Server(
                conveyor_cmd,
                {**env, "CONVEYOR_SPECS_DIR": str(specs), "CONVEYOR_MODEL_SERVER_TOKEN": "bench"},
                root,
                root / "conveyor.log",
                f"{conveyor_url}/health/ready",
            ),
            Server(
                peer_cmd, clean_env(MLFLOW_TRACKING_URI=store), root, root / "peer.log", f"{peer_url}/ping"
            ),
        ):
            servers_ready_s = time.perf_counter() - t0
            details = _measure(
                {"conveyor": f"{conveyor_url}/invocations", "peer": f"{peer_url}/invocations"},
                model,
                rounds=rounds,
                single_per_round=single_per_round,
                batches_per_round=batches_per_round,
            )
    details |= {
        "model": f"{model_uri} (scikit-learn Pipeline, models-from-code pyfunc)",
        "peer_server": "mlflow models serve --env-manager local -w 1 (uvicorn)",
        "prepare_s": round(prepare_s, 1),
        "servers_ready_s": round(servers_ready_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    c, p = details["conveyor"], details["peer"]
    results = [
        ("serving[p50 single row]", c["p50_ms"], p["p50_ms"], "ms", TARGET_P50),
        ("serving[p99 single row]", c["p99_ms"], p["p99_ms"], "ms", TARGET_P99),
        (
            f"serving[{BATCH_ROWS}-row batches, {CLIENTS} clients]",
            c["ms_per_batch"],
            p["ms_per_batch"],
            "ms/batch",
            TARGET_BATCH,
        ),
    ]
    return [
        BenchResult(
            name=name,
            conveyor=conveyor,
            peer=peer,
            unit=unit,
            target=f"ratio <= {target}",
            passed=conveyor / peer <= target,
            details=details,
        )
        for name, conveyor, peer, unit, target in results
    ]


def _measure(
    urls: dict[str, str], model: dict[str, Any], *, rounds: int, single_per_round: int, batches_per_round: int
) -> dict[str, Any]:
    columns, rows = model["columns"], model["rows"]
    singles = [_body(columns, [row]) for row in rows]
    batches = [
        _body(columns, [rows[(k * BATCH_ROWS + i) % len(rows)] for i in range(BATCH_ROWS)]) for k in range(8)
    ]
    # Same model, same rows: both servers must give the same answers before their speed counts.
    with httpx.Client(timeout=60.0) as http:
        answers = {name: _probabilities(http, url, batches[0]) for name, url in urls.items()}
    max_diff = max(abs(a - b) for a, b in zip(answers["conveyor"], answers["peer"], strict=True))
    if max_diff > 1e-6:
        raise RuntimeError(f"the two servers disagree on the same rows (max |Δp| = {max_diff:.3g})")
    for url in urls.values():  # warm-up: first requests pay for lazy imports and allocations
        _latencies(url, singles, 20)
        _throughput_seconds(url, batches, 2 * CLIENTS)

    latencies: dict[str, list[float]] = {name: [] for name in urls}
    batch_seconds: dict[str, float] = dict.fromkeys(urls, 0.0)
    order = list(urls)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            latencies[name] += _latencies(urls[name], singles, single_per_round)
            batch_seconds[name] += _throughput_seconds(urls[name], batches, batches_per_round)
    n_batches = rounds * batches_per_round
    out: dict[str, Any] = {
        "rounds": rounds,
        "single_row_requests": rounds * single_per_round,
        "batch_requests": n_batches,
        "outputs_max_abs_diff": max_diff,
    }
    for name in urls:
        ms = [s * 1000.0 for s in latencies[name]]
        out[name] = {
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "mean_ms": statistics.fmean(ms),
            "ms_per_batch": batch_seconds[name] * 1000.0 / n_batches,
            "rows_per_s": n_batches * BATCH_ROWS / batch_seconds[name],
        }
    return out


if __name__ == "__main__":
    child_main(_prepare)
