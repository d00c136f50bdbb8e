"""The prediction log: JSONL under the data root, written by a background thread off the request path.

A request only puts rows on a bounded in-memory queue (never blocking); a writer thread drains it
and appends to ``<data_root>/predictions/<model>/date=YYYY-MM-DD/<hostname>-<pid>.jsonl``. A full
queue or a broken disk drops rows and counts them; it never slows or fails a request.

Each line is one event. ``"event": "prediction"`` rows carry ts, model, version, request_id, route,
the id column value when the client sent it (``id``), ``features``, the model's outputs and the
request's ``latency_ms``; ``"event": "error"`` rows record a refused or failed request (status,
message) so monitoring can compute error rates per served version.

The outputs follow the spec's task (``docs/CONTRACTS.md``):

- binary: ``probability`` (P(positive)) and ``prediction`` (0/1), as always;
- multiclass: ``prediction`` (the label, int or string) and ``probabilities``, an object
  ``{"<label>": P(label), ...}`` in ``data.classes`` order (one key per class, so the line's keys
  are the same whatever the label set; ``conveyor.monitoring.live.read_prediction_log`` turns it
  back into the contract's ``probability_<label>`` columns);
- regression: ``prediction`` (float).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.data.storage import filesystem, join_uri
from conveyor.serving.validation import contract_violations

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 200_000


def writer_name() -> str:
    """``<hostname>-<pid>``: one file per server process, so writers never share a file."""
    return f"{socket.gethostname()}-{os.getpid()}"


def log_file_uri(data_root: str, model: str, date: str, writer: str) -> str:
    return join_uri(data_root, "predictions", model, f"date={date}", f"{writer}.jsonl")


@dataclass(frozen=True)
class PredictionChunk:
    """The rows of one answered request, expanded to JSONL lines by the writer thread (not the request)."""

    model: str
    version: str
    request_id: str
    route: str
    ts: datetime
    latency_ms: float
    frame: pd.DataFrame
    #: The model's checked output frame (the task's contract columns, one row per input row).
    outputs: pd.DataFrame
    ids: list[Any] | None = None
    #: The model's spec: rows with values outside its data contract are flagged (``out_of_contract``).
    spec: ModelSpec | None = None

    @property
    def n_rows(self) -> int:
        return len(self.outputs)

    def lines(self) -> list[str]:
        ts = self.ts.isoformat()
        names = [str(c) for c in self.frame.columns]
        # One conversion of the whole frame (a single block for a numeric model), not one per cell.
        features = [dict(zip(names, row, strict=True)) for row in self.frame.to_numpy(dtype=object).tolist()]
        per_row = _output_fields(self.outputs)
        flagged = contract_violations(self.spec, self.frame) if self.spec is not None else {}
        out = []
        for i, row in enumerate(features):
            event = {
                "event": "prediction",
                "ts": ts,
                "model": self.model,
                "version": self.version,
                "request_id": self.request_id,
                "route": self.route,
                "id": _plain(self.ids[i]) if self.ids is not None else None,
                "features": {k: _plain(v) for k, v in row.items()},
                **per_row[i],
                "latency_ms": round(self.latency_ms, 3),
            }
            if i in flagged:
                event["out_of_contract"] = flagged[i]
            out.append(json.dumps(event, default=str))
        return out


def _output_fields(outputs: pd.DataFrame) -> list[dict[str, Any]]:
    """Per row, the logged output fields of a contract frame (see the module docstring)."""
    from conveyor.pyfunc_outputs import PROBABILITY_PREFIX

    columns = list(outputs.columns)
    prediction = outputs["prediction"].tolist()
    if "probability" in columns:  # binary
        probability = outputs["probability"].to_numpy(dtype="float64").tolist()
        return [
            {"probability": p, "prediction": int(y)} for p, y in zip(probability, prediction, strict=True)
        ]
    classes = [c[len(PROBABILITY_PREFIX) :] for c in columns if c.startswith(PROBABILITY_PREFIX)]
    if not classes:  # regression
        return [{"prediction": float(y)} for y in prediction]
    matrix = outputs[[PROBABILITY_PREFIX + c for c in classes]].to_numpy(dtype="float64").tolist()
    return [
        {"prediction": y, "probabilities": dict(zip(classes, row, strict=True))}
        for y, row in zip(prediction, matrix, strict=True)
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
    return value


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class PredictionLogWriter:
    """Bounded queue plus one writer thread appending JSONL per (model, day).

    Args:
        data_root: URI under which ``predictions/`` lives.
        on_drop: called with (model, reason, n_rows) whenever rows are lost.
        on_write: called with (model, n_rows) after rows reach the file.
        max_rows: prediction rows held in memory before new ones are dropped.
        writer: file stem; ``<hostname>-<pid>`` by default.
    """

    def __init__(
        self,
        data_root: str,
        *,
        on_drop: Callable[[str, str, int], None] | None = None,
        on_write: Callable[[str, int], None] | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        writer: str | None = None,
    ) -> None:
        self.data_root = data_root
        self.writer = writer or writer_name()
        self._on_drop = on_drop or (lambda model, reason, n: None)
        self._on_write = on_write or (lambda model, n: None)
        self.max_rows = max_rows
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_rows + 1000)
        self._rows_lock = threading.Lock()
        self._queued_rows = 0
        self._thread: threading.Thread | None = None
        self._append_supported: bool | None = None
        self._part = 0
        self._last_error_log = 0.0

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
            self._thread.start()

    def submit(self, item: PredictionChunk | dict[str, Any]) -> bool:
        """Queue a chunk of predictions (or one event) without blocking.

        Returns False when the item was dropped (queue full, counted in ``on_drop``).
        """
        n_rows = item.n_rows if isinstance(item, PredictionChunk) else 1
        model = item.model if isinstance(item, PredictionChunk) else str(item.get("model"))
        with self._rows_lock:
            if self._queued_rows + n_rows > self.max_rows:
                self._on_drop(model, "queue_full", n_rows)
                return False
            self._queued_rows += n_rows
        try:
            self._queue.put_nowait((n_rows, item))
        except queue.Full:  # unreachable while the row bound is smaller than the item bound
            with self._rows_lock:
                self._queued_rows -= n_rows
            self._on_drop(model, "queue_full", n_rows)
            return False
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written; False when that took longer than ``timeout``."""
        if self._thread is None or not self._thread.is_alive():
            return self._queue.empty()
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread (called on server shutdown)."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("prediction log: queue still full at shutdown; unwritten rows are lost")
            return
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[PredictionChunk | dict[str, Any]] = []
            markers: list[_Flush] = []
            stop = False
            n_rows = 0
            # Drain what is already there so one file open serves many requests.
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                else:
                    n_rows += item[0]
                    batch.append(item[1])
                if n_rows >= 20_000:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
                with self._rows_lock:
                    self._queued_rows -= n_rows
            for marker in markers:
                marker.done.set()
            if stop:
                return

    def _write(self, items: list[PredictionChunk | dict[str, Any]]) -> None:
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for item in items:
            try:
                if isinstance(item, PredictionChunk):
                    date = item.ts.strftime("%Y-%m-%d")
                    groups[(item.model, date)].extend(item.lines())
                else:
                    date = str(item.get("ts", ""))[:10] or time.strftime("%Y-%m-%d", time.gmtime())
                    groups[(str(item.get("model")), date)].append(json.dumps(item, default=str))
            except Exception as exc:  # a value that cannot be serialised loses its rows, not the thread
                model = item.model if isinstance(item, PredictionChunk) else str(item.get("model"))
                n = item.n_rows if isinstance(item, PredictionChunk) else 1
                self._on_drop(model, "serialise_error", n)
                self._warn(f"prediction log: dropped {n} row(s) for {model}: {exc}")
        for (model, date), lines in groups.items():
            try:
                self._append(log_file_uri(self.data_root, model, date, self.writer), lines)
                self._on_write(model, len(lines))
            except Exception as exc:
                self._on_drop(model, "write_error", len(lines))
                self._warn(f"prediction log: dropped {len(lines)} row(s) for {model}: {exc}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 60:  # one warning a minute, not one per batch
            self._last_error_log = now
            log.warning("%s", message)

    def _append(self, uri: str, lines: list[str]) -> None:
        fs, path = filesystem(uri)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        text = "\n".join(lines) + "\n"
        if self._append_supported is not False:
            try:
                with fs.open(path, "a") as fh:
                    fh.write(text)
                self._append_supported = True
                return
            except (NotImplementedError, ValueError):
                if self._append_supported:
                    raise
                self._append_supported = False
        # Object stores cannot append: write one part file per batch next to where the file would be.
        self._part += 1
        part_path = path[: -len(".jsonl")] + f"-{int(time.time() * 1000)}-{self._part:06d}.jsonl"
        with fs.open(part_path, "w") as fh:
            fh.write(text)
