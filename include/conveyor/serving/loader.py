"""Fetch a model version from MLflow into a local cache, load it, replay its golden rows, time it.

A model version is immutable, so the cache ``<home>/serving/cache/<name>/<version>`` is filled once
(download to a temporary folder, then rename) and reused by every later load of that version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.names import CHAMPION
from conveyor.serving.errors import ModelContractError
from conveyor.serving.schemas import StageReport
from conveyor.serving.validation import ColumnSchema, batch_from_records, input_columns

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec
    from conveyor.settings import Settings

log = logging.getLogger(__name__)

# Enough single-row timings for a p95 that is not one outlier.
_MIN_LATENCY_SAMPLES = 40
#: Native threads (OpenMP, BLAS) one prediction may use. The server answers many requests at once,
#: one per thread, so parallelism comes from requests; a thread team per prediction on top of that
#: oversubscribes the cores (scikit-learn's histogram gradient boosting spends most of a one-row
#: prediction waiting on its OpenMP team when the machine is busy).
NATIVE_THREADS = 1
#: Signature column types whose frame :mod:`conveyor.serving.validation` builds exactly as MLflow's
#: schema enforcement would leave it (float64/float32/int64/int32/bool numpy columns, str objects).
_DIRECT_KINDS = frozenset({"double", "float", "long", "integer", "boolean", "string"})
_native = threading.local()
#: Least seconds between the full collections of :func:`settle_heap`, and when the last one ran.
_SETTLE_COLLECT_S = 60.0
_settled = [0.0]


class NoChampion(Exception):
    """The registered model has no ``champion`` alias (or does not exist yet)."""


@dataclass(frozen=True)
class GoldenResult:
    """Whether a model reproduces its stored golden outputs.

    ``max_abs_diff`` is the largest difference over every float output column (``probability``,
    ``probability_<c>``, a regression ``prediction``), judged against ``deploy.golden_tolerance``;
    ``prediction_mismatches`` counts rows whose label column (classification ``prediction``) differs.
    """

    passed: bool
    n_rows: int = 0
    max_abs_diff: float | None = None
    prediction_mismatches: int = 0
    error: str | None = None


@dataclass
class LoadedModel:
    """A model version in memory with what was learnt while loading it (golden rows, latency)."""

    name: str
    registered_model_name: str
    version: str
    model_uri: str
    alias: str | None
    pyfunc: Any
    columns: list[ColumnSchema]
    golden: GoldenResult
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    latency_budget_ms: float
    local_dir: Path
    spec: ModelSpec
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: ``(pyfunc, its direct predict or None)``: see :func:`direct_predict`; follows ``pyfunc``.
    _direct: tuple[Any, Callable[[pd.DataFrame], Any] | None] | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.golden.passed

    @property
    def within_budget(self) -> bool:
        return self.p95_latency_ms is not None and self.p95_latency_ms <= self.latency_budget_ms

    def report(self) -> StageReport:
        return StageReport(
            model=self.name,
            registered_model_name=self.registered_model_name,
            version=self.version,
            model_uri=self.model_uri,
            loaded=True,
            golden_passed=self.golden.passed,
            n_golden=self.golden.n_rows,
            max_abs_diff=self.golden.max_abs_diff,
            prediction_mismatches=self.golden.prediction_mismatches,
            p50_latency_ms=self.p50_latency_ms,
            p95_latency_ms=self.p95_latency_ms,
            latency_budget_ms=self.latency_budget_ms,
            within_budget=self.within_budget,
            error=self.golden.error,
            checked_at=self.loaded_at,
        )

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The spec's output frame (``docs/CONTRACTS.md``, checked) for a validated input frame.

        ``frame`` has passed :mod:`conveyor.serving.validation` against this model's signature, so
        when every signature column is one MLflow's schema enforcement would leave unchanged, the
        model's own ``predict`` is called directly (see :func:`direct_predict`).
        """
        limit_native_threads()
        cached = self._direct
        if cached is None or cached[0] is not self.pyfunc:
            cached = self._direct = (self.pyfunc, direct_predict(self.pyfunc, self.columns))
        direct = cached[1]
        if (
            direct is not None
            and len(frame.columns) == len(self.columns)
            and all(a == b.name for a, b in zip(frame.columns, self.columns, strict=True))
        ):
            result = direct(frame)
        else:
            result = self.pyfunc.predict(frame)
        return model_outputs(self.spec, result, len(frame))


def failed_report(spec: ModelSpec, version: str, model_uri: str, error: str) -> StageReport:
    """The report of a candidate that could not even be loaded."""
    return StageReport(
        model=spec.name,
        registered_model_name=spec.registered_model_name,
        version=version,
        model_uri=model_uri,
        loaded=False,
        golden_passed=False,
        latency_budget_ms=spec.deploy.latency_budget_ms,
        error=error,
        checked_at=datetime.now(UTC),
    )


def mlflow_client(settings: Settings) -> Any:
    """An ``MlflowClient`` on the configured tracking server (registry on the same URI)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def resolve_champion(settings: Settings, spec: ModelSpec) -> str:
    """The version ``@champion`` names.

    Raises:
        NoChampion: the registered model or its alias does not exist.
    """
    from mlflow.exceptions import MlflowException

    try:
        mv = mlflow_client(settings).get_model_version_by_alias(spec.registered_model_name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise NoChampion(
                f"registered model {spec.registered_model_name!r} has no @{CHAMPION} alias yet"
            ) from None
        raise
    return str(mv.version)


def recorded_sha256(settings: Settings, spec: ModelSpec, version: str) -> str | None:
    """The version's recorded ``conveyor.artifact_sha256`` (``None``: registered outside Conveyor)."""
    from conveyor.registry.versions import recorded_sha256 as recorded

    return recorded(mlflow_client(settings), spec.registered_model_name, version)


def version_uri(spec: ModelSpec, version: str) -> str:
    return f"models:/{spec.registered_model_name}/{version}"


def fetch(settings: Settings, spec: ModelSpec, model_uri: str, cache_key: str) -> Path:
    """Download ``model_uri`` into ``<home>/serving/cache/<name>/<cache_key>`` once; return that folder."""
    import mlflow

    target = Path(settings.home) / "serving" / "cache" / spec.name / cache_key
    if (target / "MLmodel").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    source = storage_uri(settings, model_uri)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_key}-", dir=target.parent))
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source,
            dst_path=str(tmp),
            tracking_uri=settings.mlflow_tracking_uri,
            registry_uri=settings.mlflow_tracking_uri,
        )
        local_path = Path(local)
        if not (local_path / "MLmodel").exists():
            raise ModelContractError(f"{model_uri} is not an MLflow model (no MLmodel file)")
        try:
            local_path.rename(target)
        except OSError:
            if not (target / "MLmodel").exists():  # another loader won the race: use its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def storage_uri(settings: Settings, model_uri: str) -> str:
    """Where the files of ``model_uri`` live, resolved with this server's MLflow client.

    MLflow resolves ``models:/`` URIs through the process-global registry URI whatever client
    asked; resolving them here keeps every lookup on ``settings.mlflow_tracking_uri``. Accepts
    ``models:/<name>/<version>[/path]``, ``models:/<name>@<alias>[/path]``, ``models:/<model_id>``;
    any other URI (``runs:/``, ``s3://``, a local path) is returned as is.
    """
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.utils.models import _parse_model_uri

    if not model_uri.startswith("models:"):
        return model_uri
    base_uri, sub_path = ModelsArtifactRepository.split_models_uri(model_uri)
    parsed = _parse_model_uri(base_uri)
    client = mlflow_client(settings)
    if parsed.model_id is not None:
        base = str(client.get_logged_model(parsed.model_id).artifact_location)
    elif parsed.version is not None:
        base = str(client.get_model_version_download_uri(parsed.name, parsed.version))
    elif parsed.alias is not None:
        version = client.get_model_version_by_alias(parsed.name, parsed.alias).version
        base = str(client.get_model_version_download_uri(parsed.name, version))
    else:
        raise ValueError(
            f"{model_uri}: name a version or an alias (models:/<name>/<version>); stages are not used"
        )
    return f"{base.rstrip('/')}/{sub_path.lstrip('/')}" if sub_path else base


def cache_key_for_uri(model_uri: str) -> str:
    return "uri-" + hashlib.sha256(model_uri.encode()).hexdigest()[:16]


def load(
    spec: ModelSpec,
    local_dir: Path,
    *,
    version: str,
    model_uri: str,
    alias: str | None,
    expected_sha256: str | None = None,
) -> LoadedModel:
    """Load a cached model folder, replay its golden rows and time single-row predictions.

    The folder is first checked against ``expected_sha256`` (the version's recorded
    ``conveyor.artifact_sha256``): a tampered or corrupted artifact is never loaded.

    Raises:
        ArtifactIntegrityError: the files do not match the recorded hash.
    """
    import mlflow

    from conveyor.registry.versions import verify_artifact

    verify_artifact(local_dir, expected_sha256, what=f"{spec.registered_model_name} v{version}")
    limit_native_threads()
    pyfunc = mlflow.pyfunc.load_model(str(local_dir))
    columns = input_columns(pyfunc, spec)
    golden, latencies = replay_golden(spec, pyfunc, columns, local_dir)
    settle_heap()
    p50 = p95 = None
    if latencies:
        import numpy as np

        p50 = float(np.percentile(latencies, 50))
        p95 = float(np.percentile(latencies, 95))
    return LoadedModel(
        name=spec.name,
        registered_model_name=spec.registered_model_name,
        version=version,
        model_uri=model_uri,
        alias=alias,
        pyfunc=pyfunc,
        columns=columns,
        golden=golden,
        p50_latency_ms=p50,
        p95_latency_ms=p95,
        latency_budget_ms=spec.deploy.latency_budget_ms,
        local_dir=local_dir,
        spec=spec,
    )


def settle_heap() -> None:
    """Move every object alive now (the loaded models, the imported libraries) out of the garbage
    collector's sight: a full collection then scans only what requests allocate, instead of
    pausing every request for the whole heap (a p99 of 150+ ms instead of ~25 ms under load).

    Objects frozen earlier are unfrozen and collected first (at most once a
    :data:`_SETTLE_COLLECT_S`: a full collection takes a few hundred ms), so a replaced model's
    reference cycles are still freed.
    """
    import gc

    now = time.monotonic()
    if gc.get_freeze_count() and now - _settled[0] < _SETTLE_COLLECT_S:
        gc.freeze()
        return
    _settled[0] = now
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def limit_native_threads() -> None:
    """Hold the calling thread's OpenMP and BLAS teams to :data:`NATIVE_THREADS` (once per thread).

    Both runtimes keep the limit per thread, so every thread that predicts (the event loop, the
    request threadpool, a loader) sets it on its first prediction.
    """
    if getattr(_native, "limited", False):
        return
    _native.limited = True
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=NATIVE_THREADS)  # kept: never restored for this thread
    except Exception:  # no threadpoolctl, or a runtime it cannot drive: predictions still work
        log.debug("could not limit native threads", exc_info=True)


def direct_predict(pyfunc: Any, columns: list[ColumnSchema]) -> Callable[[pd.DataFrame], Any] | None:
    """The loaded model's own ``predict``, bypassing MLflow's per-call schema enforcement, or ``None``.

    Only for a ``PythonModel`` pyfunc (what every Conveyor trainer logs) whose signature names its
    columns, each of a type (:data:`_DIRECT_KINDS`) that the server's validation already turns into
    exactly the dtype the enforcement would produce, and whose signature does not come from type
    hints or an input example (then MLflow converts the input first). The wrapper's own input
    conversion still runs. Anything else keeps ``pyfunc.predict``.
    """
    impl: Any = getattr(pyfunc, "_model_impl", None)
    if type(impl).__name__ != "_PythonModelPyfuncWrapper" or not callable(getattr(impl, "predict", None)):
        return None
    try:
        meta = pyfunc.metadata
        schema = meta.get_input_schema()
        if schema is None or not schema.has_input_names() or meta.get_params_schema() is not None:
            return None
        if meta._is_signature_from_type_hint() or meta._is_type_hint_from_example():
            return None
    except Exception:
        return None
    if not columns or any(c.kind not in _DIRECT_KINDS or not c.required for c in columns):
        return None
    predict: Callable[[pd.DataFrame], Any] = impl.predict
    return predict


def replay_golden(
    spec: ModelSpec, pyfunc: Any, columns: list[ColumnSchema], local_dir: Path
) -> tuple[GoldenResult, list[float]]:
    """Compare the model's answers on ``artifacts/golden_rows.json`` with the stored outputs.

    The file's ``outputs`` hold ``{column: [values, ...]}`` for every output column of the spec's
    task (``conveyor.tasks.output_types``): float columns must agree within
    ``deploy.golden_tolerance`` (absolute, in the column's units), label columns exactly.

    Returns the verdict and single-row latencies in milliseconds (empty when the rows are unusable).
    """
    path = local_dir / "artifacts" / "golden_rows.json"
    if not path.exists():
        return GoldenResult(False, error="the model has no artifacts/golden_rows.json (see CONTRACTS.md)"), []
    try:
        golden = json.loads(path.read_text())
        inputs = golden["inputs"]
        expected = _golden_outputs(spec, golden["outputs"])
        batch = batch_from_records(inputs, columns, spec, max_rows=max(len(inputs), 1), field="golden inputs")
    except Exception as exc:
        return GoldenResult(False, error=f"unusable artifacts/golden_rows.json: {exc}"), []
    lengths = {column: len(values) for column, values in expected.items()}
    if any(n != batch.n_rows for n in lengths.values()):
        return GoldenResult(
            False, batch.n_rows, error=f"golden rows hold {batch.n_rows} inputs but outputs of {lengths}"
        ), []
    limit_native_threads()
    try:
        got = model_outputs(spec, pyfunc.predict(batch.frame), batch.n_rows)
    except Exception as exc:
        return GoldenResult(False, batch.n_rows, error=f"predicting the golden rows failed: {exc}"), []
    diff, worst, mismatches = _compare_golden(spec, got, expected)
    tolerance = spec.deploy.golden_tolerance
    passed = bool(diff <= tolerance and mismatches == 0)
    error = None
    if not passed:
        error = (
            f"golden rows differ from the stored outputs: max |Δ{worst}| = {diff:.3g} "
            f"(tolerance {tolerance:g}), {mismatches} prediction(s) differ"
        )
    latencies = _single_row_latencies(pyfunc, batch.frame)
    return GoldenResult(passed, batch.n_rows, diff, mismatches, error), latencies


def _golden_outputs(spec: ModelSpec, outputs: Any) -> dict[str, list[Any]]:
    """The stored output of every contract column, or a ValueError naming what is missing."""
    from conveyor import tasks

    if not isinstance(outputs, dict):
        raise ValueError('"outputs" must be an object {column: [values, ...]}')
    columns = [column for column, _ in tasks.output_types(spec)]
    missing = [c for c in columns if c not in outputs]
    if missing:
        raise ValueError(
            f"outputs lack {missing}; a {spec.task} model's golden outputs are {columns} (docs/CONTRACTS.md)"
        )
    bad = [c for c in columns if not isinstance(outputs[c], list)]
    if bad:
        raise ValueError(f"outputs {bad} must be lists of values")
    return {c: outputs[c] for c in columns}


def _compare_golden(
    spec: ModelSpec, got: pd.DataFrame, expected: dict[str, list[Any]]
) -> tuple[float, str, int]:
    """(largest float difference, its column, label mismatches) of ``got`` against ``expected``."""
    import numpy as np

    from conveyor import tasks

    types = tasks.output_types(spec)
    diff, worst, mismatches = 0.0, next((c for c, kind in types if kind == "double"), "prediction"), 0
    for column, kind in types:
        if kind == "double":
            stored = np.asarray(expected[column], dtype="float64")
            if len(stored) == 0:
                continue
            column_diff = float(np.max(np.abs(got[column].to_numpy(dtype="float64") - stored)))
            if column_diff > diff:
                diff, worst = column_diff, column
        else:  # a label: int64 compares as int, string labels as text
            cast = int if kind == "long" else str
            stored_labels = [cast(v) for v in expected[column]]
            mismatches += sum(a != b for a, b in zip(got[column].tolist(), stored_labels, strict=True))
    return diff, worst, mismatches


def _single_row_latencies(pyfunc: Any, frame: pd.DataFrame) -> list[float]:
    rows = [frame.iloc[[i]].reset_index(drop=True) for i in range(len(frame))]
    if not rows:
        return []
    pyfunc.predict(rows[0])  # warm-up: first calls pay for lazy initialisation
    rounds = max(1, -(-_MIN_LATENCY_SAMPLES // len(rows)))
    out: list[float] = []
    for _ in range(rounds):
        for row in rows:
            started = time.perf_counter()
            pyfunc.predict(row)
            out.append((time.perf_counter() - started) * 1000.0)
    return out


def model_outputs(spec: ModelSpec, result: Any, n_rows: int) -> pd.DataFrame:
    """Hold a pyfunc result to ``spec``'s output contract and return the contract's frame.

    The contract's columns are taken in order (extra columns a model adds are dropped) and widened
    where that is lossless (float32 → float64, int32 → int64) before
    :func:`conveyor.tasks.check_outputs` checks columns, dtypes, row count, finite values and
    probabilities.

    Raises:
        ModelContractError: not a frame, a contract column missing, or a check failed.
    """
    import pandas as pd

    from conveyor import tasks

    expected = tasks.output_columns(spec.task, spec.classes)
    if not isinstance(result, pd.DataFrame) or not set(expected) <= set(result.columns):
        got = list(result.columns) if isinstance(result, pd.DataFrame) else type(result).__name__
        raise ModelContractError(
            f"the model must return a DataFrame with the {spec.task} output columns {expected}, got {got}"
        )
    frame = result[expected]
    widened = {}
    for column, kind in tasks.output_types(spec):
        dtype = frame[column].dtype
        if kind == "double" and dtype.kind in "fiu" and dtype != "float64":
            widened[column] = frame[column].astype("float64")
        elif kind == "long" and dtype.kind in "iu" and dtype != "int64":
            widened[column] = frame[column].astype("int64")
    if widened:
        frame = frame.assign(**widened)
    try:
        return tasks.check_outputs(spec, frame, n_rows, where="the model")
    except tasks.OutputContractError as exc:
        raise ModelContractError(str(exc)) from None
