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


def test_the_shipped_specs_cover_every_task_type_and_validate() -> None:
    from conveyor.config import TASK_METRICS, list_spec_names, load_spec

    specs, errors = scan_specs(DEFAULT_SPECS_DIR)
    assert errors == {}
    assert (
        sorted(s.name for s in specs) == list_spec_names() == ["breast_cancer", "churn", "diabetes", "digits"]
    )
    assert {s.task for s in specs} == {"binary", "multiclass", "regression"}

    digits = load_spec("digits")
    assert digits.task == "multiclass" and digits.classes == tuple(range(10))
    assert digits.trainer.kind == "keras_mlp" and "tflite_dynamic_range" in digits.compression.methods
    assert digits.gate.primary_metric == "accuracy" and digits.gate.floors["accuracy"] >= 0.85
    assert len(digits.feature_names) == 64 and digits.monitor.min_live_accuracy is not None

    diabetes = load_spec("diabetes")
    assert diabetes.task == "regression" and diabetes.classes == ()
    assert diabetes.trainer.kind == "sklearn_pipeline" and set(diabetes.trainer.params) == {"alpha"}
    assert diabetes.gate.primary_metric == "rmse" and diabetes.gate.floors["rmse"] <= 70
    assert diabetes.monitor.max_live_rmse is not None and diabetes.monitor.min_live_accuracy is None
    assert (diabetes.data.target_min, diabetes.data.target_max) == (0, 400)
    assert set(diabetes.gate.floors) <= set(TASK_METRICS["regression"])

    breast_cancer = load_spec("breast_cancer")
    assert breast_cancer.trainer.kind == "python"
    assert breast_cancer.trainer.entrypoint == "conveyor_examples.sklearn_gbm:train"
    assert breast_cancer.tuning is not None and breast_cancer.tuning.n_trials == 6
    assert set(breast_cancer.tuning.space) <= set(breast_cancer.trainer.params)
    # the windows hold the rows: every landed row fits one window, above min_rows
    for spec, rows in ((digits, 1797), (diabetes, 442), (breast_cancer, 569)):
        assert spec.data.min_rows <= rows * 0.75, spec.name
