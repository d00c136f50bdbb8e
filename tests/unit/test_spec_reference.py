"""The README's spec reference lists every field of ``ModelSpec`` (so the table cannot fall behind)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from conveyor.config import ModelSpec

README = Path(__file__).resolve().parents[2] / "README.md"
#: Sections the table describes in one row (their sub-fields are listed in that row's text).
WHOLE = {"data.source", "numeric_features", "categorical_features", "tuning", "gate.slices"}


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = [
            a
            for a in (field.annotation, *typing.get_args(field.annotation))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if nested and path not in WHOLE:
            out += _fields(nested[0], f"{path}.")
        else:
            out.append(path)
    return out


def test_every_spec_field_is_in_the_readme_reference() -> None:
    text = README.read_text()
    table = text[text.index("**Spec reference.**") :]
    table = table[: table.index("\n\n", table.index("| field |"))]
    listed = set()
    for row in table.splitlines()[2:]:
        cell = row.split("|")[1] if row.startswith("|") else ""
        listed |= {name.rstrip("[]") for name in re.findall(r"`([\w.\[\]]+)`", cell)}
        # "`data.min_rows` / `data.max_rows`" and "`gate.confidence` / `gate.n_boot`" list two
    missing = [f for f in _fields(ModelSpec) if f not in listed]
    assert not missing, f"README's spec reference lacks {missing}"
