"""DAG parse cost: each file in ``dags/`` vs an empty stub DAG, measured the same way.

Every repetition is a fresh ``python -c`` subprocess that imports ``airflow.sdk`` first and then times
only the exec of the DAG file (importlib), so the shared Airflow import cost is excluded.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import BenchResult

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "dags"
MAX_RATIO = 1.5
MAX_SECONDS = 0.3

_TIMER = """
import importlib.util, sys, time
import airflow.sdk  # noqa: F401  (shared cost, excluded)
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("bench_parsed_dag", path)
module = importlib.util.module_from_spec(spec)
sys.modules["bench_parsed_dag"] = module
t0 = time.perf_counter()
spec.loader.exec_module(module)
print(repr(time.perf_counter() - t0))
"""

STUB = '''"""Empty stub DAG: the parse-cost baseline."""

from airflow.sdk import dag, task


@dag(schedule=None, doc_md="Stub DAG for the parse-cost benchmark.")
def bench_stub() -> None:
    @task
    def noop() -> None:
        return None

    noop()


bench_stub()
'''


def time_exec(path: Path, env: dict[str, str]) -> float:
    """Seconds to exec ``path`` after ``airflow.sdk`` is already imported, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _TIMER, str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"parsing {path} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def median_exec(path: Path, reps: int, env: dict[str, str]) -> float:
    return statistics.median(time_exec(path, env) for _ in range(reps))


def run(quick: bool) -> list[BenchResult]:
    reps = 1 if quick else 5
    files = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        env = dict(os.environ)
        env["CONVEYOR_HOME"] = str(Path(tmp) / "home")
        env["CONVEYOR_DATA_ROOT"] = (Path(tmp) / "home" / "data").as_uri()
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env.setdefault("GIT_PYTHON_REFRESH", "quiet")
        stub = Path(tmp) / "bench_stub_dag.py"
        stub.write_text(STUB)
        # --quick runs the interpreters side by side (a smoke run: speed over precision);
        # a full run measures them one at a time.
        with ThreadPoolExecutor(max_workers=len(files) + 1 if quick else 1) as pool:
            timings = list(pool.map(lambda p: median_exec(p, reps, env), [stub, *files]))
        baseline, per_file = timings[0], timings[1:]
        results = []
        for path, seconds in zip(files, per_file, strict=True):
            ratio = seconds / baseline if baseline > 0 else float("nan")
            results.append(
                BenchResult(
                    name=f"parse_cost[{path.name}]",
                    conveyor=seconds,
                    peer=baseline,
                    unit="s",
                    target=f"ratio <= {MAX_RATIO} and <= {MAX_SECONDS} s",
                    passed=ratio <= MAX_RATIO and seconds <= MAX_SECONDS,
                    details={"repetitions": reps, "peer": "empty stub DAG (one @dag, one @task)"},
                )
            )
    return results
