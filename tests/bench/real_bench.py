"""Import modules of the repository's ``bench/`` package from tests.

Under pytest the name ``bench`` belongs to this test package (``tests/bench``), so ``import bench.x``
would look in the wrong folder. :func:`load` imports ``bench.<name>`` from the repository with the
``bench`` entries of ``sys.modules`` swapped out, then puts them back; the module it returns keeps
working (its globals were bound while it was imported).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _bench_entries() -> dict[str, ModuleType]:
    return {k: v for k, v in sys.modules.items() if k == "bench" or k.startswith("bench.")}


def load(name: str) -> ModuleType:
    """``bench.<name>`` from ``<repo>/bench``."""
    saved = _bench_entries()
    for key in saved:
        del sys.modules[key]
    sys.path.insert(0, str(REPO))
    try:
        return importlib.import_module(f"bench.{name}")
    finally:
        sys.path.remove(str(REPO))
        for key in _bench_entries():
            del sys.modules[key]
        sys.modules.update(saved)
