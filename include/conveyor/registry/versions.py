"""Register model versions: one per DAG run, with lineage tags and an artifact SHA-256.

``register_version`` is idempotent per DAG run: it first looks for a version of the registered model
tagged ``conveyor.dag_run_id == <dag_run_id>`` and returns it; only when there is none does it create
one. The new version points at the model *already logged* in the run (an MLflow 3 ``LoggedModel``,
``models:/m-...``) exactly as ``mlflow.register_model`` does it (``source="models:/<model_id>"``): no
files are copied or uploaded again. The only extra work is hashing the model's files, read in
place when the artifact store is a local folder and downloaded once otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from conveyor.errors import PermanentError
from conveyor.registry.tracking import (
    DAG_RUN_ID_TAG,
    MODEL_TAG,
    TAG_PREFIX,
    is_direct_store_uri,
    search_value,
    store_side_tracking_uri,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from conveyor.config import ModelSpec

log = logging.getLogger(__name__)

ARTIFACT_SHA256_TAG = "conveyor.artifact_sha256"
MODEL_ID_TAG = "conveyor.model_id"
# The lineage every version should carry (docs/CONTRACTS.md), without the ``conveyor.`` prefix.
LINEAGE_KEYS = (
    "dag_run_id",
    "dag_id",
    "data_fingerprint",
    "validation",
    "gate",
    "compression",
    "parent_model_uri",
    "git_commit",
    "artifact_sha256",
    "params",
)
_MAX_TAG_VALUE = 100_000  # MLflow's model-version tag value limit
_MLFLOW_MODEL_VERSIONS_TAG = "mlflow.modelVersions"


class ModelUriError(PermanentError, ValueError):
    """A model URI does not name a model Conveyor can register."""


class VersionLineageError(PermanentError, ValueError):
    """The lineage given for a version contradicts the call (e.g. another DAG run id)."""


class ModelVersionRef(BaseModel):
    """A registered model version as Conveyor refers to it.

    Attributes:
        name: Registered model name.
        version: Version number, as a string (MLflow's alias API takes strings).
        model_uri: ``models:/<name>/<version>``, loadable by ``mlflow.pyfunc.load_model``.
        source: The version's source (``models:/<model_id>`` for a logged model).
        run_id: The MLflow run the version belongs to.
        artifact_sha256: The ``conveyor.artifact_sha256`` tag, if present.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    model_uri: str
    source: str
    run_id: str | None = None
    artifact_sha256: str | None = None


class RegisterResult(ModelVersionRef):
    """The outcome of :func:`register_version`.

    Attributes:
        created: ``True`` when this call created the version, ``False`` when the DAG run had one.
    """

    created: bool


def _ref(mv: Any) -> ModelVersionRef:
    tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
    return ModelVersionRef(
        name=mv.name,
        version=str(mv.version),
        model_uri=f"models:/{mv.name}/{mv.version}",
        source=str(mv.source),
        run_id=mv.run_id or None,
        artifact_sha256=tags.get(ARTIFACT_SHA256_TAG),
    )


def _versions_of_run(client: MlflowClient, registered_name: str, dag_run_id: str) -> list[Any]:
    found = client.search_model_versions(
        filter_string=(
            f"name = {search_value(registered_name, 'registered model name')} "
            f"and tags.`{DAG_RUN_ID_TAG}` = {search_value(dag_run_id, 'DAG run id')}"
        ),
        max_results=100,
    )
    return sorted(found, key=lambda mv: int(mv.version))


def find_version_by_run(client: MlflowClient, spec: ModelSpec, dag_run_id: str) -> ModelVersionRef | None:
    """The version of ``spec``'s registered model created by DAG run ``dag_run_id``, if any.

    Args:
        client: MLflow client.
        spec: The model spec.
        dag_run_id: Airflow's ``run_id``.

    Returns:
        The lowest-numbered version tagged ``conveyor.dag_run_id == dag_run_id``, or ``None``.
    """
    found = _versions_of_run(client, spec.registered_model_name, dag_run_id)
    return _ref(found[0]) if found else None


# What MLflow (the registered-model metadata it adds on download) and Python (bytecode caches) write
# into a model's folder when the model is read; never part of what was registered.
_READER_FILES = frozenset({"registered_model_meta"})


def _written_by_readers(rel: str) -> bool:
    parts = rel.split("/")
    return rel in _READER_FILES or "__pycache__" in parts[:-1]


def artifact_sha256(path: str | Path) -> str:
    """A stable SHA-256 of a model directory (or a single file).

    Files are taken in order of their ``/``-separated relative paths; for each the digest takes the
    path's length and bytes, the content's length and the content. Renaming, moving, adding or
    changing any file changes the hash; timestamps and permissions do not. Files that reading a
    model writes beside it are not the model and are left out: MLflow's ``registered_model_meta``
    (written into a local store by ``mlflow models serve -m models:/name/1`` or
    ``pyfunc.load_model``) and Python's ``__pycache__`` folders.

    Args:
        path: A local directory (or file).

    Returns:
        The hex digest.
    """
    root = Path(path)
    if root.is_file():
        files = [(root.name, root)]
    elif root.is_dir():
        files = sorted(
            (rel, p)
            for p in root.rglob("*")
            if p.is_file() and not _written_by_readers(rel := p.relative_to(root).as_posix())
        )
    else:
        raise FileNotFoundError(f"cannot hash {root}: no such file or directory")
    digest = hashlib.sha256()
    for rel, file in files:
        name = rel.encode("utf-8")
        digest.update(len(name).to_bytes(8, "big"))
        digest.update(name)
        digest.update(file.stat().st_size.to_bytes(8, "big"))
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


class ArtifactIntegrityError(PermanentError):
    """A model's files do not hash to the ``conveyor.artifact_sha256`` recorded when it was registered."""


def recorded_sha256(client: MlflowClient, registered_name: str, version: str) -> str | None:
    """The ``conveyor.artifact_sha256`` tag of ``registered_name`` v``version`` (``None``: not recorded,
    e.g. a version registered outside Conveyor)."""
    tags = client.get_model_version(registered_name, str(version)).tags or {}
    value = tags.get(ARTIFACT_SHA256_TAG)
    return str(value) if value else None


def verify_artifact(path: str | Path, expected: str | None, *, what: str) -> str | None:
    """Check the files at ``path`` against the recorded hash before anything loads them.

    Args:
        path: The local model folder that is about to be loaded (hash what you load).
        expected: The version's ``conveyor.artifact_sha256``; ``None`` skips the check (logged).
        what: The version, for messages (``conveyor-churn v7``).

    Returns:
        The files' hash (``None`` when skipped).

    Raises:
        ArtifactIntegrityError: the files hash to something else: tampered or corrupted.
    """
    if not expected:
        log.warning("%s has no %s tag; loading it unverified", what, ARTIFACT_SHA256_TAG)
        return None
    actual = artifact_sha256(path)
    if actual != expected:
        raise ArtifactIntegrityError(
            f"refusing to load {what}: its files hash to sha256 {actual[:16]}… but {ARTIFACT_SHA256_TAG} "
            f"recorded {expected[:16]}… at registration; the artifact was changed or corrupted in the "
            "store. Restore it or register a new version; nothing was loaded."
        )
    return actual


def _parse_logged_model_id(model_uri: str) -> str | None:
    """``m-...`` for ``models:/m-...``; ``None`` for other URIs."""
    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri[len("models:/") :].strip("/")
    if not rest or "/" in rest or "@" in rest:
        return None
    return rest


def resolve_logged_model(client: MlflowClient, model_uri: str) -> Any:
    """The MLflow 3 ``LoggedModel`` behind ``models:/<model_id>`` or ``runs:/<run_id>/<name>``.

    Raises:
        ModelUriError: the URI names no logged model (the message says which URIs work).
    """
    from mlflow.exceptions import MlflowException

    model_id = _parse_logged_model_id(model_uri)
    try:
        if model_id is not None:
            return client.get_logged_model(model_id)
        if model_uri.startswith("runs:/"):
            run_id, _, name = model_uri[len("runs:/") :].strip("/").partition("/")
            run = client.get_run(run_id)
            outputs = run.outputs.model_outputs if run.outputs else []
            for output in sorted(outputs, key=lambda o: o.step, reverse=True):
                candidate = client.get_logged_model(output.model_id)
                if candidate.name == name:
                    return candidate
    except MlflowException as exc:
        raise ModelUriError(
            f"cannot resolve model URI {model_uri!r} in {client.tracking_uri}: {exc.message}; "
            "pass the model_uri that log_model returned (models:/m-...)"
        ) from exc
    raise ModelUriError(
        f"{model_uri!r} does not name a logged model; register the model_uri that "
        "mlflow.<flavor>.log_model returned (models:/m-...) or runs:/<run_id>/<model name>"
    )


def resolve_artifact_location(client: MlflowClient, model_uri: str) -> str:
    """The artifact-store location of the files behind ``model_uri``, resolved through ``client``.

    MLflow's own ``models:/`` resolution (``ModelsArtifactRepository``) asks a *process-wide*
    client; this asks ``client``, so a task talking to an explicit tracking URI reads the right store.

    Args:
        client: MLflow client.
        model_uri: ``models:/m-...``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``,
            ``runs:/<run_id>/<path>`` or an artifact URI / local path (returned as is).

    Returns:
        A location such as ``file:///...``, ``s3://...`` or ``mlflow-artifacts:/...``.

    Raises:
        ModelUriError: the URI names no model in this store.
    """
    from mlflow.exceptions import MlflowException

    if _parse_logged_model_id(model_uri) is not None:
        return str(resolve_logged_model(client, model_uri).artifact_location)
    try:
        if model_uri.startswith("models:/"):
            ref = model_uri[len("models:/") :].strip("/")
            if "@" in ref:
                name, _, alias = ref.partition("@")
                version = str(client.get_model_version_by_alias(name, alias).version)
            else:
                name, _, version = ref.partition("/")
            if not version.isdigit():
                raise ModelUriError(
                    f"{model_uri!r} names no version; use models:/<name>/<version> or models:/<name>@<alias>"
                )
            return str(client.get_model_version_download_uri(name, version))
        if model_uri.startswith("runs:/"):
            try:
                return str(resolve_logged_model(client, model_uri).artifact_location)
            except ModelUriError:
                run_id, _, path = model_uri[len("runs:/") :].strip("/").partition("/")
                root = str(client.get_run(run_id).info.artifact_uri).rstrip("/")
                return f"{root}/{path}" if path else root
    except MlflowException as exc:
        raise ModelUriError(f"cannot resolve {model_uri!r} in {client.tracking_uri}: {exc.message}") from exc
    return model_uri


@contextmanager
def local_model_dir(client: MlflowClient, model_uri: str) -> Iterator[Path]:
    """A local directory holding the files behind ``model_uri``, for the duration of the block.

    A local artifact store is read in place (no copy); anything else is downloaded once into a
    temporary folder that is removed afterwards.
    """
    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import is_local_uri

    location = resolve_artifact_location(client, model_uri)
    if is_local_uri(location, is_tracking_or_registry_uri=False):
        local = Path(local_file_uri_to_path(location))
        if local.exists():
            yield local
            return
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="conveyor-model-") as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=location,
            dst_path=tmp,
            tracking_uri=client.tracking_uri,
            registry_uri=getattr(client, "_registry_uri", None),
        )
        yield Path(path)


def model_artifact_sha256(client: MlflowClient, model_uri: str) -> str:
    """:func:`artifact_sha256` of the files behind ``model_uri``, read through ``client``'s stores.

    Args:
        client: MLflow client.
        model_uri: Any URI :func:`resolve_artifact_location` takes.

    Returns:
        The hex digest (equal to the ``conveyor.artifact_sha256`` tag of the version registered
        from these files).
    """
    with local_model_dir(client, model_uri) as path:
        return artifact_sha256(path)


def _lineage_tags(lineage: Mapping[str, Any], dag_run_id: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for key, value in lineage.items():
        full = key if key.startswith(TAG_PREFIX) else f"{TAG_PREFIX}{key}"
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        if len(text) > _MAX_TAG_VALUE:
            log.warning("lineage tag %s is %d characters; truncated to MLflow's limit", full, len(text))
            text = text[: _MAX_TAG_VALUE - 15] + "...[truncated]"
        tags[full] = text
    given = tags.get(DAG_RUN_ID_TAG)
    if given is not None and given != dag_run_id:
        raise VersionLineageError(
            f"lineage says dag_run_id={given!r} but the version is registered for {dag_run_id!r}; "
            "pass the same DAG run id (or leave it out of lineage)"
        )
    tags[DAG_RUN_ID_TAG] = dag_run_id
    missing = [k for k in LINEAGE_KEYS if f"{TAG_PREFIX}{k}" not in tags and k != "artifact_sha256"]
    if missing:
        log.info("registering without lineage keys %s", missing)
    return tags


def _ensure_registered_model(client: MlflowClient, spec: ModelSpec) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            spec.registered_model_name, tags={MODEL_TAG: spec.name}, description=spec.description or None
        )
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _create_version(
    client: MlflowClient, spec: ModelSpec, source: str, run_id: str, tags: dict[str, str], model_id: str
) -> Any:
    """Create the version; the registered model is created only when MLflow says it is missing.

    Trying the version first saves a round trip on every run but a model's first.
    """
    from mlflow.exceptions import MlflowException

    def create() -> Any:
        with store_side_tracking_uri(client):
            return client.create_model_version(
                name=spec.registered_model_name, source=source, run_id=run_id, tags=tags, model_id=model_id
            )

    try:
        return create()
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    _ensure_registered_model(client, spec)
    return create()


def _link_logged_model(client: MlflowClient, logged_model: Any, name: str, version: str) -> None:
    """Record the version on the logged model, as ``mlflow.register_model`` does (UI lineage).

    A tracking server does this itself when it creates the version; a direct store does not.
    """
    if not is_direct_store_uri(client.tracking_uri):
        return
    try:
        current = json.loads(logged_model.tags.get(_MLFLOW_MODEL_VERSIONS_TAG) or "[]")
    except json.JSONDecodeError:
        current = []
    entry = {"name": name, "version": int(version)}
    if any(str(e.get("name")) == name and str(e.get("version")) == version for e in current):
        return
    client.set_logged_model_tags(
        logged_model.model_id, {_MLFLOW_MODEL_VERSIONS_TAG: json.dumps([*current, entry])}
    )


def register_version(
    client: MlflowClient,
    spec: ModelSpec,
    model_uri: str,
    run_id: str,
    dag_run_id: str,
    lineage: Mapping[str, Any],
) -> RegisterResult:
    """Register the logged model ``model_uri`` as a version of ``spec.registered_model_name``.

    Idempotent per DAG run: if a version already carries ``conveyor.dag_run_id == dag_run_id`` it is
    returned (``created=False``) and nothing is written. Otherwise the registered model is created if
    needed and a version is created with ``source="models:/<model_id>"`` (no copy of the files), the
    lineage tags (each key prefixed ``conveyor.``), ``conveyor.dag_run_id`` and
    ``conveyor.artifact_sha256`` over the model's files. Should two attempts race, both re-read after
    creating: the lowest version wins and the other attempt deletes its own version.

    Args:
        client: MLflow client.
        spec: The model spec.
        model_uri: The logged model, ``models:/m-...`` as returned by ``log_model``
            (``runs:/<run_id>/<name>`` also works).
        run_id: The MLflow run of the DAG run (recorded on the version).
        dag_run_id: Airflow's ``run_id``.
        lineage: Lineage values keyed as in ``docs/CONTRACTS.md`` (``data_fingerprint``,
            ``git_commit``, ...); non-string values are stored as JSON.

    Returns:
        The version, and whether this call created it.

    Raises:
        ModelUriError: ``model_uri`` names no logged model.
        VersionLineageError: ``lineage`` carries another DAG run id.
    """
    name = spec.registered_model_name
    existing = _versions_of_run(client, name, dag_run_id)
    if existing:
        ref = _ref(existing[0])
        log.info("DAG run %s already registered %s v%s; not creating another", dag_run_id, name, ref.version)
        return RegisterResult(**ref.model_dump(), created=False)

    tags = _lineage_tags(lineage, dag_run_id)
    logged_model = resolve_logged_model(client, model_uri)
    with local_model_dir(client, str(logged_model.artifact_location)) as model_dir:
        sha = artifact_sha256(model_dir)
    if tags.get(ARTIFACT_SHA256_TAG, sha) != sha:
        log.warning(
            "lineage artifact_sha256 %s differs from the files' %s; keeping the files'",
            tags[ARTIFACT_SHA256_TAG],
            sha,
        )
    tags.update({ARTIFACT_SHA256_TAG: sha, MODEL_ID_TAG: logged_model.model_id, MODEL_TAG: spec.name})

    source = f"models:/{logged_model.model_id}"
    mv = _create_version(client, spec, source, run_id, tags, logged_model.model_id)
    version = str(mv.version)

    winners = _versions_of_run(client, name, dag_run_id)
    if winners and str(winners[0].version) != version:
        log.warning(
            "DAG run %s: a concurrent attempt registered v%s first; deleting v%s",
            dag_run_id,
            winners[0].version,
            version,
        )
        client.delete_model_version(name, version)
        return RegisterResult(**_ref(winners[0]).model_dump(), created=False)

    _link_logged_model(client, logged_model, name, version)
    log.info("registered %s v%s from %s (sha256 %s)", name, version, source, sha[:12])
    return RegisterResult(**_ref(mv).model_dump(), created=True)
