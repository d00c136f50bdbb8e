"""Names shared by every part of Conveyor: registry aliases, the tags the deploy side writes, and
the statuses those tags take. Import them from here; never spell them out elsewhere.

No imports: the DAG files, the registry watcher (in the triggerer) and the model server read this.
"""

from __future__ import annotations

from typing import Final

CHAMPION: Final = "champion"
"""The alias naming the version production serves (what the model server loads)."""

CHALLENGER: Final = "challenger"
"""The alias naming the version waiting to be deployed; moving it (DAG or person) asks for a deploy."""

REGISTRY_ALIASES_ASSET: Final = "mlflow_registry_aliases"
"""The Airflow asset the deploy DAG is scheduled on; the registry watcher and the webhook relay feed it."""
REGISTRY_ALIASES_ASSET_URI: Final = "mlflow://registry/aliases"

DEPLOY_STATUS_TAG: Final = "conveyor.deploy_status"
"""Model-version tag: what the deploy side last decided about the version (one of the statuses below)."""
DEPLOY_DETAIL_TAG: Final = "conveyor.deploy_detail"
"""Model-version tag: why (the failed checks of a rejected version, the reason of a rollback)."""
DEPLOYED_AT_TAG: Final = "conveyor.deployed_at"
"""Model-version tag: when the version last became champion through a deploy or rollback (UTC, ISO 8601)."""

DEPLOYED: Final = "deployed"
REJECTED: Final = "rejected"
SUPERSEDED: Final = "superseded"
ROLLED_BACK: Final = "rolled_back"
DEPLOY_STATUSES: Final = frozenset({DEPLOYED, REJECTED, SUPERSEDED, ROLLED_BACK})

HANDLED_TAG_PREFIX: Final = "conveyor.handled."
"""Registered-model tag ``conveyor.handled.<alias>``: the version of the last ``<alias>`` move the deploy
side has decided on (deployed, rejected). The registry watcher reports ``<alias>`` as pending while it
names another version (and not champion's), so every move counts, including back to a version that
was deployed before; see ``conveyor_airflow.triggers.mlflow_alias``."""

NOTHING_HANDLED: Final = "none"
"""Value of ``conveyor.handled.<alias>`` after the alias was removed by a rollback: any next move counts.
(A registry written before this tag existed has none; the watcher then falls back to the version's
``conveyor.deploy_status``.)"""


def handled_tag(alias: str) -> str:
    """The registered-model tag recording the last handled move of ``alias``."""
    return f"{HANDLED_TAG_PREFIX}{alias}"


def handled_at_tag(alias: str) -> str:
    """The registered-model tag recording when that move was decided (UTC, ISO 8601): an alias event
    detected before it is the same move, reported twice (by the webhook and by polling)."""
    return f"{HANDLED_TAG_PREFIX}{alias}_at"
