"""MlflowAliasChangedTrigger.run() against a real MLflow tracking server.

The trigger's async generator is driven directly, as the triggerer does; "restart" means what the
triggerer does on a restart: a new instance built from ``serialize()`` kwargs, with no memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest

from conveyor_airflow.triggers.mlflow_alias import MlflowAliasChangedTrigger

from .conftest import ADMIN_PASSWORD, ADMIN_USER, MlflowServer

pytestmark = pytest.mark.integration

POLL = 0.2
QUIET = 1.5  # several polls


class Registry:
    """Registers models and versions, moves aliases, tags versions: what training and deploy do."""

    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.experiment_id = self.client.create_experiment(f"trigger-tests-{uuid.uuid4().hex[:8]}")

    def model(self, versions: int) -> str:
        name = f"m-{uuid.uuid4().hex[:8]}"
        self.client.create_registered_model(name)
        run = self.client.create_run(self.experiment_id)
        for _ in range(versions):
            self.client.create_model_version(
                name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
            )
        return name

    def alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def tag(self, name: str, version: int, value: str) -> None:
        self.client.set_model_version_tag(name, str(version), "conveyor.deploy_status", value)

    def handled(self, name: str, version: str) -> None:
        self.client.set_registered_model_tag(name, "conveyor.handled.challenger", version)

    def untag(self, name: str, version: int) -> None:
        self.client.delete_model_version_tag(name, str(version), "conveyor.deploy_status")


@pytest.fixture(scope="module")
def registry(mlflow_server: MlflowServer) -> Registry:
    return Registry(mlflow_server.uri)


class Running:
    """A trigger's run() pumped into a queue, like the triggerer's run_trigger loop."""

    def __init__(self, trigger: MlflowAliasChangedTrigger) -> None:
        self.trigger = trigger
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        async for event in self.trigger.run():
            await self.events.put(event.payload)

    async def next(self, timeout: float = 15.0) -> dict[str, Any]:
        assert self.task is not None
        getter = asyncio.ensure_future(self.events.get())
        done, _ = await asyncio.wait(
            {getter, self.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            return getter.result()
        getter.cancel()
        if self.task in done:
            raise AssertionError(f"trigger run() ended: {self.task.exception()!r}")
        raise AssertionError(f"no event within {timeout}s")

    async def quiet(self, seconds: float = QUIET) -> None:
        await asyncio.sleep(seconds)
        assert self.task is not None and not self.task.done(), "run() must keep running"
        extra = []
        while not self.events.empty():
            extra.append(self.events.get_nowait())
        assert extra == [], f"unexpected events: {extra}"


@contextlib.asynccontextmanager
async def running(trigger: MlflowAliasChangedTrigger) -> AsyncIterator[Running]:
    # Rebuild from serialize() as the triggerer does, so the kwargs are what actually runs.
    _, kwargs = trigger.serialize()
    run = Running(MlflowAliasChangedTrigger(**kwargs))
    run.task = asyncio.create_task(run._pump())
    try:
        yield run
    finally:
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.task


def watch(server: MlflowServer, *models: str, **kwargs: Any) -> MlflowAliasChangedTrigger:
    return MlflowAliasChangedTrigger(
        tracking_uri=server.uri, registered_models=list(models) or None, poll_interval=POLL, **kwargs
    )


def test_fires_once_per_move_and_not_again_while_the_change_is_pending(
    mlflow_server: MlflowServer, registry: Registry
) -> None:
    name = registry.model(versions=3)

    async def scenario() -> None:
        async with running(watch(mlflow_server, name)) as run:
            await run.quiet()  # no alias yet: nothing to deploy
            registry.alias(name, "challenger", 1)
            first = await run.next()
            assert first["registered_model"] == name
            assert first["alias"] == "challenger"
            assert first["version"] == "1"
            assert first["previous_version"] is None
            assert first["detected_at"].endswith("+00:00")
            await run.quiet()  # still pending (deploy running): no repeat

            registry.alias(name, "challenger", 2)
            moved = await run.next()
            assert (moved["version"], moved["previous_version"]) == ("2", "1")
            await run.quiet()

    asyncio.run(scenario())


def test_restart_keeps_pending_changes_and_forgets_settled_ones(
    mlflow_server: MlflowServer, registry: Registry
) -> None:
    name = registry.model(versions=4)
    registry.alias(name, "champion", 1)
    registry.alias(name, "challenger", 2)

    async def scenario() -> None:
        async with running(watch(mlflow_server, name)) as run:
            assert (await run.next())["version"] == "2"
        # Down: the alias moves while no trigger runs. The restarted trigger must not lose it.
        registry.alias(name, "challenger", 3)
        async with running(watch(mlflow_server, name)) as run:
            event = await run.next()
            assert event["version"] == "3"
            assert event["previous_version"] is None  # a restart has no memory of what it saw
            await run.quiet()
            # The deploy DAG promotes v3: champion moves, the change is settled.
            registry.alias(name, "champion", 3)
            await run.quiet()
        # Restart after the deploy: nothing is re-fired for the old move.
        async with running(watch(mlflow_server, name)) as run:
            await run.quiet()

    asyncio.run(scenario())


def test_in_a_registry_without_handled_tags_the_version_status_decides(
    mlflow_server: MlflowServer, registry: Registry
) -> None:
    name = registry.model(versions=3)
    registry.alias(name, "champion", 1)

    async def scenario() -> None:
        async with running(watch(mlflow_server, name)) as run:
            registry.alias(name, "challenger", 2)
            assert (await run.next())["version"] == "2"
            registry.tag(name, 2, "rejected")  # the deploy DAG refused v2
            await run.quiet()
            registry.untag(name, 2)  # a person clears the verdict to retry v2: pending again
            retried = await run.next()
            assert (retried["version"], retried["previous_version"]) == ("2", "2")  # it never moved
            registry.tag(name, 2, "deploying")  # not a settled status: no effect
            await run.quiet()
            registry.tag(name, 2, "superseded")
            registry.alias(name, "challenger", 1)  # challenger == champion: nothing to deploy
            await run.quiet()
        async with running(watch(mlflow_server, name)) as run:
            await run.quiet()
            registry.alias(name, "challenger", 2)  # moved back to a version decided before: a new request
            back = await run.next()
            assert (back["version"], back["previous_version"]) == ("2", "1")
            await run.quiet()
            registry.alias(name, "challenger", 3)
            moved = await run.next()
            assert (moved["version"], moved["previous_version"]) == ("3", "2")

    asyncio.run(scenario())


def test_every_move_counts_even_back_to_a_version_deployed_before(
    mlflow_server: MlflowServer, registry: Registry
) -> None:
    """The deploy side records the move it decided on (``conveyor.handled.challenger``); moving the
    alias again, to any version, is a new request, and a restart keeps what is undecided."""
    name = registry.model(versions=3)
    registry.alias(name, "champion", 1)
    registry.alias(name, "challenger", 2)
    registry.tag(name, 2, "deployed")  # deployed once (then rolled back by hand): no effect any more
    registry.handled(name, "1")

    async def scenario() -> None:
        async with running(watch(mlflow_server, name)) as run:
            assert (await run.next())["version"] == "2"  # v2 was never decided for this move
            registry.handled(name, "2")  # the deploy DAG rejected it
            await run.quiet()
            registry.alias(name, "challenger", 3)
            assert (await run.next())["version"] == "3"
            registry.handled(name, "3")
            await run.quiet()
            registry.alias(name, "challenger", 2)  # back to the version decided two moves ago
            back = await run.next()
            assert (back["version"], back["previous_version"]) == ("2", "3")
            await run.quiet()
        # Down before the deploy decided: the restarted trigger still reports it.
        async with running(watch(mlflow_server, name)) as run:
            assert (await run.next())["version"] == "2"
            registry.handled(name, "2")
            await run.quiet()
        async with running(watch(mlflow_server, name)) as run:
            await run.quiet()  # decided: nothing after a restart
            registry.handled(name, "none")  # a rollback removed challenger's decision
            assert (await run.next())["version"] == "2"

    asyncio.run(scenario())


def test_several_models_and_aliases_one_event_each(mlflow_server: MlflowServer, registry: Registry) -> None:
    a, b = registry.model(versions=2), registry.model(versions=2)

    async def scenario() -> None:
        trigger = watch(mlflow_server, a, b, aliases=["challenger", "canary"])
        async with running(trigger) as run:
            registry.alias(a, "challenger", 1)
            registry.alias(b, "canary", 2)
            registry.alias(b, "other", 1)  # not watched
            events = [await run.next(), await run.next()]
            got = sorted((e["registered_model"], e["alias"], e["version"]) for e in events)
            assert got == sorted([(a, "challenger", "1"), (b, "canary", "2")])
            await run.quiet()

    asyncio.run(scenario())


def test_watching_every_model_sees_a_model_registered_later(
    mlflow_server: MlflowServer, registry: Registry
) -> None:
    async def scenario() -> None:
        async with running(watch(mlflow_server)) as run:
            # Other tests' models may be pending too; drain what is already there.
            with contextlib.suppress(AssertionError):
                while True:
                    await run.next(timeout=QUIET)
            name = registry.model(versions=1)
            registry.alias(name, "challenger", 1)
            event = await run.next()
            assert (event["registered_model"], event["version"]) == (name, "1")

    asyncio.run(scenario())


def test_watching_the_settled_alias_reports_moves_after_the_first_poll(
    mlflow_server: MlflowServer, registry: Registry
) -> None:
    name = registry.model(versions=3)
    registry.alias(name, "champion", 1)

    async def scenario() -> None:
        async with running(watch(mlflow_server, name, aliases=["champion"])) as run:
            await run.quiet()  # the current champion is the baseline, not a change
            registry.alias(name, "champion", 2)  # e.g. a rollback DAG or a person
            event = await run.next()
            assert (event["alias"], event["version"], event["previous_version"]) == ("champion", "2", "1")
            await run.quiet()

    asyncio.run(scenario())


def test_unreachable_registry_is_retried_with_backoff_and_never_raises() -> None:
    trigger = MlflowAliasChangedTrigger(
        tracking_uri="http://127.0.0.1:1", poll_interval=0.05, max_backoff=0.2
    )

    async def scenario() -> None:
        async with running(trigger) as run:
            await run.quiet(1.0)

    asyncio.run(scenario())


def test_recovers_in_the_same_run_once_the_connection_is_fixed(
    mlflow_server: MlflowServer, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = registry.model(versions=1)
    registry.alias(name, "challenger", 1)
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_FLAKY", "http://127.0.0.1:1")

    async def scenario() -> None:
        trigger = MlflowAliasChangedTrigger(
            mlflow_conn_id="mlflow_flaky", registered_models=[name], poll_interval=POLL, max_backoff=0.3
        )
        async with running(trigger) as run:
            await run.quiet(1.0)  # connection refused, again and again: logged, never raised
            # An operator fixes the connection; the trigger re-reads it after a failed poll.
            monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_FLAKY", mlflow_server.uri)
            assert (await run.next())["version"] == "1"

    asyncio.run(scenario())


def test_connection_with_basic_auth(
    mlflow_auth_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from conveyor_airflow.hooks.mlflow import MlflowHook

    server = mlflow_auth_server
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_AUTH",
        f"http://{ADMIN_USER}:{quote(ADMIN_PASSWORD, safe='')}@{server.host}:{server.port}",
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_ROTATING", f"http://{ADMIN_USER}:wrong@{server.host}:{server.port}"
    )
    with pytest.raises(MlflowException):
        MlflowClient(tracking_uri=server.uri).search_registered_models()  # the server really needs auth

    admin = Registry.__new__(Registry)
    admin.client = MlflowHook(mlflow_conn_id="mlflow_auth").get_conn()
    admin.experiment_id = admin.client.create_experiment(f"auth-{uuid.uuid4().hex[:8]}")
    name = admin.model(versions=1)
    admin.alias(name, "challenger", 1)

    async def scenario() -> None:
        trigger = MlflowAliasChangedTrigger(
            mlflow_conn_id="mlflow_rotating", registered_models=[name], poll_interval=POLL, max_backoff=0.3
        )
        async with running(trigger) as run:
            await run.quiet(1.0)  # 401 Unauthorized: logged and retried, never raised
            monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_ROTATING", os.environ["AIRFLOW_CONN_MLFLOW_AUTH"])
            event = await run.next()
            assert (event["registered_model"], event["version"]) == (name, "1")

    asyncio.run(scenario())
