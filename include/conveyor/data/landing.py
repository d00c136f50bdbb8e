"""Reading a model's data window: by default the landing zone,
``landing/<model>/date=YYYY-MM-DD/<batch>.parquet`` under the data root; a spec's ``data.source`` may
name other day-partitioned files or a SQL query instead (:mod:`conveyor.data.sources`).

Batches are read as they landed. Nothing is coerced: a column stored as strings stays strings and a
column one file lacks is left out of the window, so the data contract (:mod:`conveyor.data.contracts`)
sees the problem and names it instead of training on patched data.
"""

from __future__ import annotations

import datetime as dt
import logging
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


class NoDataError(PermanentError, RuntimeError):
    """No landed batch in the requested window."""


class UnreadableBatchError(PermanentError):
    """A landed file is not readable Parquet (random bytes, a broken footer...), or a CSV source's file
    is not readable CSV.

    Attributes:
        model: The model spec's name.
        files: ``{uri: why}`` of every unreadable file in the window.
        file_format: ``Parquet`` or ``CSV``.
    """

    def __init__(self, model: str, files: dict[str, str], file_format: str = "Parquet") -> None:
        self.model = model
        self.files = files
        self.file_format = file_format
        listed = "; ".join(f"{uri}: {why}" for uri, why in files.items())
        super().__init__(
            f"{len(files)} landed file(s) of {model!r} are not readable {file_format}: {listed}. Nothing was "
            "validated or frozen. Replace or remove the file(s) and re-run validation (clear the task "
            "in Airflow); the validation report on the run lists them."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.model, self.files, self.file_format))


def landing_root(spec: ModelSpec) -> str:
    """``<data root>/landing/<model>``."""
    return storage.data_uri("landing", spec.name)


def _landed_files(spec: ModelSpec) -> list[tuple[dt.date, str]]:
    from conveyor.data.sources import partition_files

    return partition_files(landing_root(spec), "date", "parquet")


def landed_days(spec: ModelSpec) -> list[dt.date]:
    """Every date with at least one landed batch for ``spec``, oldest first (the landing folder's,
    whatever the spec's ``data.source``)."""
    return sorted({day for day, _ in _landed_files(spec)})


def load_window(
    spec: ModelSpec, end_day: dt.date, days: int | None = None, *, source_url: str | None = None
) -> pd.DataFrame:
    """Every batch landed for dates in ``(end_day - days, end_day]``, concatenated as landed.

    That is the landing folder's batches by default; a spec's ``data.source`` may name other files
    (``kind: files``: Parquet or CSV under ``<uri>/<partition>=YYYY-MM-DD/``, read the same way, CSV
    columns cast to the spec's types where the values allow) or a SQL query (``kind: sql``: run through
    ``source_url`` with ``:start``/``:end`` bound to the window's first and last day; no file
    attributes, a redacted description of the source in ``df.attrs[SOURCES_ATTR]``).

    Columns are the ones every file carries (in ``spec.columns`` order, then any extra ones): a column
    that some file lacks is dropped from the window and recorded in ``df.attrs[MISSING_COLUMNS_ATTR]``
    with the files that lack it, so validation reports the column as missing and names the files.
    Types are not coerced; a column whose type differs between files comes out as ``object``.
    ``df.attrs[SOURCES_ATTR]`` lists the files read.

    Args:
        spec: the model.
        end_day: the newest date included.
        days: the window length in days; ``spec.data.window_days`` when ``None``.
        source_url: a SQL source's SQLAlchemy URL (credentials included; never logged), resolved from
            its Airflow connection by the caller; ignored by the other sources.

    Raises:
        NoDataError: no file lands in the window, or the query returns no rows (the message names the
            model, window and source).
        UnreadableBatchError: a file in the window is not readable Parquet/CSV (every such file named).
        DataSourceError: a SQL source without ``source_url``, or whose database or query fails.
        ValueError: ``days`` < 1.
    """
    from conveyor.data import sources

    days = spec.data.window_days if days is None else days
    if days < 1:
        raise ValueError(f"load_window needs days >= 1, got {days}")
    start = end_day - dt.timedelta(days=days - 1)
    source = spec.data.source
    if source.kind == "sql":
        if not source_url:
            raise sources.DataSourceError(
                f"model {spec.name!r} reads its data with a SQL query through the Airflow connection "
                f"{source.conn_id!r}, but no URL for it was given: resolve the connection (the DAG's "
                "validate_data task does) and pass it as source_url"
            )
        window = sources.read_sql(spec, source, source_url, start, end_day)
        log.info(
            "loaded %d rows for %s from SQL connection %s in %s..%s",
            len(window),
            spec.name,
            source.conn_id,
            start,
            end_day,
        )
        return window
    if source.kind == "files":
        every = sources.partition_files(source.uri, source.partition, source.format)
        files = [(day, uri) for day, uri in every if start <= day <= end_day]
        if not files:
            latest = f"; latest day there is {every[-1][0]}" if every else "; there are none yet"
            raise NoDataError(
                f"no data for model {spec.name!r} in window {start}..{end_day} ({days} days): no "
                f"{source.format} files match {sources.files_description(source)}{latest}. Pick another "
                "end day, or check data.source in the spec."
            )
        window = sources.read_partitions(spec, files, source.format, source.options)
        log.info(
            "loaded %d rows for %s from %d files in %s..%s (%s)",
            len(window),
            spec.name,
            len(files),
            start,
            end_day,
            source.uri,
        )
        return window
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

    window = sources.read_partitions(spec, files, "parquet")
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
