"""Scaling: the training pipeline's stages on 10k, 100k and 1M rows of churn data, time and peak memory.

Each size runs in a fresh interpreter (``python -m bench.scaling <out.json> stages ...``; ``--quick``
runs its tiny sizes in one) that calls exactly what the training DAG's tasks call:
``pipeline.validate_data`` → ``train`` → ``evaluate_gate`` → ``compress`` → ``register``, against a
throwaway SQLite MLflow store (as ``bench/register.py`` does; each size is a DAG run of its own in it)
and a data root per size. Another interpreter lands the data beforehand, so generating it counts
towards neither the stage process's time nor its memory.

Measured per size: wall time of the five stages (libraries imported beforehand, so imports are not in
it), the stage process's peak RSS (``getrusage(RUSAGE_SELF)``, a high-water mark, also read after each
stage to show which one sets it) and its RSS just before the first stage, and the in-memory size of
the data window (``memory_usage(deep=True)`` of what ``load_window`` returns). The five stages share
one process here while Airflow runs each task in its own, so the peak is an upper bound of a task's.
Two comparisons, each against a peer derived in the same run:

* ``scaling[time slope]``: the log-log slope of stage time between the two largest sizes vs 1.0, i.e.
  linear growth (target: no worse than linear).
* ``scaling[memory]``: at the largest size, the memory the stages add (peak RSS minus the RSS before
  the first stage, i.e. without the interpreter and the imported libraries) vs the data window's
  in-memory size (target: at most 3 window-sizes). The raw peak RSS is in the details.

The trainer runs with the spec's settings except fewer epochs (a spec override through
``CONVEYOR_SPECS_DIR``), so 1M rows stay within minutes on two cores; every epoch sees every row, so
the override changes the constant, not the growth. The gate is called with ``force=True`` (the DAG's
``force`` param) so that even a weak tiny-size model goes on through compress and register.
Plots: ``bench/results/scaling_time.png`` and ``scaling_memory.png`` (a temporary folder with
``--quick``, so a smoke run leaves the repository alone).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import BenchResult, support

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "churn"
END = dt.date(2026, 11, 23)
#: Landed days per window (a DAG param, ``window_days``): 10 keeps every size a whole number per day.
WINDOW_DAYS = 10
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000, 5_000, 10_000)
EPOCHS, QUICK_EPOCHS = 2, 1
MAX_SLOPE = 1.0
MAX_MEMORY_RATIO = 3.0
STAGE_TIMEOUT_S = 900
DAG_ID = f"conveyor_train_{MODEL}"
#: What the stages import lazily; loaded before the baseline RSS and the clock start.
PRELOAD = (
    "conveyor.pipeline",
    "conveyor.data.contracts",
    "conveyor.data.landing",
    "conveyor.data.snapshot",
    "conveyor.registry.tracking",
    "conveyor.registry.versions",
    "conveyor.registry.aliases",
    "conveyor.training",
    "conveyor.training.keras_mlp",
    "conveyor.training.pyfunc_keras",
    "conveyor.evaluation.champion",
    "conveyor.compression",
    "conveyor.compression.tflite",
    "conveyor.compression.pyfunc_tflite",
    "great_expectations",
    "great_expectations.expectations",
    "mlflow",
    "mlflow.pyfunc",
    "tensorflow",
    "keras",
    "sklearn.metrics",
    "matplotlib.pyplot",
    "ai_edge_litert.interpreter",
)


def _child(command: str, payload: dict[str, Any], env: dict[str, str], root: Path) -> dict[str, Any]:
    """``python -m bench.scaling <out.json> <command> <payload>`` in ``root``; what it wrote."""
    args = [command, json.dumps(payload)]
    return support.run_child("bench.scaling", args, env, cwd=root, timeout=STAGE_TIMEOUT_S)


def _write_spec(specs: Path, epochs: int) -> None:
    """The shipped churn spec with ``epochs`` (everything else as shipped)."""
    import yaml

    from conveyor.config import DEFAULT_SPECS_DIR

    raw = yaml.safe_load((DEFAULT_SPECS_DIR / f"{MODEL}.yaml").read_text())
    raw["trainer"]["params"]["epochs"] = epochs
    specs.mkdir(parents=True, exist_ok=True)
    (specs / f"{MODEL}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _slope(x0: float, y0: float, x1: float, y1: float) -> float:
    """The log-log slope between two points (1.0 = linear)."""
    return math.log(y1 / y0) / math.log(x1 / x0)


def plot(points: list[dict[str, Any]], folder: Path) -> list[Path]:
    """``scaling_time.png`` and ``scaling_memory.png`` (log-log, with a linear reference) in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    rows = [p["rows"] for p in points]
    mib = 1024 * 1024
    curves = {
        "scaling_time.png": (
            "Training pipeline wall time (validate → register)",
            "seconds",
            {
                "all five stages": [p["stage_seconds"] for p in points],
                **{stage: [p["stages"][stage] for p in points] for stage in points[0]["stages"]},
            },
        ),
        "scaling_memory.png": (
            "Training pipeline memory",
            "MiB",
            {
                "peak RSS": [p["peak_rss_bytes"] / mib for p in points],
                "peak RSS - RSS before the stages": [p["added_rss_bytes"] / mib for p in points],
                "data window (memory_usage deep)": [p["window_bytes"] / mib for p in points],
            },
        ),
    }
    written = []
    for name, (title, unit, series) in curves.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for label, values in series.items():
            ax.plot(rows, values, marker="o", label=label)
        first = next(iter(series.values()))
        linear = [first[-1] * r / rows[-1] for r in rows]
        ax.plot(rows, linear, ls=":", color="grey", label="linear (slope 1) through the last point")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows in the data window")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(folder / name)
    return written


def run(quick: bool) -> list[BenchResult]:
    sizes, epochs = (QUICK_SIZES, QUICK_EPOCHS) if quick else (SIZES, EPOCHS)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        root = Path(tmp)
        specs = root / "specs"
        _write_spec(specs, epochs)
        env = support.clean_env(CONVEYOR_SPECS_DIR=str(specs), MPLBACKEND="Agg")
        _child("land", {"root": str(root), "sizes": list(sizes)}, env, root)
        # A full run gives every size a fresh process (its peak RSS is that size's alone); --quick, a
        # smoke run, runs the sizes one after another in one process to pay the imports once.
        groups = [list(sizes)] if quick else [[rows] for rows in sizes]
        points: list[dict[str, Any]] = []
        for group in groups:
            points.extend(_child("stages", {"root": str(root), "sizes": group}, env, root)["points"])
        plots = plot(points, root / "plots" if quick else RESULTS)
        plot_names = [p.name for p in plots] if quick else [str(p.relative_to(REPO)) for p in plots]

    small, large = points[-2], points[-1]
    slope = _slope(small["rows"], small["stage_seconds"], large["rows"], large["stage_seconds"])
    memory_ratio = large["added_rss_bytes"] / large["window_bytes"]
    marginal = (large["peak_rss_bytes"] - small["peak_rss_bytes"]) / (
        large["window_bytes"] - small["window_bytes"]
    )
    common = {
        "sizes": [p["rows"] for p in points],
        "epochs": epochs,
        "processes": "one for all sizes (--quick; peak RSS is cumulative)" if quick else "one per size",
        "per_size": points,
        "plots": plot_names,
        "benchmark_seconds": time.perf_counter() - started,
    }
    return [
        BenchResult(
            name="scaling[time slope]",
            conveyor=slope,
            peer=1.0,
            unit="log-log slope",
            target=f"<= {MAX_SLOPE} (linear)",
            passed=slope <= MAX_SLOPE,
            details={
                **common,
                "peer": "1.0: linear growth of stage time with rows",
                "between_rows": [small["rows"], large["rows"]],
                "stage_seconds": [small["stage_seconds"], large["stage_seconds"]],
                "slope_per_stage": {
                    stage: _slope(small["rows"], small["stages"][stage], large["rows"], seconds)
                    for stage, seconds in large["stages"].items()
                },
            },
        ),
        BenchResult(
            name="scaling[memory]",
            conveyor=large["added_rss_bytes"],
            peer=large["window_bytes"],
            unit="B",
            target=f"ratio <= {MAX_MEMORY_RATIO}",
            passed=memory_ratio <= MAX_MEMORY_RATIO,
            details={
                **common,
                "rows": large["rows"],
                "conveyor": "peak RSS of the stage process minus its RSS just before the first stage "
                "(interpreter and imported libraries excluded)",
                "peer": "the data window's in-memory size (pandas memory_usage(deep=True))",
                "peak_rss_bytes": large["peak_rss_bytes"],
                "baseline_rss_bytes": large["baseline_rss_bytes"],
                "raw_peak_ratio": large["peak_rss_bytes"] / large["window_bytes"],
                "marginal_ratio": marginal,
                "marginal_ratio_definition": "peak RSS growth ÷ window growth between the two largest "
                "sizes (every constant cancels)",
            },
        ),
    ]


# ---------------------------------------------------------------------------------------------------
# The child processes: ``python -m bench.scaling <out.json> land|stages '<json>'``.


def _use_home(root: Path, rows: int) -> Path:
    """Point this process's Conveyor settings at the size's own home and data root."""
    from conveyor.settings import get_settings

    home = root / f"rows-{rows}"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["CONVEYOR_HOME"] = str(home)
    os.environ["CONVEYOR_DATA_ROOT"] = (home / "data").as_uri()
    get_settings.cache_clear()
    return home


def _tracking_uri(root: Path) -> str:
    """One SQLite MLflow store for every size (each size is a DAG run of its own in it)."""
    return f"sqlite:///{root / 'mlflow.db'}"


def _land(args: dict[str, Any]) -> dict[str, Any]:
    """Land ``WINDOW_DAYS`` daily churn batches per size, each under its own data root."""
    from conveyor.config import load_spec
    from conveyor.data.generate import land_demo_data

    root = Path(args["root"])
    spec = load_spec(MODEL)
    for rows in args["sizes"]:
        _use_home(root, rows)
        land_demo_data(spec, days=WINDOW_DAYS, end_day=END, rows_per_day=rows // WINDOW_DAYS, seed=0)
    return {"landed": args["sizes"]}


def _stages(args: dict[str, Any]) -> dict[str, Any]:
    """Run the five stages once per size on its landed window: ``{"points": [timings and memory]}``.

    The process runs in ``args["root"]``, where MLflow's SQLite store keeps run artifacts (./mlruns).
    """
    import gc
    import importlib
    import logging

    import psutil

    logging.basicConfig(level=logging.WARNING)
    for name in PRELOAD:
        importlib.import_module(name)
    from conveyor.training.keras_mlp import import_keras

    import_keras()
    root = Path(args["root"])
    # Creating the store (MLflow's schema migrations: seconds) stays out of the timed stages, as with
    # a long-lived tracking server's database.
    from conveyor.registry.tracking import client_for

    client_for(_tracking_uri(root)).search_experiments()
    results = []
    for rows in args["sizes"]:
        _use_home(root, rows)
        gc.collect()
        baseline = psutil.Process().memory_info().rss
        results.append(_stages_once(_tracking_uri(root), f"bench__scaling_{rows}", baseline))
    return {"points": results}


def _stages_once(tracking_uri: str, dag_run_id: str, baseline: int) -> dict[str, Any]:
    import resource

    from conveyor import pipeline
    from conveyor.stages import RunContext

    timings: dict[str, float] = {}
    high_water: dict[str, int] = {}
    # force: register even if the gate rejects this run's challenger (the stages are what is measured)
    run = RunContext(
        model=MODEL,
        dag_id=DAG_ID,
        dag_run_id=dag_run_id,
        window_end=END.isoformat(),
        window_days=WINDOW_DAYS,
        force=True,
        justification="scaling benchmark: every stage runs whatever the gate decides",
    )

    def timed(stage: str, fn: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = fn(run, tracking_uri=tracking_uri, **kwargs)
        timings[stage] = time.perf_counter() - t0
        # The process's high-water mark after each stage: the stage where it jumps holds the peak.
        high_water[stage] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        return result

    validated = timed("validate_data", pipeline.validate_data)
    trained = timed("train", pipeline.train, validated=validated)
    decision = timed("evaluate_gate", pipeline.evaluate_gate, validated=validated, trained=trained)
    compressed = timed("compress", pipeline.compress, validated=validated, trained=trained)
    registered = timed(
        "register",
        pipeline.register,
        validated=validated,
        trained=trained,
        decision=decision,
        compressed=compressed,
    )
    peak = high_water["register"]

    # After the peak is read: the window as validate_data loaded it, for its in-memory size.
    from conveyor.config import load_spec
    from conveyor.data.landing import load_window

    window_bytes = int(load_window(load_spec(MODEL), END, WINDOW_DAYS).memory_usage(deep=True).sum())
    return {
        "rows": validated.rows,
        "stage_seconds": sum(timings.values()),
        "stages": timings,
        "rss_high_water_after_stage": high_water,
        "peak_rss_bytes": int(peak),
        "baseline_rss_bytes": int(baseline),
        "added_rss_bytes": int(peak - baseline),
        "window_bytes": window_bytes,
        "gate_action": decision.action,
        "compression": compressed.chosen,
        "registered_version": registered.version,
        "epochs_trained": trained.params.get("epochs_trained"),
    }


def _child_main(argv: list[str]) -> dict[str, Any]:
    command, payload = argv[0], json.loads(argv[1])
    return {"land": _land, "stages": _stages}[command](payload)


if __name__ == "__main__":
    support.child_main(_child_main)
