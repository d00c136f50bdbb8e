"""Reading the landing zone: ``landing/<model>/date=YYYY-MM-DD/<batch>.parquet`` under the data root.

Batches are read as they landed. Nothing is coerced: a column stored as strings stays strings and a
column one file lacks is left out of the window, so the data contract (:mod:`conveyor.data.contracts`)
sees the problem and names it instead of training on patched data.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import TYPE_CHECKING

from conveyor.config import ModelSpec
from conveyor.data import storage
from conveyor.errors import PermanentError
from conveyor.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: ``DataFrame.attrs`` key: the URIs a window was read from, oldest first.
SOURCES_ATTR = "conveyor.sources"
#: ``DataFrame.attrs`` key: ``{column: [URIs of the files that lack it]}`` for columns some files lack.
MISSING_COLUMNS_ATTR = "conveyor.missing_columns"
#: ``DataFrame.attrs`` key: ``[[uri, partition day (ISO), row count], ...]`` in row order, so the
#: contract can check each row's event time against the ``date=`` folder it landed in.
PARTITIONS_ATTR = "conveyor.partitions"

_DATE_DIR = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


class NoDataError(PermanentError, RuntimeError):
    """No landed batch in the requested window."""


class UnreadableBatchError(PermanentError):
    """A landed file is not readable Parquet (random bytes, a broken footer...).

    Attributes:
        model: The model spec's name.
        files: ``{uri: why}`` of every unreadable file in the window.
    """

    def __init__(self, model: str, files: dict[str, str]) -> None:
        self.model = model
        self.files = files
        listed = "; ".join(f"{uri}: {why}" for uri, why in files.items())
        super().__init__(
            f"{len(files)} landed file(s) of {model!r} are not readable Parquet: {listed}. Nothing was "
            "validated or frozen. Replace or remove the file(s) and re-run validation (clear the task "
            "in Airflow); the validation report on the run lists them."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.model, self.files))


def landing_root(spec: ModelSpec) -> str:
    """``<data root>/landing/<model>``."""
    return storage.data_uri("landing", spec.name)


def _landed_files(spec: ModelSpec) -> list[tuple[dt.date, str]]:
    root = landing_root(spec)
    if not storage.exists(root):
        return []
    found: list[tuple[dt.date, str]] = []
    for uri in storage.list_uris(storage.join_uri(root, "date=*", "*.parquet")):
        match = _DATE_DIR.search(uri)
        if match is None:
            continue
        try:
            day = dt.date.fromisoformat(match.group(1))
        except ValueError:
            log.warning("ignoring landing file with an invalid date folder: %s", uri)
            continue
        found.append((day, uri))
    return sorted(found)


def landed_days(spec: ModelSpec) -> list[dt.date]:
    """Every date with at least one landed batch for ``spec``, oldest first."""
    return sorted({day for day, _ in _landed_files(spec)})


def load_window(spec: ModelSpec, end_day: dt.date, days: int | None = None) -> pd.DataFrame:
    """Every batch landed for dates in ``(end_day - days, end_day]``, concatenated as landed.

    Columns are the ones every file carries (in ``spec.columns`` order, then any extra ones): a column
    that some file lacks is dropped from the window and recorded in ``df.attrs[MISSING_COLUMNS_ATTR]``
    with the files that lack it, so validation reports the column as missing and names the files.
    Types are not coerced; a column whose type differs between files comes out as ``object``.
    ``df.attrs[SOURCES_ATTR]`` lists the files read.

    Args:
        spec: the model.
        end_day: the newest date included.
        days: the window length in days; ``spec.data.window_days`` when ``None``.

    Raises:
        NoDataError: no file lands in the window (the message names the model, window and root).
        UnreadableBatchError: a file in the window is not readable Parquet (every such file named).
        ValueError: ``days`` < 1.
    """
    import pandas as pd

    days = spec.data.window_days if days is None else days
    if days < 1:
        raise ValueError(f"load_window needs days >= 1, got {days}")
    start = end_day - dt.timedelta(days=days - 1)
    files = [(day, uri) for day, uri in _landed_files(spec) if start <= day <= end_day]
    if not files:
        known = landed_days(spec)
        latest = f"; latest landed day is {known[-1]}" if known else "; nothing has landed for it yet"
        raise NoDataError(
            f"no landed data for model {spec.name!r} in window {start}..{end_day} ({days} days) under "
            f"{landing_root(spec)}{latest}. Land batches at "
            f"landing/{spec.name}/date=YYYY-MM-DD/<batch>.parquet (e.g. `conveyor demo`) or pick "
            "another end day."
        )

    frames = []
    unreadable: dict[str, str] = {}
    for _, uri in files:
        try:
            frames.append(storage.read_parquet(uri))
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            unreadable[uri] = f"{type(exc).__name__}: {str(exc)[:300]}"
    if unreadable:
        raise UnreadableBatchError(spec.name, unreadable)
    everywhere = set.intersection(*(set(f.columns) for f in frames))
    seen: dict[str, None] = {}
    for frame in frames:
        seen.update(dict.fromkeys(str(c) for c in frame.columns))
    missing = {
        column: [uri for (_, uri), f in zip(files, frames, strict=True) if column not in f.columns]
        for column in seen
        if column not in everywhere
    }
    if missing:
        log.warning("landed files disagree on columns for %s: %s", spec.name, missing)
    ordered = [c for c in spec.columns if c in everywhere] + [
        c for c in seen if c in everywhere and c not in spec.columns
    ]
    window = pd.concat([f[ordered] for f in frames], ignore_index=True)
    window.attrs[SOURCES_ATTR] = [uri for _, uri in files]
    window.attrs[MISSING_COLUMNS_ATTR] = missing
    window.attrs[PARTITIONS_ATTR] = [
        [uri, day.isoformat(), len(frame)] for (day, uri), frame in zip(files, frames, strict=True)
    ]
    log.info(
        "loaded %d rows for %s from %d files in %s..%s (root %s)",
        len(window),
        spec.name,
        len(files),
        start,
        end_day,
        get_settings().data_root,
    )
    return window
