"""`conveyor spec draft` and `conveyor spec check` on tiny demo data written to ``tmp_path``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.config import DEFAULT_SPECS_DIR, ModelSpec, load_spec
from conveyor.data.contracts import validate_batch
from conveyor.data.generate import breast_cancer_batches, diabetes_batches, digits_batches, generate_churn
from conveyor.spec_tools import load_spec_file, read_sample

pytestmark = pytest.mark.unit

END_DAY = dt.date(2024, 5, 7)
STAGES = ("model", "data", "validate (data contract)", "train", "gate", "compress", "deploy", "monitor")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def draft(runner: CliRunner, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["spec", "draft", *args], terminal_width=200)
    return result.exit_code, result.output


def draft_to(runner: CliRunner, out: Path | str, name: str, data: Path, target: str) -> tuple[int, str]:
    return draft(runner, "--name", name, "--data", str(data), "--target", target, "--out", str(out))


@pytest.fixture
def churn_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "churn.parquet"
    generate_churn(load_spec("churn"), 400, END_DAY, seed=3).to_parquet(path, index=False)
    return path


@pytest.fixture
def breast_cancer_folder(tmp_path: Path) -> Path:
    """scikit-learn's breast-cancer rows as three ``date=`` partitions, as they land."""
    root = tmp_path / "landing" / "breast_cancer"
    for day, frame in breast_cancer_batches(load_spec("breast_cancer"), 3, END_DAY, seed=1):
        folder = root / f"date={day.isoformat()}"
        folder.mkdir(parents=True)
        frame.to_parquet(folder / "batch.parquet", index=False)
    (root / "_SUCCESS").write_text("")
    return root


def _out_of_range(spec: ModelSpec, frame: pd.DataFrame, column: str) -> pd.DataFrame:
    bad = frame.copy()
    feature = next(f for f in spec.numeric_features if f.name == column)
    assert feature.max is not None
    bad.loc[0, column] = feature.max + 1
    return bad


def test_draft_from_a_partitioned_folder_validates_and_its_contract_holds(
    runner: CliRunner, breast_cancer_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bc.yaml"
    code, output = draft_to(runner, out, "bc", breast_cancer_folder, "malignant")
    assert code == 0, output
    assert f"wrote {out}" in output and "conveyor spec check" in output
    spec = load_spec_file(out)
    shipped = load_spec("breast_cancer")
    assert (spec.data.id_column, spec.data.event_time_column) == ("sample_id", "event_date")
    assert spec.feature_names == shipped.feature_names
    assert all(f.min is not None and f.min >= 0 for f in spec.numeric_features)  # all non-negative
    assert "TODO" in out.read_text()

    sample = read_sample(str(breast_cancer_folder)).frame
    assert len(sample) == 569
    report = validate_batch(spec, sample)
    assert report.success, report.failed
    broken = validate_batch(spec, _out_of_range(spec, sample, "mean_radius"))
    assert not broken.success
    assert ("expect_column_values_to_be_between", "mean_radius") in {
        (c.expectation, c.column) for c in broken.failed
    }


def test_draft_from_a_parquet_file_keeps_categories_ranges_and_null_shares(
    runner: CliRunner, churn_parquet: Path, tmp_path: Path
) -> None:
    out = tmp_path / "specs" / "churn_draft.yaml"
    code, output = draft_to(runner, out, "churn_draft", churn_parquet, "churned")
    assert code == 0, output
    spec = load_spec_file(out)
    frame = pd.read_parquet(churn_parquet)
    assert spec.data.id_column == "customer_id"
    shipped = {c.name: set(c.categories) for c in load_spec("churn").categorical_features}
    assert {c.name: set(c.categories) for c in spec.categorical_features} == shipped
    numeric = {f.name: f for f in spec.numeric_features}
    assert numeric["total_charges"].max_null_fraction > frame["total_charges"].isna().mean() > 0
    assert numeric["age"].max_null_fraction == 0.0
    for name, feature in numeric.items():
        assert feature.min is not None and feature.max is not None
        assert feature.min <= frame[name].min() and feature.max >= frame[name].max()
        assert feature.min >= 0  # every churn feature is non-negative
    assert validate_batch(spec, frame).success

    unknown = frame.copy()
    unknown.loc[0, "contract"] = "three-year"
    report = validate_batch(spec, unknown)
    assert ("expect_column_values_to_be_in_set", "contract") in {
        (c.expectation, c.column) for c in report.failed
    }
    assert not validate_batch(spec, _out_of_range(spec, frame, "age")).success


def test_draft_from_a_csv_file(runner: CliRunner, churn_parquet: Path, tmp_path: Path) -> None:
    csv = tmp_path / "churn.csv"
    pd.read_parquet(churn_parquet).to_csv(csv, index=False)
    out = tmp_path / "from_csv.yaml"
    code, output = draft(
        runner, "--name", "from_csv", "--data", str(csv), "--target", "churned", "--out", str(out)
    )
    assert code == 0, output
    spec = load_spec_file(out)
    assert spec.data.event_time_column == "event_date"  # ISO date strings in a CSV
    assert len(spec.numeric_features) == 5 and len(spec.categorical_features) == 3
    assert validate_batch(spec, read_sample(str(csv)).frame).success


def test_draft_writes_to_the_specs_dir_and_refuses_to_overwrite(
    runner: CliRunner, churn_parquet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.settings import get_settings

    specs = tmp_path / "specs"
    monkeypatch.setenv("CONVEYOR_SPECS_DIR", str(specs))
    get_settings.cache_clear()
    args = ("--name", "mine", "--data", str(churn_parquet), "--target", "churned")
    assert draft(runner, *args)[0] == 0
    written = specs / "mine.yaml"
    assert load_spec("mine").name == "mine"
    written.write_text("# edited by hand\n" + written.read_text())

    code, output = draft(runner, *args, "--margin", "0.5")
    assert code == 1 and "--force" in output
    assert written.read_text().startswith("# edited by hand")

    code, output = draft(runner, *args, "--margin", "0.5", "--force")
    assert code == 0, output
    assert not written.read_text().startswith("# edited by hand")


def test_draft_to_stdout(runner: CliRunner, churn_parquet: Path) -> None:
    code, output = draft(
        runner, "--name", "x", "--data", str(churn_parquet), "--target", "churned", "--out", "-"
    )
    assert code == 0, output
    assert output.startswith("# Drafted by `conveyor spec draft`")
    assert "name: x\n" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "nope"], "--target 'nope' is not a column"),
        (["--target", "contract"], "not a binary 0/1 target. Draft a multiclass model (--task multiclass"),
        (["--target", "churned", "--task", "ranking"], "--task 'ranking' is not a task type"),
        (["--target", "monthly_charges", "--task", "multiclass"], "fractional numbers"),
        (["--target", "contract", "--task", "regression"], "not numbers: a regression target is a number"),
        (["--target", "churned", "--id", "nope"], "--id 'nope' is not a column"),
        (["--target", "churned", "--time", "age"], "--time 'age' holds float64 values, not dates"),
        (["--target", "churned", "--name", "Bad-Name"], "a spec name is lower case"),
        (["--target", "churned", "--data", "/no/such/file.parquet"], "no such file or folder"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    runner: CliRunner, churn_parquet: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = {"--name": "x", "--data": str(churn_parquet), "--out": str(tmp_path / "x.yaml")}
    given = dict(zip(args[::2], args[1::2], strict=True))
    code, output = draft(runner, *[v for k, val in {**base, **given}.items() for v in (k, val)])
    assert code == 2, output
    assert message in output
    assert "Traceback" not in output


def test_a_sample_without_an_id_column_asks_for_one(
    runner: CliRunner, churn_parquet: Path, tmp_path: Path
) -> None:
    path = tmp_path / "no_id.parquet"
    pd.read_parquet(churn_parquet).drop(columns=["customer_id"]).to_parquet(path)
    code, output = draft(runner, "--name", "x", "--data", str(path), "--target", "churned", "--out", "-")
    assert code == 2
    assert "data.id_column" in output and "--id" in output


@pytest.mark.parametrize("name", ["churn", "breast_cancer", "digits", "diabetes"])
def test_check_prints_every_stage_of_a_shipped_spec(runner: CliRunner, name: str) -> None:
    result = runner.invoke(app, ["spec", "check", name], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    lines = {line.strip() for line in result.output.splitlines()}
    for stage in STAGES:
        assert stage in lines, stage
    assert "non-inferiority margin" in result.output  # all ship a negative min_improvement
    assert "warning" not in result.output
    spec = load_spec(name)
    assert f"task {spec.task}:" in result.output
    assert f"serves the {spec.task} output contract" in result.output


def test_check_all(runner: CliRunner) -> None:
    result = runner.invoke(app, ["spec", "check", "--all"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in ("churn", "breast_cancer", "digits", "diabetes"):
        assert f"{name}.yaml: valid" in result.output


def test_check_a_broken_spec_names_the_field_and_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    text = (DEFAULT_SPECS_DIR / "churn.yaml").read_text()
    broken = tmp_path / "churn.yaml"
    broken.write_text(text.replace("min_rows: 500", "min_rows: 0").replace("kind: keras_mlp", "kind: xgb"))
    result = runner.invoke(app, ["spec", "check", str(broken)], terminal_width=200)
    assert result.exit_code == 1
    assert "INVALID" in result.output
    assert "data.min_rows →" in result.output and "trainer.kind →" in result.output
    assert "Traceback" not in result.output

    missing = runner.invoke(app, ["spec", "check", "no_such_spec"], terminal_width=200)
    assert missing.exit_code == 1 and "no spec file" in missing.output


def test_a_drafted_spec_checks_clean(runner: CliRunner, churn_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "drafted.yaml"
    assert draft_to(runner, out, "drafted", churn_parquet, "churned")[0] == 0
    result = runner.invoke(app, ["spec", "check", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


@pytest.mark.parametrize(
    ("name", "target", "task"), [("digits", "digit", "multiclass"), ("diabetes", "progression", "regression")]
)
def test_draft_each_task_from_landed_batches_then_check_it(
    runner: CliRunner, tmp_path: Path, name: str, target: str, task: str
) -> None:
    shipped = load_spec(name)
    batches = {"digits": digits_batches, "diabetes": diabetes_batches}[name](shipped, 3, END_DAY, seed=0)
    root = tmp_path / "landing"
    for day, frame in batches:
        folder = root / f"date={day.isoformat()}"
        folder.mkdir(parents=True)
        frame.to_parquet(folder / "batch.parquet", index=False)
    out = tmp_path / f"{name}_draft.yaml"
    code, output = draft(
        runner,
        "--name",
        f"{name}_draft",
        "--data",
        str(root),
        "--target",
        target,
        "--task",
        task,
        "--out",
        str(out),
    )
    assert code == 0, output
    spec = load_spec_file(out)
    assert spec.task == task and spec.feature_names == shipped.feature_names
    if task == "multiclass":
        assert spec.classes == shipped.classes
    else:
        assert spec.data.target_min == 0 and spec.data.target_max is not None and spec.data.target_max > 346
    sample = read_sample(str(root)).frame
    assert validate_batch(spec, sample).success

    result = runner.invoke(app, ["spec", "check", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"task {task}:" in result.output and "warning" not in result.output
