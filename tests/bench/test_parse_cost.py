"""What keeps the training DAG's parse cheap: spec listing without pydantic-settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import config
from conveyor.settings import Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("variable", [None, "CONVEYOR_SPECS_DIR", "conveyor_specs_dir"])
def test_specs_dir_is_the_settings_value(
    variable: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVEYOR_SPECS_DIR", raising=False)
    if variable is not None:
        monkeypatch.setenv(variable, str(tmp_path / "specs"))
    assert config.specs_dir() == Settings().specs_dir
    if variable is not None:
        assert config.specs_dir() == tmp_path / "specs"


def test_parsing_the_training_dag_imports_no_pydantic_settings() -> None:
    code = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('dagfile', sys.argv[1])\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "print(json.dumps({'dags': sorted(k for k in vars(mod) if k.startswith('conveyor_train_')),\n"
        "                  'pydantic_settings': 'pydantic_settings' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / "conveyor_training.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dags"] == [
        "conveyor_train_breast_cancer",
        "conveyor_train_churn",
        "conveyor_train_diabetes",
        "conveyor_train_digits",
    ]
    assert result["pydantic_settings"] is False
