"""Frozen train/eval snapshots and data fingerprints.

A DAG run freezes the validated window once: ``snapshots/<model>/<run_key>/{train,eval}.parquet`` plus a
``manifest.json``. Training reads ``train``, the gate scores champion and challenger on the same
``eval``, and the fingerprint goes onto the registered model version as lineage.

The split is by a hash of the row id, so a customer is on the same side in every run and a model is
never evaluated on rows an earlier version trained on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from conveyor.config import ModelSpec
from conveyor.data import storage
from conveyor.errors import PermanentError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_SPLIT_SALT = b"conveyor.split.v1:"
_FINGERPRINT_VERSION = "v1"


class SnapshotError(PermanentError, RuntimeError):
    """A snapshot cannot be frozen or read back as recorded."""


class SnapshotInfo(BaseModel):
    """Where a frozen snapshot lives and what it holds (small JSON: safe for XCom)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str
    run_key: str
    train_uri: str
    eval_uri: str
    manifest_uri: str
    fingerprint: str
    rows: int
    train_rows: int
    eval_rows: int
    window_start: dt.date | None
    window_end: dt.date | None


def fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 of a frame's content, independent of row and column order.

    Each row is hashed (columns in name order), the row hashes are sorted, and the digest covers them
    plus every column's name and dtype: reordering rows or columns keeps it, changing any value, name
    or dtype changes it, and a Parquet round trip keeps it.

    Returns:
        ``"sha256:<hex>"``.
    """
    import numpy as np
    import pandas as pd

    columns = sorted(str(c) for c in df.columns)
    canonical = df.rename(columns=str)[columns]
    digest = hashlib.sha256(_FINGERPRINT_VERSION.encode())
    digest.update(json.dumps([[c, str(canonical[c].dtype)] for c in columns]).encode())
    if len(canonical.columns):
        row_hashes = pd.util.hash_pandas_object(canonical, index=False).to_numpy(dtype=np.uint64)
        digest.update(np.sort(row_hashes).tobytes())
    digest.update(str(len(canonical)).encode())
    return f"sha256:{digest.hexdigest()}"


def split_is_eval(ids: Any, holdout_fraction: float) -> Any:
    """Boolean array: which ids belong to the evaluation side (stable across runs and machines).

    An id goes to eval when the first 8 bytes of ``sha256(salt + id)`` fall under ``holdout_fraction``
    of the 64-bit range; the share converges on ``holdout_fraction`` for large frames.
    """
    import numpy as np

    threshold = int(holdout_fraction * 2**64)
    flags = [
        int.from_bytes(hashlib.sha256(_SPLIT_SALT + str(i).encode()).digest()[:8], "big") < threshold
        for i in ids
    ]
    return np.asarray(flags, dtype=bool)


def _snapshot_dir(spec: ModelSpec, run_key: str) -> str:
    if not run_key or "/" in run_key or run_key in (".", ".."):
        raise SnapshotError(f"run_key {run_key!r} must be a non-empty name without '/'")
    return storage.data_uri("snapshots", spec.name, run_key)


def _read_manifest(uri: str) -> dict[str, Any] | None:
    if not storage.exists(uri):
        return None
    return dict(json.loads(storage.read_text(uri)))


def freeze_snapshot(spec: ModelSpec, df: pd.DataFrame, run_key: str, overwrite: bool = False) -> SnapshotInfo:
    """Split ``df`` into train/eval by id hash and write it under ``snapshots/<model>/<run_key>/``.

    Idempotent: when a snapshot with the same fingerprint already exists for ``run_key`` it is returned
    untouched.

    Args:
        spec: the model (id column, event-time column, holdout fraction).
        df: the validated window.
        run_key: names this freeze, typically the DAG run id made path-safe.
        overwrite: replace an existing snapshot of ``run_key`` whose data differs.

    Raises:
        SnapshotError: the id column is missing, the split leaves a side empty, or ``run_key`` already
            holds different data and ``overwrite`` is False.
    """
    import pandas as pd

    id_column = spec.data.id_column
    if id_column not in df.columns:
        raise SnapshotError(
            f"cannot freeze a snapshot of {spec.name!r}: id column {id_column!r} is missing; "
            "validate the window first"
        )
    base = _snapshot_dir(spec, run_key)
    manifest_uri = storage.join_uri(base, "manifest.json")
    data_fingerprint = fingerprint(df)
    existing = _read_manifest(manifest_uri)
    if existing is not None:
        if existing.get("fingerprint") == data_fingerprint:
            log.info("snapshot %s already frozen with the same data; reusing it", manifest_uri)
            return SnapshotInfo.model_validate(existing)
        if not overwrite:
            raise SnapshotError(
                f"snapshot {manifest_uri} already holds different data (fingerprint "
                f"{existing.get('fingerprint')}, now {data_fingerprint}). A frozen snapshot is not replaced "
                "silently: use a new run_key, or pass overwrite=True (and re-run everything that read it)."
            )
        log.warning(
            "overwriting snapshot %s (fingerprint %s -> %s)",
            base,
            existing.get("fingerprint"),
            data_fingerprint,
        )

    is_eval = split_is_eval(df[id_column].tolist(), spec.data.holdout_fraction)
    train = df.loc[~is_eval].reset_index(drop=True)
    evaluation = df.loc[is_eval].reset_index(drop=True)
    if train.empty or evaluation.empty:
        raise SnapshotError(
            f"snapshot of {spec.name!r} for {run_key!r}: {len(df)} rows split into {len(train)} train and "
            f"{len(evaluation)} eval rows; land more data before training"
        )

    window_start = window_end = None
    time_column = spec.data.event_time_column
    if time_column in df.columns and len(df):
        times = pd.to_datetime(df[time_column], errors="coerce")
        if times.notna().any():
            window_start, window_end = times.min().date(), times.max().date()

    train_uri = storage.write_parquet(train, storage.join_uri(base, "train.parquet"))
    eval_uri = storage.write_parquet(evaluation, storage.join_uri(base, "eval.parquet"))
    info = SnapshotInfo(
        model=spec.name,
        run_key=run_key,
        train_uri=train_uri,
        eval_uri=eval_uri,
        manifest_uri=manifest_uri,
        fingerprint=data_fingerprint,
        rows=len(df),
        train_rows=len(train),
        eval_rows=len(evaluation),
        window_start=window_start,
        window_end=window_end,
    )
    manifest = {
        **info.model_dump(mode="json"),
        "id_column": id_column,
        "holdout_fraction": spec.data.holdout_fraction,
        "split": "sha256(salt + id)[:8] < holdout_fraction * 2**64",
        "train_fingerprint": fingerprint(train),
        "eval_fingerprint": fingerprint(evaluation),
        "columns": {str(c): str(t) for c, t in df.dtypes.items()},
    }
    # The manifest goes last: its presence means the snapshot is complete.
    storage.write_text(json.dumps(manifest, indent=2, sort_keys=True), manifest_uri)
    log.info("froze %s: %d train / %d eval rows, %s", base, len(train), len(evaluation), data_fingerprint)
    return info


def load_snapshot(
    info: SnapshotInfo | dict[str, Any] | str, verify: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a frozen snapshot back as ``(train, eval)``.

    Args:
        info: a :class:`SnapshotInfo`, its JSON dict (from XCom), or a manifest URI.
        verify: check both files against the fingerprints in the manifest.

    Raises:
        SnapshotError: the manifest or a file is missing, or the data no longer matches the manifest.
    """
    if isinstance(info, str):
        manifest = _read_manifest(info)
        if manifest is None:
            raise SnapshotError(f"no snapshot manifest at {info}; freeze the snapshot first")
        snapshot = SnapshotInfo.model_validate(manifest)
    else:
        snapshot = info if isinstance(info, SnapshotInfo) else SnapshotInfo.model_validate(info)
    for uri in (snapshot.train_uri, snapshot.eval_uri):
        if not storage.exists(uri):
            raise SnapshotError(
                f"snapshot file {uri} of {snapshot.model!r}/{snapshot.run_key!r} is missing; "
                "re-run the task that froze the snapshot"
            )
    train = storage.read_parquet(snapshot.train_uri)
    evaluation = storage.read_parquet(snapshot.eval_uri)
    if verify:
        manifest = _read_manifest(snapshot.manifest_uri) or {}
        expected = {
            "train": manifest.get("train_fingerprint"),
            "eval": manifest.get("eval_fingerprint"),
        }
        actual = {"train": fingerprint(train), "eval": fingerprint(evaluation)}
        if manifest.get("fingerprint") != snapshot.fingerprint or expected != actual:
            raise SnapshotError(
                f"snapshot {snapshot.manifest_uri} does not match its record (expected "
                f"{snapshot.fingerprint}, manifest {expected}, files {actual}); it was changed after "
                "freezing. Re-freeze it under a new run_key."
            )
    return train, evaluation
