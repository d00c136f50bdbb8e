"""``conveyor.config.scan_specs``: one bad spec file never hides the others."""

from __future__ import annotations

from pathlib import Path

import yaml

from conveyor.config import DEFAULT_SPECS_DIR, scan_specs


def test_a_broken_or_duplicate_spec_is_reported_and_the_others_load(tmp_path: Path) -> None:
    good = yaml.safe_load((DEFAULT_SPECS_DIR / "breast_cancer.yaml").read_text())
    (tmp_path / "breast_cancer.yaml").write_text(yaml.safe_dump(good))
    (tmp_path / "copy.yaml").write_text(yaml.safe_dump(good))  # declares breast_cancer again
    (tmp_path / "broken.yaml").write_text("name: broken\ndata: [unclosed\n")
    (tmp_path / "invalid.yaml").write_text(yaml.safe_dump({**good, "name": "invalid", "gate": {"mode": "x"}}))
    specs, errors = scan_specs(tmp_path)
    assert [s.name for s in specs] == ["breast_cancer"]
    assert set(errors) == {"broken.yaml", "copy.yaml", "invalid.yaml"}
    assert "already declares" in errors["copy.yaml"] and "breast_cancer.yaml" in errors["copy.yaml"]
    assert errors["broken.yaml"].startswith(("ScannerError", "ParserError"))
    assert "gate.mode" in errors["invalid.yaml"]
