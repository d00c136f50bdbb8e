"""Reading a data window from a spec's ``data.source``: day-partitioned files or a SQL query.

:func:`conveyor.data.landing.load_window` picks the reader. Files (the landing folder included) are
read per ``<key>=YYYY-MM-DD`` partition with the same ``df.attrs`` whatever their format, so the
contract's file checks (empty days, event times outside their partition, missing columns) apply alike.
A SQL window has no files: it carries a redacted description of its source and no partitions.

CSV has no types, and a database may hand back ``Decimal`` or ``date`` objects: :func:`conform` turns
such ``object`` columns into the spec's types where the values allow, so the contract judges values,
not how they were stored. A value that is not a number stays as it was (the column stays ``object``),
and the contract's type check names its rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from conveyor.config import FilesSource, ModelSpec, SqlSource
from conveyor.data import storage
from conveyor.data.landing import (
    MISSING_COLUMNS_ATTR,
    PARTITIONS_ATTR,
    SOURCES_ATTR,
    NoDataError,
    UnreadableBatchError,
)
from conveyor.errors import PermanentError
from conveyor.registry.session import redact

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Each format's file suffix and its name in messages.
_SUFFIX = {"parquet": ".parquet", "csv": ".csv"}
_FORMAT_NAME = {"parquet": "Parquet", "csv": "CSV"}


class DataSourceError(PermanentError):
    """The spec's data source could not be read: no URL for a SQL source, an unreachable database,
    refused credentials, a failing query. The message never holds the connection's password."""


def partition_files(root: str, key: str, fmt: str) -> list[tuple[dt.date, str]]:
    """``[(day, uri), ...]`` of the ``<root>/<key>=YYYY-MM-DD/*<suffix>`` files, sorted by day then URI.

    Folders whose value is not a date are skipped (with a warning when it looks like one).
    """
    if not storage.exists(root):
        return []
    folder = re.compile(rf"/{re.escape(key)}=(\d{{4}}-\d{{2}}-\d{{2}})/")
    found: list[tuple[dt.date, str]] = []
    for uri in storage.list_uris(storage.join_uri(root, f"{key}=*", f"*{_SUFFIX[fmt]}")):
        match = folder.search(uri)
        if match is None:
            continue
        try:
            day = dt.date.fromisoformat(match.group(1))
        except ValueError:
            log.warning("ignoring a file with an invalid %s= folder: %s", key, uri)
            continue
        found.append((day, uri))
    return sorted(found)


def read_partitions(
    spec: ModelSpec, files: list[tuple[dt.date, str]], fmt: str, options: dict[str, Any] | None = None
) -> pd.DataFrame:
    """The files concatenated, with :data:`SOURCES_ATTR`, :data:`MISSING_COLUMNS_ATTR` and
    :data:`PARTITIONS_ATTR` set.

    Columns are the ones every file carries (``spec.columns`` order, then extra ones); a column some
    file lacks is left out and recorded with the files that lack it. Parquet is read as stored; CSV is
    read as text and :func:`conform`-ed to the spec's types.

    Raises:
        UnreadableBatchError: a file is not readable in ``fmt`` (every such file named).
    """
    import pandas as pd

    frames = []
    unreadable: dict[str, str] = {}
    for _, uri in files:
        try:
            frames.append(_read_file(uri, fmt, options or {}))
        except (OSError, ValueError) as exc:  # ArrowInvalid, pandas' ParserError, UnicodeDecodeError
            unreadable[uri] = f"{type(exc).__name__}: {str(exc)[:300]}"
    if unreadable:
        raise UnreadableBatchError(spec.name, unreadable, _FORMAT_NAME[fmt])
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
        log.warning("%s files disagree on columns for %s: %s", _FORMAT_NAME[fmt], spec.name, missing)
    ordered = [c for c in spec.columns if c in everywhere] + [
        c for c in seen if c in everywhere and c not in spec.columns
    ]
    window = pd.concat([f[ordered] for f in frames], ignore_index=True)
    if fmt == "csv":
        window = conform(spec, window)
    window.attrs[SOURCES_ATTR] = [uri for _, uri in files]
    window.attrs[MISSING_COLUMNS_ATTR] = missing
    window.attrs[PARTITIONS_ATTR] = [
        [uri, day.isoformat(), len(frame)] for (day, uri), frame in zip(files, frames, strict=True)
    ]
    return window


def _read_file(uri: str, fmt: str, options: dict[str, Any]) -> pd.DataFrame:
    if fmt == "parquet":
        return storage.read_parquet(uri)
    import pandas as pd

    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as fh:
        # As text: types come from the spec (conform), not from what pandas guesses per file.
        return pd.read_csv(fh, **{"dtype": str, **options})


def files_description(source: FilesSource) -> str:
    """Where a files source's partitions are looked for, for messages."""
    return storage.join_uri(source.uri, f"{source.partition}=YYYY-MM-DD", f"*{_SUFFIX[source.format]}")


def conform(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its ``object`` columns of numeric features made numbers, and an ``object`` event time
    column made ``datetime64`` (an unparseable time becomes null, which the contract's not-null check
    reports). A value that is not a number is kept as it is, so the column stays ``object`` and the
    contract's type check fails on those rows.

    The target is made numbers for a regression model and for integer class labels (``"3"`` in a CSV
    is the class ``3``); string class labels stay as they are (``"01"`` is not ``1``)."""
    import pandas as pd

    from conveyor.pyfunc_outputs import integer_labels

    numeric = [f.name for f in spec.numeric_features]
    if spec.task == "regression" or integer_labels(spec.classes):
        numeric.append(spec.data.target)
    changed: dict[str, Any] = {}
    for column in numeric:
        if column in df.columns and df[column].dtype == object:
            changed[column] = _numbers(df[column])
    time_column = spec.data.event_time_column
    if time_column in df.columns and df[time_column].dtype == object:
        changed[time_column] = pd.to_datetime(df[time_column], errors="coerce", format="ISO8601")
    if not changed:
        return df
    out = df.assign(**changed)
    out.attrs = dict(df.attrs)
    return out


def _numbers(values: pd.Series) -> pd.Series:
    import pandas as pd

    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna() & values.notna()
    if not bad.any():
        return parsed
    mixed = parsed.astype(object)
    mixed[bad] = values[bad]
    return mixed


def read_sql(spec: ModelSpec, source: SqlSource, url: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """The rows ``source.query`` returns with ``:start``/``:end`` bound to the window's days.

    ``df.attrs[SOURCES_ATTR]`` is a description of the query's source with the password redacted;
    there are no partitions (the file checks do not apply).

    Raises:
        DataSourceError: the database cannot be reached, refuses the credentials, or the query fails.
        NoDataError: the query returned no rows.
    """
    import pandas as pd
    import sqlalchemy as sa

    where = f"connection {source.conn_id!r} ({redact(url)})"
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                df = pd.read_sql_query(sa.text(source.query), conn, params={"start": start, "end": end})
        finally:
            engine.dispose()
    except (sa.exc.SQLAlchemyError, ImportError) as exc:
        # raise from None: the driver's exception and its arguments stay out of the traceback.
        raise DataSourceError(
            f"could not read the data window {start}..{end} of model {spec.name!r} through {where}: "
            f"{_scrub(f'{type(exc).__name__}: {exc}', url)[:1500]}. Check the Airflow connection "
            f"{source.conn_id!r} (host, port, database, login, password) and data.source.query."
        ) from None
    if df.empty:
        raise NoDataError(
            f"no data for model {spec.name!r} in window {start}..{end}: data.source.query returned no rows "
            f"through {where}. Check the query's :start/:end filter or pick another end day."
        )
    df = conform(spec, df)
    df.attrs[SOURCES_ATTR] = [f"sql {source.conn_id}: {redact(url)} ({start}..{end})"]
    df.attrs[MISSING_COLUMNS_ATTR] = {}
    return df


def _scrub(text: str, url: str) -> str:
    """``text`` with ``url`` redacted and its password (as given and percent-decoded) replaced."""
    text = text.replace(url, redact(url))
    secrets: set[str] = set()
    try:
        encoded = urlsplit(url).password
    except ValueError:
        encoded = None
    if encoded:
        from urllib.parse import unquote

        secrets |= {encoded, unquote(encoded)}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
