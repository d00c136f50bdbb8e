"""Move model aliases (``challenger``, ``champion``) with compare-and-set and a ledger entry.

Every alias move in Conveyor goes through :func:`set_alias` or :func:`delete_alias`. Each move is
checked against what the caller expected the alias to name, recorded as one run in the MLflow
experiment ``conveyor/ledger`` (params ``model, alias, from_version, to_version, actor, reason,
dag_run_id``; the details as ``ledger/entry.json``) and stamped on the model version as tag
``conveyor.alias.<alias>.set_at``. :func:`ledger` reads the history back, newest first; the
rollback DAG re-points ``champion`` to a version it finds there.

**Compare-and-set without server support.** MLflow has no conditional alias update, so a move is
read-check-write under an exclusive lock named ``<model>@<alias>`` (:mod:`conveyor.registry.locks`:
a file lock on the embedded stack, a PostgreSQL advisory lock in the distributed profile). Every
Conveyor writer takes it, so of many concurrent moves from the same expected version exactly one
goes through and the rest fail with :class:`AliasConflictError`.

What remains is a person moving the alias in the MLflow UI (which takes no lock) at the same
instant. The ledger run is therefore opened (status ``RUNNING``) *before* the write and marked
``FINISHED`` only after re-reading the alias shows this move's version; otherwise it is marked
``FAILED`` and :class:`AliasConflictError` is raised. :func:`ledger` lists finished moves only, so
the ledger never claims a move that did not stick.

After each move the registered model's description gets a "Latest alias moves" table (between
markers, so the rest of a description written by people is kept), so the MLflow UI shows the
history next to the versions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from conveyor.errors import PermanentError
from conveyor.registry.locks import alias_lock
from conveyor.registry.tracking import (
    DAG_RUN_ID_TAG,
    ensure_experiment,
    log_json_artifact,
    search_value,
    to_jsonable,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

LEDGER_EXPERIMENT = "conveyor/ledger"
LEDGER_ARTIFACT = "ledger/entry.json"
_TAG = "conveyor.ledger."
_NONE = "none"  # how an absent version / DAG run id is written in a ledger param
_MAX_PARAM = 6000  # MLflow's param value limit
_MAX_DETAILS_TAG = 7000  # details up to this size are also kept in a tag, so ledger() needs no download


class _AnyVersion:
    """Type of :data:`ANY`: "move the alias whatever it names now" (no compare)."""

    _instance: _AnyVersion | None = None

    def __new__(cls) -> _AnyVersion:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _AnyVersion()
"""Pass as ``expected_version`` to skip the compare (an operator override, e.g. a forced rollback)."""


class AliasConflictError(PermanentError):
    """The alias did not name what the caller expected; nothing was moved (or the move was overwritten).

    Attributes:
        registered_name: Registered model.
        alias: The alias.
        expected: What the caller expected the alias to name (``None``: unset).
        actual: What it named when checked.
        target: The version the caller wanted to point it at (``None``: delete).
        actor: Who tried.
    """

    def __init__(
        self,
        registered_name: str,
        alias: str,
        *,
        expected: str | None,
        actual: str | None,
        target: str | None,
        actor: str,
        during_move: bool = False,
    ) -> None:
        self.registered_name = registered_name
        self.alias = alias
        self.expected = expected
        self.actual = actual
        self.target = target
        self.actor = actor
        goal = f"point it at v{target}" if target is not None else "delete it"
        if during_move:
            what = (
                f"{registered_name}@{alias} was moved by someone else while {actor} tried to {goal}: "
                f"it now names {_show(actual)}. This move was overwritten and is recorded as FAILED in "
                f"the ledger."
            )
        else:
            what = (
                f"{actor} expected {registered_name}@{alias} to name {_show(expected)} before trying to "
                f"{goal}, but it names {_show(actual)}; nothing was changed."
            )
        super().__init__(
            f"{what} Someone else moved the alias: read the ledger (conveyor.registry.aliases.ledger) "
            f"to see who and why, then retry with expected_version={actual!r} if the move still makes "
            "sense."
        )


class VersionNotFoundError(PermanentError, LookupError):
    """The version an alias should point at does not exist."""


class LedgerEntry(BaseModel):
    """One alias move as recorded in the ledger.

    Attributes:
        ledger_run_id: The MLflow run in ``conveyor/ledger`` (``None`` for a no-op with no recorded
            move behind it, e.g. an alias set outside Conveyor).
        registered_name: Registered model.
        alias: The alias.
        action: ``set`` or ``delete``.
        from_version: What the alias named before (``None``: unset).
        to_version: What it names after (``None``: deleted).
        actor: Who moved it (``airflow:<dag_id>/<run_id>``, a user name, ...).
        reason: Why, in words.
        dag_run_id: The Airflow DAG run that moved it, if any.
        moved_at: When (UTC).
        details: Free-form JSON (gate report summary, deploy checks, ...).
        noop: ``True`` when the alias already named the target and nothing was written.
    """

    model_config = ConfigDict(frozen=True)

    ledger_run_id: str | None
    registered_name: str
    alias: str
    action: Literal["set", "delete"]
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    dag_run_id: str | None = None
    moved_at: datetime
    details: dict[str, Any] = {}
    noop: bool = False


def _show(version: str | None) -> str:
    return "nothing (unset)" if version is None else f"v{version}"


def _norm(version: object) -> str | None:
    return None if version is None else str(version)


def get_alias_version(client: MlflowClient, registered_name: str, alias: str) -> str | None:
    """The version ``registered_name@alias`` names, or ``None`` (alias unset or model not registered).

    Args:
        client: MLflow client.
        registered_name: Registered model name.
        alias: The alias.

    Returns:
        The version as a string, or ``None``.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(registered_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (model.aliases or {}).get(alias)
    return _norm(version)


def set_alias(
    client: MlflowClient,
    registered_name: str,
    alias: str,
    version: str | int,
    *,
    expected_version: str | int | _AnyVersion | None,
    actor: str,
    reason: str,
    dag_run_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> LedgerEntry:
    """Point ``registered_name@alias`` at ``version`` if it still names ``expected_version``.

    Order of checks: if the alias already names ``version`` the call is a no-op (a retried task that
    already moved it must not fail) and returns the ledger entry of that earlier move, marked
    ``noop=True``, without writing a second one. Otherwise the alias must name
    ``expected_version`` (``None``: unset; :data:`ANY`: no check), else :class:`AliasConflictError`.
    See the module docstring for how the missing server-side compare-and-set is mitigated.

    Args:
        client: MLflow client.
        registered_name: Registered model name.
        alias: The alias (``challenger``, ``champion``).
        version: The version to point it at.
        expected_version: What the caller last saw the alias name.
        actor: Who is moving it.
        reason: Why (a sentence; kept in full in the entry, truncated to 6,000 chars in the param).
        dag_run_id: The DAG run moving it, if any.
        details: JSON-able details kept with the entry (gate decision, deploy checks, ...).

    Returns:
        The ledger entry of the move.

    Raises:
        AliasConflictError: the alias names something else than ``expected_version``, or another
            writer moved it during this move.
        VersionNotFoundError: ``version`` is not a version of ``registered_name``.
    """
    from mlflow.exceptions import MlflowException

    target = str(version)
    try:
        client.get_model_version(registered_name, target)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise VersionNotFoundError(
                f"cannot point {registered_name}@{alias} at v{target}: no such version; "
                f"register it first or pick an existing version ({exc.message})"
            ) from exc
        raise
    with alias_lock(registered_name, alias):
        current = get_alias_version(client, registered_name, alias)
        if current == target:
            return _noop_entry(
                client, registered_name, alias, "set", current, actor, reason, dag_run_id, details
            )
        _compare(registered_name, alias, expected_version, current, target, actor)
        entry = _move(client, registered_name, alias, current, target, actor, reason, dag_run_id, details)
    publish_recent_moves(client, registered_name)
    return entry


def delete_alias(
    client: MlflowClient,
    registered_name: str,
    alias: str,
    *,
    expected_version: str | int | _AnyVersion | None,
    actor: str,
    reason: str,
    dag_run_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> LedgerEntry:
    """Remove ``registered_name@alias`` if it still names ``expected_version`` (same path as set_alias).

    An alias that is already unset is a no-op.

    Raises:
        AliasConflictError: the alias names something else than ``expected_version``.
    """
    with alias_lock(registered_name, alias):
        current = get_alias_version(client, registered_name, alias)
        if current is None:
            return _noop_entry(
                client, registered_name, alias, "delete", None, actor, reason, dag_run_id, details
            )
        _compare(registered_name, alias, expected_version, current, None, actor)
        entry = _move(client, registered_name, alias, current, None, actor, reason, dag_run_id, details)
    publish_recent_moves(client, registered_name)
    return entry


def record_outside_move(
    client: MlflowClient,
    registered_name: str,
    alias: str,
    *,
    from_version: str | None,
    actor: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> LedgerEntry | None:
    """Record in the ledger a move of ``alias`` made outside Conveyor (MLflow UI, a plain client).

    Nothing is moved. When the ledger's newest entry for ``alias`` already names where it points
    (Conveyor made the move, or it was recorded before) nothing is written and that entry is returned.

    Args:
        client: MLflow client.
        registered_name: Registered model.
        alias: The alias that moved.
        from_version: What it named before, as the caller last knew it.
        actor: Who or what noticed (the move's author is unknown to MLflow).
        reason: What happened, in words.
        details: JSON-able details (what the server did about it).

    Returns:
        The new (or existing) entry; ``None`` when the alias is unset.
    """
    with alias_lock(registered_name, alias):
        current = get_alias_version(client, registered_name, alias)
        if current is None:
            return None
        for newest in ledger(client, registered_name, alias=alias, limit=1):
            if newest.to_version == current:
                return newest.model_copy(update={"noop": True})
        entry = _move(
            client, registered_name, alias, from_version, current, actor, reason, None, details, write=False
        )
    publish_recent_moves(client, registered_name)
    return entry


def _compare(
    registered_name: str,
    alias: str,
    expected: str | int | _AnyVersion | None,
    current: str | None,
    target: str | None,
    actor: str,
) -> None:
    if isinstance(expected, _AnyVersion):
        return
    if _norm(expected) != current:
        raise AliasConflictError(
            registered_name, alias, expected=_norm(expected), actual=current, target=target, actor=actor
        )


def _move(
    client: MlflowClient,
    registered_name: str,
    alias: str,
    current: str | None,
    target: str | None,
    actor: str,
    reason: str,
    dag_run_id: str | None,
    details: dict[str, Any] | None,
    *,
    write: bool = True,
) -> LedgerEntry:
    """Record the move in the ledger, make it (unless ``write`` is off: made outside Conveyor), check it."""
    from mlflow.entities import Param, RunTag

    action: Literal["set", "delete"] = "set" if target is not None else "delete"
    moved_at = datetime.now(UTC)
    details_json = json.loads(json.dumps(to_jsonable(details or {}), default=str))
    entry = LedgerEntry(
        ledger_run_id=None,
        registered_name=registered_name,
        alias=alias,
        action=action,
        from_version=current,
        to_version=target,
        actor=actor,
        reason=reason,
        dag_run_id=dag_run_id,
        moved_at=moved_at,
        details=details_json,
    )
    experiment_id = ensure_experiment(client, LEDGER_EXPERIMENT)
    tags = {
        f"{_TAG}model": registered_name,
        f"{_TAG}alias": alias,
        f"{_TAG}action": action,
        f"{_TAG}from_version": current or _NONE,
        f"{_TAG}to_version": target or _NONE,
        f"{_TAG}moved_at": moved_at.isoformat(),
        f"{_TAG}seq": str(time.time_ns()),
    }
    if dag_run_id:
        tags[DAG_RUN_ID_TAG] = dag_run_id
    details_text = json.dumps(details_json, sort_keys=True)
    if len(details_text) <= _MAX_DETAILS_TAG:
        tags[f"{_TAG}details"] = details_text
    run = client.create_run(
        experiment_id,
        start_time=int(moved_at.timestamp() * 1000),
        run_name=f"{registered_name}@{alias}: {current or _NONE} -> {target or _NONE}",
        tags=tags,
    )
    run_id = str(run.info.run_id)
    params = {
        "model": registered_name,
        "alias": alias,
        "from_version": current or _NONE,
        "to_version": target or _NONE,
        "actor": actor[:_MAX_PARAM],
        "reason": reason[:_MAX_PARAM],
        "dag_run_id": dag_run_id or _NONE,
    }
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    entry = entry.model_copy(update={"ledger_run_id": run_id})
    log_json_artifact(client, run_id, entry, LEDGER_ARTIFACT)
    try:
        if write and target is not None:
            client.set_registered_model_alias(registered_name, alias, target)
        elif write:
            client.delete_registered_model_alias(registered_name, alias)
        after = get_alias_version(client, registered_name, alias)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    if after != target:
        client.set_terminated(run_id, "FAILED")
        raise AliasConflictError(
            registered_name,
            alias,
            expected=current,
            actual=after,
            target=target,
            actor=actor,
            during_move=True,
        )
    stamp_version = target if target is not None else current
    stamp = "set_at" if target is not None else "removed_at"
    if stamp_version is not None:
        client.set_model_version_tag(
            registered_name, stamp_version, f"conveyor.alias.{alias}.{stamp}", moved_at.isoformat()
        )
    client.log_batch(run_id, tags=[RunTag(f"{_TAG}outcome", "moved")])
    client.set_terminated(run_id, "FINISHED")
    log.info(
        "%s@%s: %s -> %s by %s (%s)", registered_name, alias, _show(current), _show(target), actor, reason
    )
    return entry


def _noop_entry(
    client: MlflowClient,
    registered_name: str,
    alias: str,
    action: Literal["set", "delete"],
    current: str | None,
    actor: str,
    reason: str,
    dag_run_id: str | None,
    details: dict[str, Any] | None,
) -> LedgerEntry:
    """The earlier move that already put the alias where the caller wants it, else a synthetic entry."""
    for earlier in ledger(client, registered_name, alias=alias, limit=1):
        if earlier.to_version == current:
            return earlier.model_copy(update={"noop": True})
    return LedgerEntry(
        ledger_run_id=None,
        registered_name=registered_name,
        alias=alias,
        action=action,
        from_version=current,
        to_version=current,
        actor=actor,
        reason=reason,
        dag_run_id=dag_run_id,
        moved_at=datetime.now(UTC),
        details=json.loads(json.dumps(to_jsonable(details or {}), default=str)),
        noop=True,
    )


#: Markers of the section of a registered model's description that Conveyor owns.
MOVES_BEGIN = "<!-- conveyor:alias-moves:begin -->"
MOVES_END = "<!-- conveyor:alias-moves:end -->"
_MOVES_SHOWN = 5


def moves_markdown(entries: list[LedgerEntry]) -> str:
    """The "Latest alias moves" section (markers included) for a registered model's description."""

    def cell(text: str) -> str:
        flat = " ".join(text.split()).replace("|", "\\|")
        return flat if len(flat) <= 120 else flat[:119] + "…"

    rows = [
        f"| {e.moved_at:%Y-%m-%d %H:%M} | {e.alias} | {_short(e.from_version)} → {_short(e.to_version)} "
        f"| {cell(e.actor)} | {cell(e.reason)} |"
        for e in entries
    ]
    return "\n".join(
        [
            MOVES_BEGIN,
            "#### Latest alias moves",
            "",
            "Written by Conveyor after each move; `conveyor history <model>` prints the whole ledger.",
            "",
            "| when (UTC) | alias | from → to | actor | reason |",
            "|---|---|---|---|---|",
            *rows,
            MOVES_END,
        ]
    )


def _short(version: str | None) -> str:
    return "-" if version is None else f"v{version}"


def publish_recent_moves(client: MlflowClient, registered_name: str) -> None:
    """Rewrite the "Latest alias moves" section of ``registered_name``'s description from the ledger.

    Text outside the markers (a description people wrote) is kept. A failure here is logged, not
    raised: the move it reports has already happened and is in the ledger.
    """
    from mlflow.exceptions import MlflowException

    try:
        with alias_lock(registered_name, "#description"):
            section = moves_markdown(ledger(client, registered_name, limit=_MOVES_SHOWN))
            description = client.get_registered_model(registered_name).description or ""
            if MOVES_BEGIN in description and MOVES_END in description:
                head, _, rest = description.partition(MOVES_BEGIN)
                _, _, tail = rest.partition(MOVES_END)
                updated = f"{head}{section}{tail}"
            else:
                updated = f"{description.rstrip()}\n\n{section}" if description.strip() else section
            if updated != description:
                client.update_registered_model(registered_name, description=updated)
    except (MlflowException, OSError) as exc:
        log.warning("could not write the latest alias moves on %s's page: %s", registered_name, exc)


def ledger(
    client: MlflowClient, registered_name: str, alias: str | None = None, limit: int = 50
) -> list[LedgerEntry]:
    """Finished alias moves of ``registered_name`` (optionally of one alias), newest first.

    Args:
        client: MLflow client.
        registered_name: Registered model name.
        alias: Only this alias; ``None`` for all.
        limit: At most this many entries.

    Returns:
        The entries, newest first.
    """
    from mlflow.entities import ViewType

    experiment = client.get_experiment_by_name(LEDGER_EXPERIMENT)
    if experiment is None or limit < 1:
        return []
    clauses = [
        f"tags.`{_TAG}model` = {search_value(registered_name, 'registered model name')}",
        "attributes.status = 'FINISHED'",
    ]
    if alias is not None:
        clauses.append(f"tags.`{_TAG}alias` = {search_value(alias, 'alias')}")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=" and ".join(clauses),
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=limit + 10,  # a little slack: ties on the millisecond are ordered by seq below
        order_by=["attributes.start_time DESC"],
    )
    newest_first = sorted(runs, key=lambda r: int(r.data.tags.get(f"{_TAG}seq", "0")), reverse=True)
    return [_entry_from_run(run) for run in newest_first[:limit]]


def _entry_from_run(run: Any) -> LedgerEntry:
    tags = run.data.tags
    params = run.data.params

    def opt(value: str | None) -> str | None:
        return None if value in (None, "", _NONE) else value

    # details too large for a tag live only in the entry artifact; point at it instead
    details: dict[str, Any] = {"artifact": f"runs:/{run.info.run_id}/{LEDGER_ARTIFACT}"}
    if f"{_TAG}details" in tags:
        with contextlib.suppress(json.JSONDecodeError):
            details = json.loads(tags[f"{_TAG}details"])
    moved_at = tags.get(f"{_TAG}moved_at")
    return LedgerEntry(
        ledger_run_id=run.info.run_id,
        registered_name=params.get("model", tags.get(f"{_TAG}model", "")),
        alias=params.get("alias", tags.get(f"{_TAG}alias", "")),
        action="delete" if tags.get(f"{_TAG}action") == "delete" else "set",
        from_version=opt(params.get("from_version")),
        to_version=opt(params.get("to_version")),
        actor=params.get("actor", ""),
        reason=params.get("reason", ""),
        dag_run_id=opt(params.get("dag_run_id")),
        moved_at=datetime.fromisoformat(moved_at)
        if moved_at
        else datetime.fromtimestamp(run.info.start_time / 1000, UTC),
        details=details,
    )
