"""Compression: the TFLite variant Conveyor ships vs the uncompressed Keras model, both as MLflow pyfuncs.

A churn Keras MLP is trained with Conveyor's trainer on demo data and compressed with Conveyor's
``compress`` (TFLite dynamic range). Then both models are loaded back from MLflow the way the model
server loads them (``mlflow.pyfunc.load_model``): the variant runs in ``ai_edge_litert`` with numpy
preprocessing, the peer is the Keras model through its pyfunc (a traced ``tf.function``). Measured
in one child process, on the same evaluation rows:

* size: bytes of the files each serving runtime loads (``.keras`` vs ``.tflite`` + preprocessing);
* single-row ``predict`` latency, p50, the two models interleaved call by call;
* the spec's primary metric (ROC AUC for churn) on the evaluation rows, scored with ``conveyor.tasks``
  for the spec's task: the drop must stay within the spec's ``compression.max_metric_drop``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench import BenchResult
from bench.support import child_main, conveyor_env, percentile, run_child

MODEL = "churn"
TARGET_SIZE = 0.5
TARGET_P50 = 0.5


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _measure(args: list[str]) -> dict[str, Any]:
    """Child: train, compress, load both pyfuncs, time and score them."""
    import mlflow
    import numpy as np

    from bench.models import demo_frames, train_logged
    from conveyor import tasks
    from conveyor.compression import compress
    from conveyor.config import load_spec
    from conveyor.training.base import feature_frame

    root, quick = Path(args[0]), args[1] == "quick"
    spec = load_spec(MODEL)
    if quick:
        params = {**spec.trainer.params, "epochs": 2}
        spec = spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"params": params})})
    train_df, eval_df = demo_frames(spec, days=2 if quick else spec.data.window_days)
    t0 = time.perf_counter()
    _, trained = train_logged(
        spec, train_df, eval_df, f"sqlite:///{root / 'mlflow.db'}", "bench__compression"
    )
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = compress(spec, trained, train_df, eval_df, run_id=trained.run_id)
    compress_s = time.perf_counter() - t0
    variant = next(v for v in result.variants if v.method == "tflite_dynamic_range")

    keras_dir = Path(mlflow.artifacts.download_artifacts(trained.model_uri, dst_path=str(root / "keras")))
    tflite_dir = Path(mlflow.artifacts.download_artifacts(variant.model_uri, dst_path=str(root / "tflite")))
    models = {
        "conveyor": mlflow.pyfunc.load_model(str(tflite_dir)),
        "peer": mlflow.pyfunc.load_model(str(keras_dir)),
    }

    features = feature_frame(spec, eval_df)
    labels = tasks.encode_target(spec, eval_df[spec.data.target])
    primary = spec.gate.primary_metric
    score = {}
    for name, model in models.items():
        outputs = tasks.check_outputs(spec, model.predict(features), len(features), where=f"{name} model")
        score[name] = tasks.metric(spec, primary, labels, tasks.scores_of(spec, outputs))
    n = 100 if quick else 1000
    rows = [features.iloc[[i % len(features)]] for i in range(min(n, len(features)))]
    for row in rows[:20]:  # warm-up: first calls trace/allocate
        for model in models.values():
            model.predict(row)
    timings: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for i in range(n):
        row = rows[i % len(rows)]
        for name in order if i % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            models[name].predict(row)
            timings[name].append((time.perf_counter() - started) * 1000.0)
    batch = features.iloc[: min(len(features), 256)]
    batch_ms: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(10 if quick else 50):
        for name, model in models.items():
            started = time.perf_counter()
            model.predict(batch)
            batch_ms[name].append((time.perf_counter() - started) * 1000.0)
    return {
        "conveyor": {
            "size_bytes": variant.size_bytes,
            "model_dir_bytes": _dir_bytes(tflite_dir),
            "metric": score["conveyor"],
            "p50_ms": percentile(timings["conveyor"], 50),
            "p99_ms": percentile(timings["conveyor"], 99),
            "batch_p50_ms": float(np.median(batch_ms["conveyor"])),
        },
        "peer": {
            "size_bytes": trained.model_size_bytes,
            "model_dir_bytes": _dir_bytes(keras_dir),
            "metric": score["peer"],
            "p50_ms": percentile(timings["peer"], 50),
            "p99_ms": percentile(timings["peer"], 99),
            "batch_p50_ms": float(np.median(batch_ms["peer"])),
        },
        "batch_rows": len(batch),
        "single_row_calls": n,
        "n_train": trained.n_train,
        "n_eval": trained.n_eval,
        "epochs": spec.trainer.params.get("epochs"),
        "primary_metric": primary,
        "max_metric_drop": spec.compression.max_metric_drop,
        "accepted_by_conveyor": variant.accepted,
        "conveyor_reason": variant.reason,
        "train_s": round(train_s, 1),
        "compress_s": round(compress_s, 1),
    }


def run(quick: bool) -> list[BenchResult]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-compression-") as tmp:
        root = Path(tmp)
        env = conveyor_env(root / "home", f"sqlite:///{root / 'mlflow.db'}")
        m = run_child(
            "bench.compression", [str(root), "quick" if quick else "full"], env, cwd=root, timeout=900
        )
    c, p = m["conveyor"], m["peer"]
    details = {
        **m,
        "conveyor_runtime": "TFLite dynamic-range variant in ai_edge_litert via its MLflow pyfunc",
        "peer_runtime": "uncompressed Keras model via its MLflow pyfunc (tf.function)",
        "wall_s": round(time.perf_counter() - started, 1),
    }
    from conveyor import tasks

    primary = m["primary_metric"]
    drop = -tasks.improvement(primary, c["metric"], p["metric"])  # positive: the variant is worse
    budget = m["max_metric_drop"]
    return [
        BenchResult(
            name="compression[size]",
            conveyor=float(c["size_bytes"]),
            peer=float(p["size_bytes"]),
            unit="bytes",
            target=f"ratio <= {TARGET_SIZE}",
            passed=c["size_bytes"] / p["size_bytes"] <= TARGET_SIZE,
            details=details,
        ),
        BenchResult(
            name="compression[p50 single row]",
            conveyor=c["p50_ms"],
            peer=p["p50_ms"],
            unit="ms",
            target=f"ratio <= {TARGET_P50}",
            passed=c["p50_ms"] / p["p50_ms"] <= TARGET_P50,
            details=details,
        ),
        BenchResult(
            name=f"compression[{primary}]",
            conveyor=c["metric"],
            peer=p["metric"],
            unit="AUC" if primary == "roc_auc" else primary,
            target=f"drop <= {budget:g} (spec budget)",
            passed=drop <= budget,
            details={**details, f"{primary}_drop": drop},
        ),
    ]


if __name__ == "__main__":
    child_main(_measure)
