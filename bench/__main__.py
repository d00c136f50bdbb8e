"""``python -m bench [--quick] [--only NAME] [--results-dir DIR]``: run benchmarks, print ratios."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import BenchResult, registry

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "nan"


def render_table(results: list[BenchResult]) -> Table:
    table = Table(title="Conveyor benchmarks (conveyor ÷ peer, same run)")
    for col in ("benchmark", "conveyor", "peer", "ratio", "target", "result"):
        table.add_column(col, no_wrap=True)
    for r in results:
        table.add_row(
            escape(r.name),
            f"{_fmt(r.conveyor)} {r.unit}",
            f"{_fmt(r.peer)} {r.unit}",
            _fmt(r.ratio),
            escape(r.target),
            "[green]pass[/green]" if r.passed else "[red]FAIL[/red]",
        )
    return table


def render_markdown(results: list[BenchResult], meta: dict[str, object]) -> str:
    lines = [
        "# Conveyor benchmarks",
        "",
        f"{meta['started']} · quick={meta['quick']} · Python {meta['python']} · {meta['seconds']:.1f} s",
        "",
        "| benchmark | conveyor | peer | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {_fmt(r.conveyor)} {r.unit} | {_fmt(r.peer)} {r.unit} | {_fmt(r.ratio)} "
            f"| {r.target} | {'pass' if r.passed else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and repetitions (smoke test)")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)

    benchmarks = registry()
    names = args.only or list(benchmarks)
    unknown = sorted(set(names) - set(benchmarks))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {sorted(benchmarks)}")

    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    results: list[BenchResult] = []
    if args.quick:
        # A smoke run: the benchmarks run side by side (parse_cost mostly waits on subprocesses).
        # Import the libraries the benchmarks share once, here: two threads importing modules that
        # import each other (narwhals, via scikit-learn and Great Expectations) can deadlock.
        for module in ("narwhals.stable.v1", "narwhals.stable.v2", "sklearn.base"):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = [pool.submit(benchmarks[name], True) for name in names]
            for future in futures:
                results.extend(future.result())
    else:
        for name in names:
            results.extend(benchmarks[name](False))
    meta: dict[str, object] = {
        "started": started,
        "quick": args.quick,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seconds": time.perf_counter() - t0,
    }

    Console(width=max(Console().width, 120)).print(render_table(results))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": [r.to_json() for r in results]}
    (args.results_dir / "latest.json").write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    (args.results_dir / "latest.md").write_text(render_markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
