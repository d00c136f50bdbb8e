"""The data root: one URI under which landing files, snapshots and prediction logs live.

A local folder (``file:///...``) by default and an object store (``s3://...``, ``gs://...``) in
production; everything goes through fsspec so tasks on different workers see the same data.
"""

from __future__ import annotations

from typing import Any

import fsspec

from conveyor.settings import get_settings


def join_uri(root: str, *parts: str) -> str:
    """Join URI parts with ``/`` whatever the scheme."""
    out = root.rstrip("/")
    for part in parts:
        out = f"{out}/{str(part).strip('/')}"
    return out


def data_uri(*parts: str) -> str:
    """A URI under the configured data root."""
    return join_uri(get_settings().data_root, *parts)


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``uri`` and the path inside it."""
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


def read_parquet(uri: str, **kwargs: Any) -> Any:
    import pandas as pd

    fs, path = filesystem(uri)
    with fs.open(path, "rb") as fh:
        return pd.read_parquet(fh, **kwargs)


def write_parquet(df: Any, uri: str) -> str:
    """Write ``df`` to ``uri`` atomically where the filesystem allows (write then move)."""
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp"
    with fs.open(tmp, "wb") as fh:
        df.to_parquet(fh, index=False)
    fs.mv(tmp, path)
    return uri


def write_text(text: str, uri: str) -> str:
    fs, path = filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as fh:
        fh.write(text)
    return uri


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open(path, "r") as fh:
        return str(fh.read())


def list_uris(uri_glob: str) -> list[str]:
    """Sorted URIs matching a glob under any filesystem (same scheme as the pattern)."""
    fs, pattern = filesystem(uri_glob)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    paths = sorted(fs.glob(pattern))
    if protocol in ("file", "local"):
        return [f"file://{p}" if p.startswith("/") else p for p in paths]
    return [f"{protocol}://{p}" for p in paths]
