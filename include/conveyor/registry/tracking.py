"""MLflow tracking layout: one experiment per model, one run per Airflow DAG run.

Every task of a DAG run logs into the same MLflow run, found by the tag ``conveyor.dag_run_id`` (see
``docs/CONTRACTS.md``). Finding before creating makes a retried task land in the run it already
used instead of opening a second one.

Every function takes an explicit :class:`~mlflow.MlflowClient`; nothing here reads or sets MLflow's
process-wide tracking URI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError, PermanentError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from conveyor.config import ModelSpec

log = logging.getLogger(__name__)

EXPERIMENT_PREFIX = "conveyor/"
TAG_PREFIX = "conveyor."
DAG_RUN_ID_TAG = "conveyor.dag_run_id"
DAG_ID_TAG = "conveyor.dag_id"
MODEL_TAG = "conveyor.model"
#: The data window's fingerprint: on the DAG run's MLflow run and on the version registered from it.
DATA_FINGERPRINT_TAG = "conveyor.data_fingerprint"
#: How a DAG run ended when it ended before the gate (``unchanged_data``), on its MLflow run.
OUTCOME_TAG = "conveyor.outcome"
#: The label shares of the rows a run trained on (JSON ``{"0": 0.37, "1": 0.63}``): on the DAG run's MLflow
#: run and on the version registered from it; the champion's is the ``label_mix`` check's reference.
LABEL_MIX_TAG = "conveyor.label_mix"
#: How many rows of the window the data contract set aside (severity ``quarantine``), on the MLflow run.
QUARANTINED_ROWS_TAG = "conveyor.quarantined_rows"
#: Where those rows were written (``quarantine/<model>/<run_key>/rows.parquet``), when there are any.
QUARANTINE_URI_TAG = "conveyor.quarantine_uri"


class TrackingError(ConveyorError):
    """An MLflow tracking call did not give the run or experiment Conveyor needs."""


class InvalidRunIdError(PermanentError, ValueError):
    """A DAG run id cannot be used as an MLflow search value."""


def client_for(tracking_uri: str | None = None) -> MlflowClient:
    """An MLflow client for ``tracking_uri`` (default: ``conveyor.settings``), registry on the same URI.

    Args:
        tracking_uri: MLflow tracking URI (``http://...``, ``sqlite:///...``, ``postgresql://...``).
            ``None`` uses ``get_settings().mlflow_tracking_uri``.

    Returns:
        A client whose tracking and registry calls both go to ``tracking_uri``.
    """
    from mlflow import MlflowClient

    if tracking_uri is None:
        from conveyor.settings import get_settings

        tracking_uri = get_settings().mlflow_tracking_uri
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_name(spec: ModelSpec) -> str:
    """The experiment of a model: ``conveyor/<spec.name>``."""
    return f"{EXPERIMENT_PREFIX}{spec.name}"


def ensure_experiment(client: MlflowClient, name: str, tags: Mapping[str, str] | None = None) -> str:
    """The id of experiment ``name``, created if missing (race-safe), restored if deleted.

    Two workers creating the same experiment at once both succeed: the loser of the insert gets
    ``RESOURCE_ALREADY_EXISTS`` and reads the winner's id.

    Args:
        client: MLflow client.
        name: Experiment name.
        tags: Tags set on the experiment when this call creates it.

    Returns:
        The experiment id.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, tags=dict(tags or {})))
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise TrackingError(
                    f"MLflow said experiment {name!r} already exists but cannot find it; "
                    f"check the tracking server at {client.tracking_uri}"
                ) from exc
    if experiment.lifecycle_stage == "deleted":
        # A deleted experiment still owns its name; Conveyor's history lives in it, so bring it back.
        log.warning("restoring deleted MLflow experiment %r (id %s)", name, experiment.experiment_id)
        client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)


def experiment_for(client: MlflowClient, spec: ModelSpec) -> str:
    """The id of the model's experiment ``conveyor/<spec.name>``, created if missing.

    Args:
        client: MLflow client.
        spec: The model spec.

    Returns:
        The experiment id.
    """
    return ensure_experiment(client, experiment_name(spec), tags={MODEL_TAG: spec.name})


def search_value(value: str, what: str = "value") -> str:
    """Quote ``value`` for an MLflow filter string.

    MLflow's filter grammar has no escape for quotes, so a value containing one is refused
    (Airflow's run ids never contain quotes).

    Raises:
        InvalidRunIdError: ``value`` contains a quote or a backslash.
    """
    if any(ch in value for ch in "'\"\\`"):
        raise InvalidRunIdError(
            f"{what} {value!r} contains a quote or backslash, which MLflow's search cannot match; "
            "use an Airflow run id made of letters, digits and _.~:+-"
        )
    return f"'{value}'"


def find_runs_by_dag_run(client: MlflowClient, experiment_id: str, dag_run_id: str) -> list[Any]:
    """Active runs of ``experiment_id`` tagged with ``dag_run_id``, oldest first."""
    from mlflow.entities import ViewType

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{DAG_RUN_ID_TAG}` = {search_value(dag_run_id, 'DAG run id')}",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=100,
    )
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def get_or_create_run(
    client: MlflowClient,
    spec: ModelSpec,
    dag_run_id: str,
    dag_id: str,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The MLflow run of this DAG run in the model's experiment: found by tag, else created.

    Idempotent: every task of the DAG run, and every retry, gets the same run id. The run is named
    after the DAG run id. If two workers create the run at the same moment, both re-read after
    creating; the oldest run wins and the other is deleted, so one DAG run maps to one MLflow run.

    Args:
        client: MLflow client.
        spec: The model spec.
        dag_run_id: Airflow's ``run_id`` of the DAG run.
        dag_id: Airflow's DAG id (a lineage tag).
        tags: Extra tags to set on the run (also on a found run; setting a tag twice is harmless).

    Returns:
        The MLflow run id.
    """
    experiment_id = experiment_for(client, spec)
    found = find_runs_by_dag_run(client, experiment_id, dag_run_id)
    extra = {str(k): str(v) for k, v in (tags or {}).items()}
    if found:
        run_id = str(found[0].info.run_id)
        if extra:
            set_run_tags(client, run_id, extra)
        return run_id

    run = client.create_run(
        experiment_id,
        run_name=dag_run_id,
        tags={DAG_RUN_ID_TAG: dag_run_id, DAG_ID_TAG: dag_id, MODEL_TAG: spec.name, **extra},
    )
    mine = str(run.info.run_id)
    found = find_runs_by_dag_run(client, experiment_id, dag_run_id)
    winner = str(found[0].info.run_id) if found else mine
    if winner != mine:
        log.warning(
            "DAG run %s: a concurrent task created MLflow run %s first; dropping %s", dag_run_id, winner, mine
        )
        client.delete_run(mine)
    return winner


def set_run_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    """Set several tags on a run in one call."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def to_jsonable(obj: Any) -> Any:
    """``obj`` with pydantic models dumped (JSON mode), ready for :func:`json.dumps`."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj


def log_json_artifact(client: MlflowClient, run_id: str, obj: Any, artifact_file: str) -> str:
    """Log ``obj`` as an indented, key-sorted JSON file in the run's artifacts.

    Args:
        client: MLflow client.
        run_id: The run.
        obj: Anything :func:`json.dumps` takes, or a pydantic model.
        artifact_file: Path inside the run's artifacts, e.g. ``gate/report.json``.

    Returns:
        ``artifact_file``.
    """
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, default=str)
    return log_text_artifact(client, run_id, text + "\n", artifact_file)


def log_text_artifact(client: MlflowClient, run_id: str, text: str, artifact_file: str) -> str:
    """Log ``text`` as a UTF-8 file in the run's artifacts (overwrites: re-runs stay idempotent).

    Args:
        client: MLflow client.
        run_id: The run.
        text: The content.
        artifact_file: Path inside the run's artifacts, e.g. ``gate/report.md``.

    Returns:
        ``artifact_file``.
    """
    client.log_text(run_id, text, artifact_file)
    return artifact_file


def is_direct_store_uri(uri: str) -> bool:
    """Whether ``uri`` names a database/file store the client opens itself (not a tracking server)."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    return scheme not in ("http", "https", "databricks", "databricks-uc", "uc")


@contextmanager
def store_side_tracking_uri(client: MlflowClient) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at ``client``'s store for the duration of a call.

    MLflow's SQL registry store resolves ``models:/<model_id>`` sources with a *global*
    ``MlflowClient()`` (see ``SqlAlchemyStore.create_model_version``). With a tracking server that
    runs server-side and nothing is needed; with a direct database URI it would look in the wrong
    store. Only then does this pin the global URI, and it restores it exactly afterwards (the
    environment is never touched).
    """
    import mlflow

    from conveyor.registry.session import MlflowSession

    uri = client.tracking_uri
    if not is_direct_store_uri(uri) or mlflow.get_tracking_uri() == uri:
        yield
        return
    with MlflowSession(uri).fluent():
        yield
