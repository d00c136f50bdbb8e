"""Process-wide settings read from the environment (``CONVEYOR_*``), with local defaults.

Nothing here is a secret: credentials come from Airflow connections or the stack's generated
state, never from this module's defaults.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


def _default_home() -> Path:
    return REPO_ROOT / ".conveyor"


class Settings(BaseSettings):
    """Where state lives and how components find each other.

    ``data_root`` is a URI (``file:///...`` by default, ``s3://...`` in production) read with fsspec,
    so tasks never pass local paths to each other.
    """

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    data_root: str = ""
    specs_dir: Path = REPO_ROOT / "include" / "specs"
    mlflow_tracking_uri: str = ""
    model_server_url: str = "http://127.0.0.1:8000"
    model_server_token: str = ""
    airflow_port: int = 8080
    mlflow_port: int = 5000
    model_server_port: int = 8000

    def model_post_init(self, __context: object) -> None:
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
