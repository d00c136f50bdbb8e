"""What one model-server process holds: per model a serving slot and a staging slot.

Requests read ``slot.serving`` once and keep that reference to the end, so a promote (one reference
assignment under the slot's lock) never fails or mixes an in-flight request: it finishes on the old
model, the next one starts on the new. Loads (startup, stage, reload) of one model are serialised by
a second lock so two admins cannot race each other, and they never touch the serving slot until the
candidate is fully loaded and checked.

By default a process serves every spec and follows ``@champion``. A version-pinned deployment (one
Kubernetes Deployment per model and version, rolled out when the version changes) narrows that with
``CONVEYOR_SERVE_MODELS`` and ``CONVEYOR_PINNED_VERSIONS``: a pinned model loads exactly that
version at startup and on reload, and a missing pinned version is an error (readiness stays 503, so
a rollout to it never replaces the pods that serve).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.serving import loader
from conveyor.serving.errors import ModelNotReady, ServingError, UnknownModel
from conveyor.serving.loader import LoadedModel, NoChampion
from conveyor.serving.metrics import ServerMetrics
from conveyor.serving.schemas import (
    ModelStatus,
    PromoteRequest,
    PromoteResult,
    ReloadResult,
    StageReport,
    StageRequest,
)

if TYPE_CHECKING:
    from conveyor.config import ModelSpec
    from conveyor.settings import Settings

log = logging.getLogger(__name__)

LOADING, LOADED, NO_CHAMPION, ERROR = "loading", "loaded", "no_champion", "error"


class PinnedVersionMissing(Exception):
    """The registry has no such version of a pinned model (retrying cannot help)."""


def select_specs(
    specs: Iterable[ModelSpec],
    serve_models: Iterable[str] = (),
    pinned_versions: Mapping[str, str] | None = None,
) -> list[ModelSpec]:
    """The specs one server process serves: those named in ``serve_models`` (every spec if empty).

    Raises:
        ValueError: a served or pinned model has no spec, or a pinned model is not served; the
            message names the setting to fix.
    """
    by_name = {spec.name: spec for spec in specs}
    wanted = list(dict.fromkeys(serve_models))
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise ValueError(
            f"CONVEYOR_SERVE_MODELS names {unknown}, which have no spec in the specs folder; "
            f"known: {sorted(by_name)}"
        )
    selected = [by_name[name] for name in wanted] if wanted else list(by_name.values())
    served = {spec.name for spec in selected}
    stray = sorted(name for name in pinned_versions or {} if name not in served)
    if stray:
        raise ValueError(
            f"CONVEYOR_PINNED_VERSIONS pins {stray}, which this server does not serve "
            f"(served: {sorted(served)}); fix CONVEYOR_PINNED_VERSIONS or CONVEYOR_SERVE_MODELS"
        )
    return selected


def read_specs(specs_dir: Path) -> list[ModelSpec]:
    """Every spec in ``specs_dir`` (the server's own settings, not the process-wide ones).

    Raises:
        ValueError: a spec file does not validate; the message names the file.
    """
    import yaml

    from conveyor.config import ModelSpec

    specs = []
    paths = sorted(Path(specs_dir).glob("*.yaml"))
    if not paths:
        log.warning("no model specs in %s: the server will serve nothing", specs_dir)
    for path in paths:
        try:
            specs.append(ModelSpec.model_validate(yaml.safe_load(path.read_text())))
        except Exception as exc:
            raise ValueError(f"model spec {path} is invalid: {exc}") from exc
    return specs


class ModelSlot:
    """One spec's models: what serves, what is staged, and how the last load went."""

    def __init__(self, spec: ModelSpec, pinned_version: str | None = None) -> None:
        self.spec = spec
        self.pinned_version = pinned_version
        self.serving: LoadedModel | None = None
        self.staged: LoadedModel | None = None
        self.last_stage: StageReport | None = None
        self.state = LOADING
        self.error: str | None = None
        self.swap_lock = threading.Lock()
        self.load_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        model = self.serving
        return model is not None and model.ready

    def status(self) -> ModelStatus:
        model, staged = self.serving, self.staged
        return ModelStatus(
            name=self.spec.name,
            registered_model_name=self.spec.registered_model_name,
            state=self.state,
            ready=self.ready,
            version=model.version if model else None,
            alias=model.alias if model else None,
            model_uri=model.model_uri if model else None,
            loaded_at=model.loaded_at if model else None,
            golden_passed=model.golden.passed if model else None,
            p95_latency_ms=model.p95_latency_ms if model else None,
            staged_version=staged.version if staged else None,
            error=self.error or (model.golden.error if model else None),
        )


class ModelServer:
    """The models of one server process and the operations on them (load, stage, promote, reload).

    Args:
        settings: where MLflow and the local cache are, which models to serve and which versions
            are pinned (``serve_models``, ``pinned_versions``).
        specs: the known models; those ``settings.serve_models`` names (all if empty) get a slot.
        metrics: the app's Prometheus metrics.
        load_attempts: tries per model at startup before it is reported as ``error``
            (MLflow may start after the server).
        retry_delay_s: first pause between tries, doubled each time.
    """

    def __init__(
        self,
        settings: Settings,
        specs: Iterable[ModelSpec],
        metrics: ServerMetrics,
        *,
        load_attempts: int = 3,
        retry_delay_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        pins = settings.pinned_versions
        self.slots: dict[str, ModelSlot] = {
            s.name: ModelSlot(s, pins.get(s.name)) for s in select_specs(specs, settings.serve_models, pins)
        }
        self.load_attempts = max(1, load_attempts)
        self.retry_delay_s = retry_delay_s
        self.initial_load_done = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lookup -------------------------------------------------------------------------------------

    def slot(self, name: str) -> ModelSlot:
        try:
            return self.slots[name]
        except KeyError:
            raise UnknownModel(name, sorted(self.slots)) from None

    def serving(self, name: str) -> tuple[ModelSlot, LoadedModel]:
        """The slot and the model that answers for ``name`` right now (one reference, read once)."""
        slot = self.slot(name)
        model = slot.serving
        if model is None:
            if slot.state == LOADING:
                reason = "it is still loading; retry shortly"
            elif slot.state == NO_CHAMPION:
                reason = f"{slot.spec.registered_model_name!r} has no @champion version yet"
            else:
                reason = f"loading failed: {slot.error}"
            raise ModelNotReady(name, reason)
        return slot, model

    def statuses(self) -> list[ModelStatus]:
        return [slot.status() for slot in self.slots.values()]

    def readiness(self) -> tuple[bool, dict[str, dict[str, object]]]:
        """Ready when the first load pass is over and every model with a champion answers its golden rows."""
        detail: dict[str, dict[str, object]] = {}
        ready = self.initial_load_done.is_set()
        for name, slot in self.slots.items():
            status = slot.status()
            blocking = slot.state != NO_CHAMPION and not slot.ready
            if blocking:
                ready = False
            if slot.state == NO_CHAMPION:
                why = "no champion yet (does not block readiness)"
            elif slot.state == LOADING:
                why = "loading"
            elif slot.ready and slot.pinned_version:
                why = f"pinned version {slot.pinned_version} loaded, golden rows answered within tolerance"
            elif slot.ready:
                why = "loaded, golden rows answered within tolerance"
            else:
                why = status.error or "not loaded"
            detail[name] = {
                "state": slot.state,
                "ready": slot.ready,
                "version": status.version,
                "detail": why,
            }
        return ready, detail

    # -- startup ------------------------------------------------------------------------------------

    def start_loading(self) -> threading.Thread:
        """Load every champion (or pinned version) in a background thread so the port opens at once."""
        self._thread = threading.Thread(target=self.load_all, name="model-loader", daemon=True)
        self._thread.start()
        return self._thread

    def load_all(self) -> None:
        try:
            for name in self.slots:
                self._load_with_retries(name)
        finally:
            self.initial_load_done.set()

    def _load_with_retries(self, name: str) -> None:
        slot = self.slots[name]
        delay = self.retry_delay_s
        for attempt in range(1, self.load_attempts + 1):
            try:
                with slot.load_lock:
                    if slot.serving is not None:  # an admin reload got there first
                        return
                    model = self._load_configured(slot)
                    self._install(slot, model)
                return
            except NoChampion as exc:
                slot.state, slot.error = NO_CHAMPION, str(exc)
                self.metrics.model_ready.labels(name).set(0)
                return
            except PinnedVersionMissing as exc:
                slot.state, slot.error = ERROR, str(exc)
                self.metrics.model_ready.labels(name).set(0)
                log.error("not serving %s: %s", name, exc)
                return
            except Exception as exc:
                slot.state, slot.error = ERROR, f"{type(exc).__name__}: {exc}"
                self.metrics.model_ready.labels(name).set(0)
                log.warning("loading %s (attempt %d/%d) failed: %s", name, attempt, self.load_attempts, exc)
                if attempt < self.load_attempts:
                    time.sleep(delay)
                    delay *= 2

    def _load_configured(self, slot: ModelSlot) -> LoadedModel:
        """Load the slot's pinned version if it has one, else what ``@champion`` names."""
        spec = slot.spec
        if slot.pinned_version is not None:
            version, alias = slot.pinned_version, None
            self._check_pinned_exists(spec, version)
        else:
            version, alias = loader.resolve_champion(self.settings, spec), loader.CHAMPION
        uri = loader.version_uri(spec, version)
        local = loader.fetch(self.settings, spec, uri, version)
        model = loader.load(
            spec,
            local,
            version=version,
            model_uri=uri,
            alias=alias,
            expected_sha256=loader.recorded_sha256(self.settings, spec, version),
        )
        self.metrics.set_golden(
            spec.name,
            version,
            "serving",
            model.golden.passed,
            model.golden.max_abs_diff,
            model.p95_latency_ms,
        )
        return model

    def _check_pinned_exists(self, spec: ModelSpec, version: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            loader.mlflow_client(self.settings).get_model_version(spec.registered_model_name, version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
                raise PinnedVersionMissing(
                    f"version {version} of {spec.registered_model_name!r} is pinned by "
                    "CONVEYOR_PINNED_VERSIONS but is not in the registry; pin a registered version "
                    f"or drop the pin to follow @{loader.CHAMPION}"
                ) from None
            raise

    def _install(self, slot: ModelSlot, model: LoadedModel) -> str | None:
        """Swap ``model`` in as what serves; return the version it replaced."""
        with slot.swap_lock:
            old = slot.serving
            slot.serving = model
            slot.state, slot.error = LOADED, None
        old_version = old.version if old else None
        self.metrics.set_serving(slot.spec.name, old_version, model.version, model.ready)
        self.metrics.set_golden(
            slot.spec.name,
            model.version,
            "serving",
            model.golden.passed,
            model.golden.max_abs_diff,
            model.p95_latency_ms,
        )
        self.metrics.swaps.labels(slot.spec.name).inc()
        log.info("%s now serves version %s (was %s)", slot.spec.name, model.version, old_version)
        return old_version

    # -- admin --------------------------------------------------------------------------------------

    def stage(self, name: str, request: StageRequest) -> StageReport:
        """Load a candidate into the staging slot and check it; serving is untouched whatever happens."""
        slot = self.slot(name)
        spec = slot.spec
        if request.version is not None:
            version, uri, key = request.version, loader.version_uri(spec, request.version), request.version
        else:
            uri = str(request.model_uri)
            version = _version_from_uri(spec, uri) or uri
            key = version if version != uri else loader.cache_key_for_uri(uri)
        with slot.load_lock:
            try:
                local = loader.fetch(self.settings, spec, uri, key)
                expected = loader.recorded_sha256(self.settings, spec, version) if version.isdigit() else None
                model = loader.load(
                    spec, local, version=version, model_uri=uri, alias=None, expected_sha256=expected
                )
            except Exception as exc:
                log.warning("staging %s version %s failed: %s", name, version, exc)
                report = loader.failed_report(spec, version, uri, f"could not load {uri}: {exc}")
                slot.staged, slot.last_stage = None, report
                self.metrics.golden_passed.labels(name, version, "staged").set(0)
                return report
            slot.staged = model
            slot.last_stage = model.report()
        self.metrics.set_golden(
            name, version, "staged", model.golden.passed, model.golden.max_abs_diff, model.p95_latency_ms
        )
        return slot.last_stage

    def promote(self, name: str, request: PromoteRequest) -> PromoteResult:
        """Swap the staged model in (one reference assignment); refuse when it failed its golden rows."""
        slot = self.slot(name)
        with slot.swap_lock:
            staged, serving = slot.staged, slot.serving
            wanted = request.version
            if staged is None or (wanted is not None and staged.version != wanted):
                if serving is not None and wanted is not None and serving.version == wanted:
                    # Already serving it (a retried deploy): nothing to do, nothing to fail.
                    return PromoteResult(
                        model=name, version=wanted, previous_version=wanted, changed=False, at=_now()
                    )
                raise ServingError(
                    409,
                    f"version {wanted or '(any)'} of {name!r} is not staged "
                    f"(staged: {staged.version if staged else 'nothing'}); "
                    f"POST /admin/models/{name}/stage first",
                )
            if not staged.golden.passed:
                raise ServingError(
                    409,
                    f"staged version {staged.version} of {name!r} failed its golden rows "
                    f"({staged.golden.error}); still serving {serving.version if serving else 'nothing'}",
                )
            slot.serving, slot.staged = staged, None
            slot.state, slot.error = LOADED, None
        old_version = serving.version if serving else None
        self.metrics.set_serving(name, old_version, staged.version, staged.ready)
        self.metrics.golden_passed.labels(name, staged.version, "serving").set(1)
        self.metrics.swaps.labels(name).inc()
        log.info("%s promoted to version %s (was %s)", name, staged.version, old_version)
        return PromoteResult(
            model=name,
            version=staged.version,
            previous_version=old_version,
            changed=old_version != staged.version,
            at=_now(),
        )

    def reload(self, name: str) -> ReloadResult:
        """Load ``@champion`` (or the pinned version) again and swap it in when it answers its golden rows.

        Raises:
            ServingError: 409 when there is no champion or it cannot be loaded/checked; serving keeps
                the version it had.
        """
        slot = self.slot(name)
        source = f"pinned version {slot.pinned_version}" if slot.pinned_version else f"@{loader.CHAMPION}"
        with slot.load_lock:
            current = slot.serving
            kept = f"still serving version {current.version}" if current else "nothing is served"
            try:
                model = self._load_configured(slot)
            except (NoChampion, PinnedVersionMissing) as exc:
                if current is None:
                    slot.state = NO_CHAMPION if isinstance(exc, NoChampion) else ERROR
                    slot.error = str(exc)
                raise ServingError(409, f"cannot reload {name!r}: {exc}; {kept}") from None
            except Exception as exc:
                if current is None:
                    slot.state, slot.error = ERROR, f"{type(exc).__name__}: {exc}"
                raise ServingError(409, f"cannot reload {name!r}: {exc}; {kept}") from None
            if not model.golden.passed and current is not None:
                raise ServingError(
                    409,
                    f"{source} (version {model.version}) of {name!r} failed its golden rows "
                    f"({model.golden.error}); {kept}",
                    [model.report().model_dump(mode="json")],
                )
            previous = self._install(slot, model)
        return ReloadResult(
            model=name,
            version=model.version,
            previous_version=previous,
            changed=previous != model.version,
            report=model.report(),
            message=f"{name} serves version {model.version} ({source})",
        )


def _version_from_uri(spec: ModelSpec, uri: str) -> str | None:
    prefix = f"models:/{spec.registered_model_name}/"
    rest = uri[len(prefix) :] if uri.startswith(prefix) else ""
    return rest if rest.isdigit() else None


def _now() -> datetime:
    return datetime.now(UTC)
