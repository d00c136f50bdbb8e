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

The specs folder is read again at run time, so a spec added to a running stack needs no restart: a
request that names a model the process does not know (and the readiness and listing routes) first
checks whether the folder changed (names, sizes and mtimes of its ``*.yaml``, no parsing), and only
then parses it again. A process that serves every spec adds a slot for each new one and loads its
``@champion`` in the background, as at startup. A spec file that does not parse is logged and
reported (``/health/ready``'s ``spec_errors``) but never stops the other models; a spec removed
while served keeps serving what it loaded (``spec_removed`` in ``/models``) until the next restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.names import CHAMPION
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
    broken: Collection[str] = (),
) -> list[ModelSpec]:
    """The specs one server process serves: those named in ``serve_models`` (every spec if empty).

    A name in ``broken`` (the stem of a spec file that does not parse) is skipped rather than
    refused: the server starts, and reports that file instead of serving the model.

    Raises:
        ValueError: a served or pinned model has no spec, or a pinned model is not served; the
            message names the setting to fix.
    """
    by_name = {spec.name: spec for spec in specs}
    wanted = [name for name in dict.fromkeys(serve_models) if name not in broken or name in by_name]
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise ValueError(
            f"CONVEYOR_SERVE_MODELS names {unknown}, which have no spec in the specs folder; "
            f"known: {sorted(by_name)}"
        )
    selected = [by_name[name] for name in wanted] if wanted else list(by_name.values())
    served = {spec.name for spec in selected}
    stray = sorted(name for name in pinned_versions or {} if name not in served and name not in broken)
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
    specs, errors = scan_specs(specs_dir)
    if errors:
        file_name, error = next(iter(errors.items()))
        raise ValueError(f"model spec {Path(specs_dir) / file_name} is invalid: {error}")
    return specs


def scan_specs(specs_dir: Path) -> tuple[list[ModelSpec], dict[str, str]]:
    """:func:`conveyor.config.scan_specs` of the server's own specs folder, logging an empty one."""
    from conveyor.config import scan_specs as scan

    if not any(Path(specs_dir).glob("*.yaml")):
        log.warning("no model specs in %s: the server will serve nothing", specs_dir)
    return scan(Path(specs_dir))


def specs_fingerprint(specs_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, mtime and size of every spec file: a change means the folder is worth parsing again."""
    out = []
    for path in sorted(Path(specs_dir).glob("*.yaml")):
        try:
            stat = path.stat()
        except OSError:  # removed between the listing and the stat
            continue
        out.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


class ModelSlot:
    """One spec's models: what serves, what is staged, and how the last load went."""

    def __init__(
        self, spec: ModelSpec, pinned_version: str | None = None, *, discovered: bool = False
    ) -> None:
        self.spec = spec
        self.pinned_version = pinned_version
        self.discovered = discovered  # added at run time, not at startup
        self.spec_removed = False  # its spec file left the specs folder while it was served
        self.champion_checked_at = time.monotonic()
        self.serving: LoadedModel | None = None
        self.staged: LoadedModel | None = None
        self.last_stage: StageReport | None = None
        self.state = LOADING
        self.error: str | None = None
        self.swap_lock = threading.Lock()
        self.load_lock = threading.Lock()
        # reconciliation: the (champion, serving) difference seen by the last pass, and a champion
        # version that failed to load or its golden rows (not retried until champion moves again)
        self.mismatch_seen: tuple[str, str | None] | None = None
        self.refused_champion: str | None = None

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
            spec_removed=self.spec_removed,
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
        specs_dir: the folder ``specs`` came from, read again at run time for specs added (or
            removed) since; ``None``: the specs are fixed.
        spec_errors: file name -> error of each spec file that did not parse (see
            :func:`scan_specs`); reported, and never served.
        champion_recheck_s: least pause before a request for a model without a champion makes the
            server look for ``@champion`` in the registry again (in the background).
    """

    def __init__(
        self,
        settings: Settings,
        specs: Iterable[ModelSpec],
        metrics: ServerMetrics,
        *,
        load_attempts: int = 3,
        retry_delay_s: float = 2.0,
        specs_dir: Path | None = None,
        spec_errors: Mapping[str, str] | None = None,
        champion_recheck_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.specs_dir = specs_dir
        self.spec_errors: dict[str, str] = {}
        self._note_spec_errors(dict(spec_errors or {}))
        pins = settings.pinned_versions
        broken = {Path(name).stem for name in self.spec_errors}
        selected = select_specs(specs, settings.serve_models, pins, broken)
        self.slots: dict[str, ModelSlot] = {s.name: ModelSlot(s, pins.get(s.name)) for s in selected}
        self.load_attempts = max(1, load_attempts)
        self.retry_delay_s = retry_delay_s
        self.champion_recheck_s = champion_recheck_s
        self.initial_load_done = threading.Event()
        self._thread: threading.Thread | None = None
        # Held while the specs folder is read again and slots are added; ``self.slots`` is only ever
        # replaced by a new dict (one reference assignment), so readers iterate a stable one.
        self._specs_lock = threading.Lock()
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None  # None: not looked yet
        self._recheck_lock = threading.Lock()

    # -- lookup -------------------------------------------------------------------------------------

    def slot(self, name: str) -> ModelSlot:
        """The slot of ``name``; an unknown name first makes the server look at its specs folder again.

        Raises:
            UnknownModel: still no (valid) spec of that name; the message lists the served models.
        """
        found = self.slots.get(name)
        if found is None:
            self.refresh_specs()
            found = self.slots.get(name)
        if found is None:
            error = self.spec_errors.get(f"{name}.yaml")
            note = f"its spec file {name}.yaml does not parse: {error}" if error else None
            raise UnknownModel(name, sorted(self.slots), note)
        return found

    def refresh_specs(self) -> None:
        """Read the specs folder again if it changed since the last look (no parsing when it did not).

        Each spec that is new gets a slot (when this process serves every spec, or names it in
        ``serve_models``) and its ``@champion`` (or pinned version) loads in the background as at
        startup. A served model whose spec left the folder keeps serving and is marked
        ``spec_removed``; spec files that do not parse are logged and listed in ``spec_errors``.
        """
        if self.specs_dir is None:
            return
        with self._specs_lock:
            fingerprint = specs_fingerprint(self.specs_dir)
            if fingerprint == self._fingerprint:
                return
            specs, errors = scan_specs(self.specs_dir)
            self._fingerprint = fingerprint
            self._note_spec_errors(errors)
            valid = {spec.name for spec in specs}
            for slot in self.slots.values():
                removed = slot.spec.name not in valid
                if removed and not slot.spec_removed:
                    log.warning(
                        "the spec of %s is no longer in %s (removed, renamed or invalid); it keeps "
                        "serving what it loaded until the server restarts",
                        slot.spec.name,
                        self.specs_dir,
                    )
                slot.spec_removed = removed
            wanted = set(self.settings.serve_models)
            pins = self.settings.pinned_versions
            new = [s for s in specs if s.name not in self.slots and (not wanted or s.name in wanted)]
            if not new:
                return
            added = {s.name: ModelSlot(s, pins.get(s.name), discovered=True) for s in new}
            self.slots = {**self.slots, **added}
        for name in added:
            log.info("found the spec of %s in %s; loading its champion", name, self.specs_dir)
            threading.Thread(
                target=self._load_with_retries, args=(name,), name=f"model-loader-{name}", daemon=True
            ).start()

    def _note_spec_errors(self, errors: dict[str, str]) -> None:
        for file_name, error in errors.items():
            if self.spec_errors.get(file_name) != error:
                log.error("model spec %s is invalid and is not served: %s", file_name, error)
        self.spec_errors = errors

    def serving(self, name: str) -> tuple[ModelSlot, LoadedModel]:
        """The slot and the model that answers for ``name`` right now (one reference, read once)."""
        slot = self.slot(name)
        model = slot.serving
        if model is None:
            if slot.state == LOADING:
                reason = "it is still loading; retry shortly"
            elif slot.state == NO_CHAMPION:
                reason = f"{slot.spec.registered_model_name!r} has no @champion version yet"
                self._recheck_champion(slot)
            else:
                reason = f"loading failed: {slot.error}"
            raise ModelNotReady(name, reason)
        return slot, model

    def _recheck_champion(self, slot: ModelSlot) -> None:
        """Look for a ``@champion`` set since the last look, in the background, at most every
        ``champion_recheck_s`` seconds per model (the registry is not asked on every request)."""
        with self._recheck_lock:
            if time.monotonic() - slot.champion_checked_at < self.champion_recheck_s:
                return
            slot.champion_checked_at = time.monotonic()
        threading.Thread(
            target=self._load_with_retries, args=(slot.spec.name,), name="champion-check", daemon=True
        ).start()

    def statuses(self) -> list[ModelStatus]:
        self.refresh_specs()
        return [slot.status() for slot in self.slots.values()]

    def readiness(self) -> tuple[bool, dict[str, dict[str, object]]]:
        """Ready when the first load pass is over and every model with a champion answers its golden rows."""
        self.refresh_specs()
        detail: dict[str, dict[str, object]] = {}
        ready = self.initial_load_done.is_set()
        for name, slot in self.slots.items():
            status = slot.status()
            # A model found at run time never takes a serving process out of rotation.
            blocking = slot.state != NO_CHAMPION and not slot.ready and not slot.discovered
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
            if slot.discovered and not slot.ready:
                why += " (found at run time: does not block readiness)"
            if slot.spec_removed:
                why += f"; its spec left {self.specs_dir}: it serves what it loaded until a restart"
            detail[name] = {
                "state": slot.state,
                "ready": slot.ready,
                "version": status.version,
                "detail": why,
            }
        for name in self.settings.serve_models:
            if name not in self.slots:  # named by CONVEYOR_SERVE_MODELS but its spec file is invalid
                ready = False
                error = self.spec_errors.get(f"{name}.yaml")
                why = f"spec file {name}.yaml is invalid: {error}" if error else "no spec in the folder"
                detail[name] = {"state": ERROR, "ready": False, "version": None, "detail": why}
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
        """Load what the slot should serve unless something serves already (startup, a model found
        at run time, a champion check). A stage and promote running meanwhile wins: neither the
        loaded model nor a failure is written over a model promoted in between."""
        slot = self.slots[name]
        delay = self.retry_delay_s
        for attempt in range(1, self.load_attempts + 1):
            with slot.load_lock:
                if slot.serving is not None:  # an admin reload or promote got there first
                    return
                try:
                    model = self._load_configured(slot)
                except NoChampion as exc:
                    self._mark_failed(slot, NO_CHAMPION, str(exc))
                    return
                except PinnedVersionMissing as exc:
                    if self._mark_failed(slot, ERROR, str(exc)):
                        log.error("not serving %s: %s", name, exc)
                    return
                except Exception as exc:
                    if not self._mark_failed(slot, ERROR, f"{type(exc).__name__}: {exc}"):
                        return
                    log.warning(
                        "loading %s (attempt %d/%d) failed: %s", name, attempt, self.load_attempts, exc
                    )
                else:
                    self._install(slot, model, only_if_empty=True)
                    return
            if attempt < self.load_attempts:
                time.sleep(delay)
                delay *= 2

    def _mark_failed(self, slot: ModelSlot, state: str, error: str) -> bool:
        """Record a failed load unless a model serves meanwhile; return whether it was recorded."""
        with slot.swap_lock:
            if slot.serving is not None:
                return False
            slot.state, slot.error = state, error
        self.metrics.model_ready.labels(slot.spec.name).set(0)
        return True

    def _load_configured(self, slot: ModelSlot) -> LoadedModel:
        """Load the slot's pinned version if it has one, else what ``@champion`` names."""
        spec = slot.spec
        if slot.pinned_version is not None:
            version, alias = slot.pinned_version, None
            self._check_pinned_exists(spec, version)
        else:
            version, alias = loader.resolve_champion(self.settings, spec), CHAMPION
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
                    f"or drop the pin to follow @{CHAMPION}"
                ) from None
            raise

    def _install(self, slot: ModelSlot, model: LoadedModel, *, only_if_empty: bool = False) -> str | None:
        """Swap ``model`` in as what serves; return the version it replaced.

        With ``only_if_empty`` a model that started serving meanwhile (a promote) stays.
        """
        with slot.swap_lock:
            old = slot.serving
            if only_if_empty and old is not None:
                return old.version
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

    # -- reconciliation -----------------------------------------------------------------------------

    def start_reconciling(self, interval_s: float) -> threading.Thread | None:
        """Reconcile with the registry every ``interval_s`` seconds in a daemon thread (0: never)."""
        if interval_s <= 0:
            return None
        self._stop_reconciling = threading.Event()

        def loop() -> None:
            self.initial_load_done.wait()
            while not self._stop_reconciling.wait(interval_s):
                try:
                    self.reconcile()
                except Exception:  # a registry outage must not end the loop
                    log.exception("reconciling with the registry failed; trying again in %.0f s", interval_s)

        thread = threading.Thread(target=loop, name="reconciler", daemon=True)
        thread.start()
        return thread

    def stop_reconciling(self) -> None:
        stop = getattr(self, "_stop_reconciling", None)
        if stop is not None:
            stop.set()

    def reconcile(self) -> dict[str, str]:
        """One pass that makes the server what the registry and the specs folder say it should be.

        - Specs added to the folder get a slot (:meth:`refresh_specs`); a model whose spec left the
          folder is dropped (requests for it get the 404 that names the served models).
        - For every model not pinned: when ``@champion`` names another version than the one served,
          in two passes running (so a deploy between its swap and its champion move is not undone),
          it reloads champion (artifact hash and golden rows checked, :meth:`reload`). A champion
          that fails is not retried until champion moves again; the old version keeps serving.

        Returns:
            model → what the pass did, for the models it changed or tried to.
        """
        self.refresh_specs()
        done: dict[str, str] = {}
        removed = [name for name, slot in self.slots.items() if slot.spec_removed]
        if removed:
            with self._specs_lock:
                self.slots = {n: slot for n, slot in self.slots.items() if n not in removed}
            for name in removed:
                self.metrics.model_ready.labels(name).set(0)
                log.warning("dropped %s: its spec left %s", name, self.specs_dir)
                done[name] = "dropped (spec removed)"
        for name, slot in list(self.slots.items()):
            if slot.pinned_version is not None or slot.state == LOADING:
                continue
            try:
                champion = loader.resolve_champion(self.settings, slot.spec)
            except NoChampion:
                continue
            serving = slot.serving.version if slot.serving is not None else None
            if champion == serving or champion == slot.refused_champion:
                slot.mismatch_seen = None
                continue
            if slot.mismatch_seen != (champion, serving):
                slot.mismatch_seen = (champion, serving)  # act if the next pass sees it too
                continue
            slot.mismatch_seen = None
            try:
                result = self.reload(name)
            except ServingError as exc:
                slot.refused_champion = champion
                log.error("not serving champion v%s of %s: %s", champion, name, exc.message)
                done[name] = f"kept v{serving}: {exc.message}"
                self._record_outside_move(slot, serving, f"the model server refused it: {exc.message}")
                continue
            slot.refused_champion = None
            log.info("%s follows champion: v%s -> v%s", name, serving, result.version)
            done[name] = f"v{serving} -> v{result.version}"
            self._record_outside_move(slot, serving, f"the model server followed: serves v{result.version}")
        return done

    def _record_outside_move(self, slot: ModelSlot, served: str | None, outcome: str) -> None:
        """A champion move the server followed without a ledger entry was made by hand: record it so
        (best effort: the ledger is history, serving does not depend on it)."""
        from conveyor.registry.aliases import record_outside_move

        try:
            entry = record_outside_move(
                loader.mlflow_client(self.settings),
                slot.spec.registered_model_name,
                CHAMPION,
                from_version=served,
                actor="manual (outside Conveyor; noticed by the model server)",
                reason=f"{CHAMPION} moved outside Conveyor (MLflow UI or client); {outcome}",
                details={"served_before": served},
            )
        except Exception:
            log.exception("could not record the outside move of %s@%s", slot.spec.name, CHAMPION)
            return
        if entry is not None and not entry.noop:
            log.info("recorded a manual move of %s@%s to v%s", slot.spec.name, CHAMPION, entry.to_version)

    def reload(self, name: str) -> ReloadResult:
        """Load ``@champion`` (or the pinned version) again and swap it in when it answers its golden rows.

        Raises:
            ServingError: 409 when there is no champion or it cannot be loaded/checked; serving keeps
                the version it had.
        """
        slot = self.slot(name)
        source = f"pinned version {slot.pinned_version}" if slot.pinned_version else f"@{CHAMPION}"
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
