"""Spec files for scenario tests: a shipped spec, renamed, with some sections changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_spec(
    specs: Path, name: str, registered: str, *, base: str = "breast_cancer", **sections: Any
) -> Path:
    """Write ``<specs>/<name>.yaml``: the shipped ``base`` spec as model ``name`` (no schedule).

    Each keyword replaces fields of that top-level section (``gate={"floors": {...}}`` keeps the
    other gate fields); a non-dict value replaces the section whole. Unless a test gives its own
    ``trainer`` (or ``tuning``), the spec trains the quick built-in scikit-learn pipeline untuned
    (the shipped breast-cancer spec runs a tuned user entrypoint).
    """
    from conveyor.config import DEFAULT_SPECS_DIR

    raw = yaml.safe_load((DEFAULT_SPECS_DIR / f"{base}.yaml").read_text())
    raw.update({"name": name, "registered_model_name": registered, "schedule": None})
    raw.setdefault("task", "binary")
    if raw["task"] == "binary":
        raw["trainer"] = {"kind": "sklearn_pipeline", "seed": 7, "params": {"C": 1.0, "max_iter": 500}}
        raw.pop("tuning", None)
    for section, value in sections.items():
        current = raw.get(section)
        merge = isinstance(current, dict) and isinstance(value, dict)
        raw[section] = {**current, **value} if merge else value
    path = specs / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
