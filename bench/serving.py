"""Serving: Conveyor's model server vs ``mlflow models serve`` on the same registered model version.

One breast-cancer model (Conveyor's scikit-learn trainer, a models-from-code pyfunc) is registered in
a throwaway MLflow store and set as ``@champion``. Two servers load that same version, each a single
uvicorn process on a free port:

* Conveyor: ``uvicorn conveyor.serving.app:create_app --factory --loop uvloop --http httptools`` (as
  the stack runs it: input validation against the spec, Prometheus metrics, the prediction log
  written to the data root);
* the peer: ``mlflow models serve -m models:/<name>/<version> --env-manager local -w 1``.

Both get byte-identical ``POST /invocations`` bodies (MLflow's ``dataframe_split`` format) and must
give the same answers before their speed counts. Load comes from ``wrk`` (``-t2 -c8``: 8 connections
sending back to back; a Lua script cycles through the bodies and reports its latency percentiles).
Without ``wrk`` on the machine, the same load comes from 8 ``httpx`` clients in threads (slower
clients, so only the quick smoke run should ever use it). After a warm-up, rounds alternate between
the two servers so drifting machine load hits both alike:

* single-row requests: throughput (req/s), p50 and p99 per round; a server's figure is the median
  over its rounds;
* 1000-row requests: rows/s, against Conveyor's own single-row rows/s and against the peer's.

Targets (the issue's "Fast"): single-row throughput at least 5x the peer's and p99 at most 0.3x the
peer's; 1000-row batches at least 100x the rows/s of single-row requests. Every result is a
``conveyor / peer`` ratio where lower is better, so throughput is reported as time per request or per
row (``1 / rate``): ">= 5x the req/s" reads "ratio <= 0.2".
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import threading
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
CONNECTIONS = 8
WRK_THREADS = 2
BATCH_ROWS = 1000
#: Single-row throughput at least 5x the peer's (time per request at most 0.2x).
TARGET_THROUGHPUT = 0.2
#: Single-row p99 at most 0.3x the peer's.
TARGET_P99 = 0.3
#: The median is not in the issue; it must at least not be worse than the peer's.
TARGET_P50 = 1.0
#: 1000-row batches at least 100x the rows/s of single-row requests (time per row at most 0.01x).
TARGET_BATCH = 0.01
#: Batch rows/s against the peer's: for information, Conveyor should not be slower.
TARGET_BATCH_PEER = 1.0

_WRK_SCRIPT = """
local bodies = {%(bodies)s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\\nWRK_JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%f, \\"p99_us\\": %%f, "
      .. "\\"mean_us\\": %%f, \\"errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


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


def _probabilities(http: httpx.Client, url: str, body: bytes) -> list[float]:
    response = http.post(url, content=body, headers={"Content-Type": "application/json"})
    response.raise_for_status()
    predictions = response.json()["predictions"]
    return [float(p["probability"]) for p in predictions]


def _wrk_load(url: str, bodies: list[bytes], seconds: float, workdir: Path) -> dict[str, float]:
    """``wrk -t2 -c8`` POSTing ``bodies`` in turn for ``seconds``; its request count and percentiles."""
    script = workdir / f"wrk-{len(bodies)}-{len(bodies[0])}.lua"
    literals = ", ".join(f"[==[{b.decode()}]==]" for b in bodies)
    script.write_text(_WRK_SCRIPT % {"bodies": literals})
    duration = max(1, round(seconds))
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--timeout", "30s"]
    proc = subprocess.run(
        [*cmd, "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    return {
        "requests": float(raw["requests"]),
        "seconds": raw["duration_us"] / 1e6,
        "p50_ms": raw["p50_us"] / 1000.0,
        "p99_ms": raw["p99_us"] / 1000.0,
        "errors": float(raw["errors"]),
    }


def _httpx_load(url: str, bodies: list[bytes], seconds: float, workdir: Path) -> dict[str, float]:
    """The same load as :func:`_wrk_load` from :data:`CONNECTIONS` ``httpx`` clients in threads."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        mine: list[float] = []
        failed = 0
        with httpx.Client(timeout=60.0) as http:
            i = k
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    ok = http.post(
                        url, content=bodies[i % len(bodies)], headers={"Content-Type": "application/json"}
                    ).is_success
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - started)
                failed += not ok
                i += CONNECTIONS
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONNECTIONS) as pool:
        for future in [pool.submit(client, k) for k in range(CONNECTIONS)]:
            future.result()
    ms = [s * 1000.0 for s in latencies]
    return {
        "requests": float(len(ms)),
        "seconds": time.perf_counter() - started,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "errors": float(errors[0]),
    }


def run(quick: bool) -> list[BenchResult]:
    started = time.perf_counter()
    rounds = 1 if quick else 3
    single_s = 2.0 if quick else 10.0
    batch_s = 2.0 if quick else 10.0
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
            *_fast_uvicorn_options(),
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
                root,
                rounds=rounds,
                single_s=single_s,
                batch_s=batch_s,
            )
    details |= {
        "model": f"{model_uri} (scikit-learn Pipeline, models-from-code pyfunc)",
        "conveyor_server": " ".join(str(c) for c in conveyor_cmd[1:]),
        "peer_server": "mlflow models serve --env-manager local -w 1 (uvicorn)",
        "prepare_s": round(prepare_s, 1),
        "servers_ready_s": round(servers_ready_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    c, p = details["conveyor"], details["peer"]
    results = [
        (
            f"serving[single-row throughput, {CONNECTIONS} connections]",
            1000.0 / c["single_req_per_s"],
            1000.0 / p["single_req_per_s"],
            "ms/request",
            f"ratio <= {TARGET_THROUGHPUT} (>= {1 / TARGET_THROUGHPUT:g}x req/s)",
            TARGET_THROUGHPUT,
        ),
        (
            f"serving[p99 single row, {CONNECTIONS} connections]",
            c["single_p99_ms"],
            p["single_p99_ms"],
            "ms",
            f"ratio <= {TARGET_P99}",
            TARGET_P99,
        ),
        (
            "serving[p50 single row]",
            c["single_p50_ms"],
            p["single_p50_ms"],
            "ms",
            f"ratio <= {TARGET_P50}",
            TARGET_P50,
        ),
        (
            f"serving[{BATCH_ROWS}-row batches vs conveyor single rows]",
            1e6 / c["batch_rows_per_s"],
            1e6 / c["single_req_per_s"],
            "µs/row",
            f"ratio <= {TARGET_BATCH} (>= {1 / TARGET_BATCH:g}x rows/s)",
            TARGET_BATCH,
        ),
        (
            f"serving[{BATCH_ROWS}-row batches vs peer]",
            1e6 / c["batch_rows_per_s"],
            1e6 / p["batch_rows_per_s"],
            "µs/row",
            f"ratio <= {TARGET_BATCH_PEER} (information)",
            TARGET_BATCH_PEER,
        ),
    ]
    return [
        BenchResult(
            name=name,
            conveyor=conveyor,
            peer=peer,
            unit=unit,
            target=target,
            passed=conveyor / peer <= limit,
            details=details,
        )
        for name, conveyor, peer, unit, target, limit in results
    ]


def _fast_uvicorn_options() -> list[str]:
    """``--loop uvloop --http httptools`` where both are installed (as the stack runs the server)."""
    import importlib.util

    if importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools"):
        return ["--loop", "uvloop", "--http", "httptools"]
    return []


def _measure(
    urls: dict[str, str],
    model: dict[str, Any],
    workdir: Path,
    *,
    rounds: int,
    single_s: float,
    batch_s: float,
) -> dict[str, Any]:
    columns, rows = model["columns"], model["rows"]
    singles = [_body(columns, [row]) for row in rows[:64]]
    batches = [
        _body(columns, [rows[(k * BATCH_ROWS + i) % len(rows)] for i in range(BATCH_ROWS)]) for k in range(4)
    ]
    # Same model, same rows: both servers must give the same answers before their speed counts.
    with httpx.Client(timeout=60.0) as http:
        answers = {name: _probabilities(http, url, batches[0]) for name, url in urls.items()}
    max_diff = max(abs(a - b) for a, b in zip(answers["conveyor"], answers["peer"], strict=True))
    if max_diff > 1e-6:
        raise RuntimeError(f"the two servers disagree on the same rows (max |Δp| = {max_diff:.3g})")
    load = _wrk_load if shutil.which("wrk") else _httpx_load
    for url in urls.values():  # warm-up: first requests pay for lazy imports and allocations
        load(url, singles, 1.0, workdir)
        load(url, batches, 1.0, workdir)

    single: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    batch: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    order = list(urls)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            single[name].append(load(urls[name], singles, single_s, workdir))
            batch[name].append(load(urls[name], batches, batch_s, workdir))
    out: dict[str, Any] = {
        "load": f"wrk -t{WRK_THREADS} -c{CONNECTIONS}" if load is _wrk_load else f"httpx x{CONNECTIONS}",
        "rounds": rounds,
        "single_s_per_round": single_s,
        "batch_s_per_round": batch_s,
        "batch_rows": BATCH_ROWS,
        "outputs_max_abs_diff": max_diff,
    }
    for name in urls:
        errors = sum(m["errors"] for m in single[name] + batch[name])
        if errors:
            raise RuntimeError(f"{name}: {errors:.0f} failed requests under load; see its log")
        out[name] = {
            "single_req_per_s": statistics.median(m["requests"] / m["seconds"] for m in single[name]),
            "single_p50_ms": statistics.median(m["p50_ms"] for m in single[name]),
            "single_p99_ms": statistics.median(m["p99_ms"] for m in single[name]),
            "single_requests": sum(m["requests"] for m in single[name]),
            "batch_rows_per_s": statistics.median(
                m["requests"] * BATCH_ROWS / m["seconds"] for m in batch[name]
            ),
            "batch_p50_ms": statistics.median(m["p50_ms"] for m in batch[name]),
            "batch_requests": sum(m["requests"] for m in batch[name]),
            "rounds": {"single": single[name], "batch": batch[name]},
        }
    return out


if __name__ == "__main__":
    child_main(_prepare)
