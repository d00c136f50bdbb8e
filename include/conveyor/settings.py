"""Process-wide settings read from the environment (``CONVEYOR_*``), with local defaults.

Nothing here is a secret: credentials come from Airflow connections or the stack's generated
state, never from this module's defaults.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
_MODEL_VERSION = re.compile(r"[1-9][0-9]*")


def _default_home() -> Path:
    return REPO_ROOT / ".conveyor"


class Settings(BaseSettings):
    """Where state lives and how components find each other.

    ``data_root`` is a URI (``file:///...`` by default, ``s3://...`` in production) read with fsspec,
    so tasks never pass local paths to each other.

    ``serve_models`` and ``pinned_versions`` narrow what a model-server process serves (a Kubernetes
    Deployment serves one model at one version): ``CONVEYOR_SERVE_MODELS=churn`` serves only that
    spec (default: every spec), ``CONVEYOR_PINNED_VERSIONS=churn=7`` loads version 7 instead of
    ``@champion``.
    """

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    data_root: str = ""
    specs_dir: Path = REPO_ROOT / "include" / "specs"
    mlflow_tracking_uri: str = ""
    model_server_url: str = "http://127.0.0.1:8000"
    model_server_token: str = ""
    #: How often the model server reconciles with the registry and the specs folder (seconds; 0: never).
    model_server_reconcile_s: float = 5.0
    airflow_port: int = 8080
    mlflow_port: int = 5000
    model_server_port: int = 8000
    #: The model server's Open Inference Protocol v2 gRPC port, beside the REST one (0: no gRPC).
    model_server_grpc_port: int = Field(default=8001, ge=0, le=65535)
    #: Where the gRPC port listens; the REST host is uvicorn's ``--host`` (images set 0.0.0.0 for both).
    model_server_grpc_host: str = "127.0.0.1"
    # Plain comma lists in the environment (not JSON), parsed by the validators below.
    serve_models: Annotated[tuple[str, ...], NoDecode] = ()
    pinned_versions: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    @field_validator("serve_models", mode="before")
    @classmethod
    def _split_model_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("pinned_versions", mode="before")
    @classmethod
    def _parse_pins(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(name): str(version) for name, version in value.items()}
        if not isinstance(value, str):
            return value
        pins: dict[str, str] = {}
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            name, sep, version = (p.strip() for p in item.partition("="))
            if not sep or not name or not version:
                raise ValueError(
                    f"CONVEYOR_PINNED_VERSIONS entry {item!r} is not <model>=<version>; "
                    "write e.g. 'churn=7,breast_cancer=3'"
                )
            if name in pins:
                raise ValueError(f"CONVEYOR_PINNED_VERSIONS pins {name!r} twice")
            pins[name] = version
        return pins

    @field_validator("pinned_versions", mode="after")
    @classmethod
    def _versions_are_numbers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, version in value.items():
            if not _MODEL_VERSION.fullmatch(version):
                raise ValueError(
                    f"CONVEYOR_PINNED_VERSIONS pins {name!r} to {version!r}: a registry version is a "
                    "positive integer (aliases are what the unpinned server follows)"
                )
        return value

    #: ``embedded`` (SQLite, LocalExecutor: one machine, nothing to install) or ``distributed``
    #: (PostgreSQL metadata DB and MLflow backend, CeleryExecutor with a Redis broker).
    profile: Literal["embedded", "distributed"] = "embedded"
    #: distributed: the PostgreSQL server (no database in the path); databases are created on ``up``.
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432"
    #: distributed: database names for Airflow's metadata and MLflow's tracking store.
    airflow_database: str = "conveyor_airflow"
    mlflow_database: str = "conveyor_mlflow"
    #: distributed: the Celery broker.
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    #: distributed: how many Celery workers, and task slots per worker.
    celery_workers: int = Field(default=2, ge=1, le=16)
    celery_worker_concurrency: int = Field(default=2, ge=1, le=32)
    #: Where alias moves take their compare-and-set lock (:mod:`conveyor.registry.locks`):
    #: ``file:///<folder>`` (embedded default: ``<home>/locks``) or ``postgresql://host/db``
    #: (distributed default: MLflow's tracking database, reached by every worker).
    registry_lock_url: str = ""
    #: The registry webhook relay (:mod:`conveyor.registry_relay`): its port on the embedded stack, and
    #: the secret MLflow signs its deliveries with (``CONVEYOR_REGISTRY_WEBHOOK_SECRET``; the embedded
    #: stack generates one).
    registry_relay_port: int = Field(default=8090, ge=1, le=65535)
    registry_webhook_secret: SecretStr = SecretStr("")
    #: The Airflow API the relay posts asset events to (empty: ``http://127.0.0.1:<airflow_port>``), as
    #: this user; an empty password means the embedded stack's generated admin password.
    airflow_url: str = ""
    airflow_username: str = "admin"
    airflow_password: SecretStr = SecretStr("")

    def model_post_init(self, __context: object) -> None:
        if not self.registry_lock_url:
            self.registry_lock_url = (
                f"{self.postgres_url.rstrip('/')}/{self.mlflow_database}"
                if self.profile == "distributed"
                else (self.home / "locks").as_uri()
            )
        if not self.data_root:
            self.data_root = (self.home / "data").as_uri()
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = os.environ.get(
                "MLFLOW_TRACKING_URI", f"http://127.0.0.1:{self.mlflow_port}"
            )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
